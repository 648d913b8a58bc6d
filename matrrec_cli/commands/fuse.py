"""`matrrec fuse`: a trained network and a count model combined after training (late fusion)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from matrrec_cli.commands.tables import (
    CappedOpt,
    DataDirOpt,
    JsonOpt,
    MarkdownOpt,
    OutputOpt,
    ResultsDirOpt,
    p_text,
    save_csv,
    show,
)


def register(app: typer.Typer) -> None:
    @app.command()
    def fuse(
        dataset: Annotated[str, typer.Option(help="Dataset with finished runs of --model.")],
        model: Annotated[str, typer.Option(help="The trained network (its Table 2 runs).")
                         ] = "matrrec",
        with_: Annotated[str, typer.Option(
            "--with", help="The count model: markov, sr, itemknn, sknn, vsknn, ease or pop.")
        ] = "sr",
        tag: Annotated[str | None, typer.Option(
            help="Fuse the runs of the recipe --set tag=NAME (its Table 2 column), e.g. refit.")
        ] = None,
        data_dir: DataDirOpt = None, results_dir: ResultsDirOpt = None,
        include_capped: CappedOpt = False,
        output: OutputOpt = None, markdown: MarkdownOpt = False, json_out: JsonOpt = False,
    ) -> None:
        """Late fusion: log p_net + beta * log q_count, every choice made on validation.

        Uses the runs Table 2 uses for --model (or its recipe --tag), each seed's weights
        (best.pt; refit.pt scores the test of a refit run), and the count model's
        grid; beta in 0 (the network alone), 0.25, 0.5, 1, 2, 4; per seed ("seed": mean ± std)
        and with the seeds' distributions averaged ("ensemble"). Prints every candidate's
        validation and test NDCG@10, the ones validation chose, and their test NDCG@10 against
        the count model alone and against Table 2's best simple model (ratio, Wilcoxon over
        users; the goal is 1.10x the best). Writes
        results/fuse_<dataset>_<model>[_<tag>]_<count>.csv. Nothing is trained.

        Example: matrrec fuse --dataset musical --with sr --tag refit
        """
        from matrrec_cli.experiments import fusion
        from matrrec_cli.experiments.table2 import Selection
        from matrrec_cli.paths import results_dir as results_path

        rdir = results_path(results_dir)
        f = fusion.fuse(rdir, dataset, model=model, count=with_, tag=tag, data_dir=data_dir,
                        selection=Selection(include_capped=include_capped))
        path = fusion.save(f, rdir)
        show_fusion(f, markdown=markdown, json_out=json_out)
        print(f"kept as {path}; matrrec report fuse renders it again without the data",
              file=sys.stderr)
        name = "_".join(x for x in (dataset, model, tag, with_) if x)
        save_csv(f.table, rdir / f"fuse_{name}.csv", output, key=["dataset"])


def show_fusion(f: Any, *, markdown: bool = False, json_out: bool = False,
                verdict_only: bool = False) -> None:
    """The candidates table and the verdict of a fusion (experiments.fusion.Fusion), as
    `matrrec fuse` prints it and `matrrec report fuse` prints it again from the record;
    `verdict_only` leaves out the candidates."""
    from rich.console import Console
    from rich.table import Table

    from matrrec_cli.commands.experiments import cell_text
    from matrrec_cli.experiments import fusion

    dataset, with_ = f.dataset, f.count
    console = Console(stderr=json_out)
    table = Table(title=f"{dataset}: {f.model}, {len(f.seeds)} seeds, fused with {with_}, "
                        "test and valid NDCG@10 (chosen on valid in bold)")
    for col in ("mode", "setting", "beta", "valid", "test"):
        table.add_column(col, justify="left" if col in ("mode", "setting") else "right")
    for _, r in f.table.iterrows():
        table.add_row(r["mode"], r["setting"], f"{r['beta']:g}",
                      *(cell_text(r[f"{s}_ndcg@10"], r[f"{s}_std"], bold=bool(r["chosen"]))
                        for s in ("valid", "test")))
    if not verdict_only:
        show(table, markdown=markdown, console=console)
    summary = fusion.summary(f)
    best = "no simple model runs" if f.best is None else \
        f"best simple model {f.best}, test NDCG@10 {f.best_test:.4f}"
    verdict = Table(title=f"Chosen on validation, test NDCG@10 vs {with_} alone ({with_}'s "
                          f"defaults: {f.count_test:.4f}) and vs the {best}; goal "
                          f"{fusion.GOAL:.2f}x the best, Wilcoxon p < {fusion.ALPHA}")

    for col in ("mode", "chosen", "test NDCG@10", f"x {with_}", f"p vs {with_}", "x best",
                "p vs best", "goal"):
        verdict.add_column(col, justify="left" if col in ("mode", "chosen") else "right")
    for _, r in summary.iterrows():
        verdict.add_row(r["mode"], r["chosen"], cell_text(r["test_ndcg@10"], r["test_std"]),
                        f"{r['ratio_count']:.3f}", p_text(r["wilcoxon_p_count"]),
                        "-" if r["ratio_best"] is None else f"{r['ratio_best']:.3f}",
                        p_text(r["wilcoxon_p_best"]),
                        "reached" if r["goal_reached"] else "not reached")
    show(verdict, markdown=markdown, console=console, json_rows=summary if json_out else None)
