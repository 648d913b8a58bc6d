"""`matrrec report ...`: the paper's tables rebuilt from the run records."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from matrrec_cli.commands.tables import (
    CappedOpt,
    JsonOpt,
    MarkdownOpt,
    OutputOpt,
    ResultsDirOpt,
    frame_table,
    p_text,
    plain_printer,
    print_json,
    print_missing,
    save_csv,
    show,
)

report_app = typer.Typer(help="Paper tables from the run records under results/runs.",
                         no_args_is_help=True)

TagOpt = Annotated[list[str] | None, typer.Option(
    "--tag", help="Show only these recipe columns (runs made with --set tag=NAME; repeatable); "
                  "their runs count even when capped by --epochs.")]
DatasetsOpt = Annotated[list[str] | None, typer.Option(
    "--dataset", help="Only these datasets (repeatable) \\[default: all with runs].")]


def _selection(tag: list[str] | None, include_capped: bool):  # -> report.Selection
    from matrrec_cli.experiments.table2 import Selection

    return Selection(tags=tuple(tag) if tag else None, include_capped=include_capped)


@report_app.command("table2")
def table2(
    dataset: DatasetsOpt = None, results_dir: ResultsDirOpt = None, tag: TagOpt = None,
    include_capped: CappedOpt = False, output: OutputOpt = None, markdown: MarkdownOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Table 2 (overall performance): Recall@5/10/20 and NDCG@10 per model and dataset.

    Best in bold, second underlined, MaTrRec's improvement vs SASRec and vs Mamba4Rec, mean ± std
    over seeds; also written to results/table2_overall.csv (the rows of other datasets kept).
    Cells use only runs that ended by their stopping rule (see matrrec report runs).

    Example: matrrec report table2 --dataset ml-100k
    """
    from rich.console import Console
    from rich.table import Table

    from matrrec_cli.experiments import table2 as report
    from matrrec_cli.paths import results_dir as results_path

    rdir = results_path(results_dir)
    selection = _selection(tag, include_capped)
    long = report.collect(rdir, dataset, selection)
    wide = report.table2(long, sig_marks=_marks(rdir, dataset, selection))

    models = report.model_order([c for c in wide.columns
                                 if "_" not in c and c not in ("dataset", "metric")])
    table = Table(title="Table 2: overall performance (test, mean ± std over seeds)")
    table.add_column("dataset")
    table.add_column("metric")
    for m in models:
        table.add_column(m, justify="right")
    for base in report.VS:
        table.add_column(f"vs {base}", justify="right")
    previous = None
    for _, row in wide.iterrows():
        cells = []
        for m in models:
            v = row.get(m)
            if v is None or v != v:  # missing model on this dataset
                cells.append("-")
                continue
            std = row.get(f"{m}_std")
            text = f"{v:.4f}" + (f" ± {std:.4f}" if std is not None and std == std else "")
            text += "†" if row.get(f"{m}_outside_2std") is True else ""
            text += {"above": "▲", "below": "▼"}.get(row.get(f"{m}_vs_{report.OURS}"), "")
            mark = row.get(f"{m}_mark")
            cells.append(f"[bold]{text}[/]" if mark == "best" else
                         f"[underline]{text}[/]" if mark == "second" else text)
        imp_cells = []
        for b in report.VS:
            x = row.get(f"improvement_vs_{b}_pct")
            star = "*" if row.get(f"improvement_vs_{b}_significant") is True else ""
            imp_cells.append("-" if x is None or x != x else f"{x:.2f}%{star}")
        table.add_row(row["dataset"] if row["dataset"] != previous else "", row["metric"],
                      *cells, *imp_cells)
        previous = row["dataset"]
        published = [row.get(f"{m}_paper") for m in models]
        if any(v is not None and v == v for v in published):
            gains = [row.get(f"improvement_vs_{b}_pct_paper") for b in report.VS]
            table.add_row("", "[dim]paper[/]", *(
                f"[dim]{v:.4f}[/]" if v is not None and v == v else "" for v in published),
                *(f"[dim]{g:.2f}%[/]" if g is not None and g == g else "" for g in gains))
    console = Console(stderr=json_out)
    say = plain_printer(console, markdown=markdown, json_out=json_out)
    show(table, markdown=markdown, console=console, json_rows=wide if json_out else None)
    paper_cols = [c for c in wide.columns if c.endswith("_paper")]
    if wide[paper_cols].notna().any().any():
        say("  paper: the published value; † ours lies more than 2 std (over our seeds) from it")
    settings = long.drop_duplicates(["dataset", "model"])
    for _, s in settings.iterrows():
        say(f"  {s['dataset']}/{s['model']}: preset {s['preset']}, objective {s['objective']}, "
            f"L {s['max_len']}, max epochs {s['epochs_cap']}, seeds {s['seeds']}"
            + (f"; set: {s['departures']}" if s["departures"] else ""))
    say("  * improvement significant at p < 0.01 (Benjamini-Hochberg corrected; Wilcoxon on "
        "NDCG@10, exact McNemar on Recall@K; matrrec report significance); ▲ / ▼ a model "
        "significantly above / below matrrec by the same tests")
    save_csv(wide, rdir / "table2_overall.csv", output, key=["dataset"])


def _marks(rdir: Path, datasets: list[str] | None, selection) -> dict | None:
    """Significance marks when per-user ranks of matrrec and a baseline exist, else None."""
    from matrrec_cli.errors import MatrrecError
    from matrrec_cli.experiments import significance as sig

    try:
        return sig.marks(sig.significance(rdir, datasets, selection))
    except MatrrecError:
        return None


@report_app.command("significance")
def significance(
    dataset: DatasetsOpt = None, results_dir: ResultsDirOpt = None, tag: TagOpt = None,
    include_capped: CappedOpt = False, output: OutputOpt = None, markdown: MarkdownOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Paired tests of MaTrRec vs each baseline on the same test users (per-user ranks).

    Paired t-test and Wilcoxon on NDCG@10, exact McNemar on Recall@5/10/20; Benjamini-Hochberg
    corrected over all tests shown. Writes results/significance.csv.

    Example: matrrec report significance --dataset ml-100k
    """
    from rich.table import Table

    from matrrec_cli.experiments import significance as sig
    from matrrec_cli.paths import results_dir as results_path

    rdir = results_path(results_dir)
    df = sig.significance(rdir, dataset, _selection(tag, include_capped))
    table = Table(title="MaTrRec vs baselines: paired tests over test users "
                        f"(Benjamini-Hochberg corrected; significant: p_bh < {sig.ALPHA})")
    for col in ("dataset", "baseline", "metric", "test", "users", "matrrec", "baseline ",
                "p", "p_bh", "significant"):
        table.add_column(col, justify="left" if col in ("dataset", "baseline", "metric", "test")
                         else "right")
    for _, r in df.iterrows():
        table.add_row(r["dataset"], r["baseline"], r["metric"], r["test"], str(r["n_users"]),
                      f"{r['ours']:.4f}", f"{r['base']:.4f}", f"{r['p']:.2e}",
                      f"{r['p_bh']:.2e}",
                      f"[bold]{r['better']} better[/]" if r["significant"] else "no")
    show(table, markdown=markdown, json_rows=df if json_out else None)
    save_csv(df, rdir / "significance.csv", output, key=["dataset"])


@report_app.command("breakdown")
def breakdown(
    dataset: Annotated[str, typer.Option(help="Dataset with finished runs.")],
    results_dir: ResultsDirOpt = None, tag: TagOpt = None, include_capped: CappedOpt = False,
    output: OutputOpt = None, markdown: MarkdownOpt = False, json_out: JsonOpt = False,
    data_dir: Annotated[str | None, typer.Option(
        help="Data directory \\[default: the runs'].")] = None,
) -> None:
    """Cold-start breakdown: test NDCG@10, Recall@5/10 by history length and target popularity.

    For every model with finished runs on the dataset (the runs Table 2 uses): mean ± std over
    seeds per bucket; history length in up to 4 equal-count buckets of at least 50 users,
    target popularity in quintiles. Then MaTrRec against each model per history-length
    bucket (NDCG@10 gain, Wilcoxon over users, Benjamini-Hochberg across buckets) and claim
    2's verdict (as matrrec report claims computes it). Writes results/breakdown_<dataset>.csv
    and .png, and the tests to results/breakdown_tests_<dataset>.csv (or --output, the PNG and
    <name>_tests.csv beside it). --json prints the rows of the per-bucket table.

    Example: matrrec report breakdown --dataset musical
    """
    from rich.console import Console
    from rich.table import Table

    from matrrec_cli.experiments import breakdown as bd
    from matrrec_cli.experiments import claims as cl
    from matrrec_cli.experiments.table2 import chosen_runs
    from matrrec_cli.paths import results_dir as results_path

    rdir = results_path(results_dir)
    per_user = bd.load(rdir, dataset, data_dir, _selection(tag, include_capped))
    df = bd.breakdown_table(per_user)
    tests = bd.bucket_tests(per_user)
    csv = save_csv(df, rdir / f"breakdown_{dataset}.csv", output, key=["dataset"])
    png = csv.with_suffix(".png")
    bd.plot(df, png)
    if not tests.empty:
        save_csv(tests, rdir / f"breakdown_tests_{dataset}.csv",
                 None if output is None else output.with_name(f"{output.stem}_tests.csv"),
                 key=["dataset"])
    console = Console(stderr=json_out)
    say = plain_printer(console, markdown=markdown, json_out=json_out)

    seeds = ", ".join(f"{m} {len(runs)}" for m, runs in
                      ((m, per_user.chosen[(dataset, m)]) for m in per_user.ranks))
    for by in bd.BYS:
        sub = df[df["by"] == by]
        models = list(dict.fromkeys(sub["model"]))
        table = Table(title=f"{dataset}: test NDCG@10 ± std / Recall@5 / Recall@10 by "
                            f"{by.replace('_', ' ')} (mean over seeds, std of NDCG@10 over "
                            f"seeds; seeds: {seeds})")
        table.add_column("bucket")
        table.add_column("users", justify="right")
        for m in models:
            table.add_column(m, justify="right")
        for bucket in dict.fromkeys(sub["bucket"]):
            cells = sub[sub["bucket"] == bucket].set_index("model")
            best = cells["ndcg@10"].max()

            def cell(m: str, cells=cells, best=best) -> str:
                c = cells.loc[m]
                std = "" if c["ndcg@10_std"] != c["ndcg@10_std"] else f" ± {c['ndcg@10_std']:.4f}"
                return (("[bold]" if c["ndcg@10"] == best else "[not bold]")
                        + f"{c['ndcg@10']:.4f}{std} / {c['recall@5']:.4f} / "
                        f"{c['recall@10']:.4f}[/]")
            table.add_row(bucket, str(int(cells["n_users"].iloc[0])), *map(cell, models))
        show(table, markdown=markdown, console=console)
    if tests.empty:
        say(f"No paired tests: no {bd.OURS} runs with per-user ranks on {dataset} (matrrec "
            f"train --dataset {dataset} --model {bd.OURS} --seeds {cl.SEEDS}).")
    else:
        table = Table(title=f"{dataset}: {bd.OURS} vs each model per history-length bucket "
                            "(NDCG@10, mean over seeds; Wilcoxon on per-user NDCG@10 averaged "
                            "over seeds, Benjamini-Hochberg across the buckets of each model; "
                            f"significant: p_bh < {bd.ALPHA})")
        for col in ("vs", "bucket", "users", bd.OURS, "baseline", "gain", "p", "p_bh",
                    "significant"):
            table.add_column(col, justify="left" if col in ("vs", "bucket") else "right")
        previous = None
        for _, r in tests.iterrows():
            gain = r["gain_pct"]
            table.add_row(r["model"] if r["model"] != previous else "", r["bucket"],
                          str(int(r["n_users"])), f"{r['ours']:.4f}", f"{r['base']:.4f}",
                          "-" if gain != gain else f"{gain:+.1f}%", f"{r['p']:.2g}",
                          f"{r['p_bh']:.2g}", "[bold]yes[/]" if r["significant"] else "no")
            previous = r["model"]
        show(table, markdown=markdown, console=console)
    # claim 2's verdict as `report claims` gives it: the untagged MaTrRec column of Table 2
    chosen = per_user.chosen if not tag else chosen_runs(
        rdir, [dataset], selection=_selection(None, include_capped))
    verdict = cl.claim2(dataset, chosen, data_dir, rdir)[0]
    say(f"Claim 2 (MaTrRec's gain over Mamba4Rec and SASRec is largest for the shortest "
        f"histories): {verdict.verdict}")
    say(f"  {verdict.evidence}")
    for command in verdict.commands:
        say(f"  to make the missing runs: {command}")
    if json_out:
        print_json(df)
    print(f"written {png}", file=sys.stderr)


@report_app.command("claims")
def claims(
    dataset: DatasetsOpt = None, results_dir: ResultsDirOpt = None,
    include_capped: CappedOpt = False, output: OutputOpt = None, markdown: MarkdownOpt = False,
    json_out: JsonOpt = False,
    data_dir: Annotated[str | None, typer.Option(
        help="Where the datasets are prepared (claim 2 needs the histories) \\[default: the "
             "runs'].")] = None,
) -> None:
    """The paper's five claims, each with a verdict computed from the recorded runs.

    Verdict: holds / does not hold / not distinguishable at N seeds / no runs (then the
    commands that make the runs are printed). Rules (details: experiments/claims.py):

    1 beats the 8 baselines: Wilcoxon on per-user NDCG@10, BH, p < 0.01; all better: holds.

    2 cold start: gain over Mamba4Rec and SASRec per history-length bucket (>= 50 users);
    shortest bucket's gain largest, > 0 and Wilcoxon p_bh < 0.05: holds; not largest: fails.

    3 Add PE vs the default over seeds: worse with Welch p < 0.05 holds, better fails.

    4 dropout 0.4 (ml-1m 0.1), max_len 50: another value better (Welch p < 0.05) fails;
    best and ahead of each neighbour with p < 0.05 holds.

    5 profile CSVs: MaTrRec/Mamba4Rec <= 1.5 and MaTrRec/NextItNet <= 0.5 (train s/epoch,
    inference s; one device and L): holds.

    Writes results/claims.csv (rows of other datasets kept).

    Example: matrrec report claims --dataset musical
    """
    from rich.console import Console
    from rich.table import Table

    from matrrec_cli.experiments import claims as cl
    from matrrec_cli.paths import results_dir as results_path

    rdir = results_path(results_dir)
    df = cl.claims(rdir, dataset, data_dir=data_dir,
                   selection=_selection(None, include_capped))
    table = Table(title="The paper's claims: verdicts computed from the recorded runs")
    for col in ("#", "claim", "dataset", "subject", "verdict", "evidence"):
        table.add_column(col, overflow="fold")
    previous = None
    for _, r in df.iterrows():
        head = r["subject"] == ""
        table.add_row(str(r["claim"]) if r["claim"] != previous else "",
                      f"“{r['quote']}”" if r["claim"] != previous else "",
                      r["dataset"], r["subject"] if not head else "",
                      f"[bold]{r['verdict']}[/]" if head else r["verdict"],
                      r["evidence"] + ("" if r["p_bh"] != r["p_bh"] or r["p_bh"] is None
                                       else f" (p {r['p']:.2g}, p_bh {r['p_bh']:.2g})"))
        previous = r["claim"]
    console = Console(stderr=json_out)
    show(table, markdown=markdown, console=console, json_rows=df if json_out else None)
    print_missing(cl.commands(df), console, markdown=markdown, json_out=json_out)
    save_csv(df, rdir / "claims.csv", output, key=["dataset"])


@report_app.command("shuffle")
def shuffle(
    dataset: DatasetsOpt = None, results_dir: ResultsDirOpt = None,
    model: Annotated[list[str] | None, typer.Option(
        help="Only these models (repeatable) \\[default: matrrec, sasrec, gru4rec, markov].")
    ] = None,
    include_capped: CappedOpt = False, output: OutputOpt = None, markdown: MarkdownOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """The shuffle test: test NDCG@10 on ordered vs shuffled histories, per dataset and model.

    Compares runs made with --set shuffle_history=true (each user's history in a random order
    drawn from the seed, targets unchanged) with the same configuration on ordered data: mean
    ± std over seeds, the change, Welch's t-test over seeds and a paired Wilcoxon test over
    users. A change near zero: the model's score does not come from the order of histories.
    Missing runs are printed as commands. Writes results/shuffle.csv.

    Example: matrrec report shuffle --dataset musical
    """
    from rich.console import Console
    from rich.table import Table

    from matrrec_cli.commands.experiments import cell_text
    from matrrec_cli.experiments import shuffle as sh
    from matrrec_cli.paths import results_dir as results_path

    rdir = results_path(results_dir)
    df, todo = sh.shuffle_table(rdir, dataset, model,
                                selection=_selection(None, include_capped))
    table = Table(title="The shuffle test: test NDCG@10, ordered vs shuffled histories "
                        "(mean ± std over seeds)")
    for col in ("dataset", "model", "ordered", "shuffled", "change", "Welch p", "Wilcoxon p",
                "departs from the protocol"):
        table.add_column(col, justify="left" if col in ("dataset", "model") else "right")
    for _, r in df.iterrows():
        table.add_row(
            r["dataset"], r["model"],
            *(f"{cell_text(r[k], r[f'{k}_std'])} ({r[f'{k}_seeds']})"
              for k in ("ordered", "shuffled")),
            "-" if r["change_pct"] is None else f"{r['change_pct']:+.1f}%",
            p_text(r["welch_p"]), p_text(r["wilcoxon_p"]), r["departures"] or "-")
    console = Console(stderr=json_out)
    show(table, markdown=markdown, console=console, json_rows=df if json_out else None)
    print_missing(todo, console, markdown=markdown, json_out=json_out)
    if not df.empty:
        save_csv(df, rdir / "shuffle.csv", output, key=["dataset"])


@report_app.command("grid")
def grid(
    dataset: DatasetsOpt = None, results_dir: ResultsDirOpt = None,
    model: Annotated[list[str] | None, typer.Option(
        help="Only these count models (repeatable or a comma list) \\[default: every one with "
             "a grid; matrrec models lists them].")] = None,
    output: OutputOpt = None, markdown: MarkdownOpt = False, json_out: JsonOpt = False,
) -> None:
    """The count models' grids from the records: every setting `matrrec tune --model M` tried.

    One row per setting with valid and test metrics; the protocol's default marked, and the
    setting validation picks (highest valid NDCG@10 at full precision, as tune chooses) in
    bold. Under the table, per model, what the pick changes on test. Nothing is trained.
    Writes results/grid.csv.

    Example: matrrec report grid --dataset musical --model sr,ease
    """
    from rich.table import Table

    from matrrec_cli.commands.experiments import cell_text
    from matrrec_cli.experiments import table2 as report
    from matrrec_cli.paths import results_dir as results_path

    rdir = results_path(results_dir)
    models = [m for given in model or [] for m in given.split(",") if m] or None
    df = report.grids(rdir, dataset, models)
    table = Table(title="The count models' grids (valid and test, mean over seeds; bold: the "
                        "setting validation picks)")
    for col in ("dataset", "model", "setting", "default", "valid ndcg@10", "test ndcg@10",
                "test recall@10"):
        table.add_column(col, justify="left" if col in ("dataset", "model", "setting") else "right")
    for _, r in df.iterrows():
        table.add_row(r["dataset"], r["model"], r["setting"], "yes" if r["default"] else "",
                      *(cell_text(r[k], None, bold=bool(r["picked"]))
                        for k in ("valid_ndcg@10", "test_ndcg@10", "test_recall@10")))
    show(table, markdown=markdown, json_rows=df if json_out else None)
    if not json_out:
        from rich.console import Console

        say = plain_printer(Console(), markdown=markdown, json_out=json_out)
        for (ds, name), rows in df.groupby(["dataset", "model"], sort=False):
            pick, default = rows[rows["picked"]].iloc[0], rows[rows["default"]]
            if default.empty:
                say(f"  {ds}/{name}: validation picks {pick['setting']}; the default setting "
                    "has no run")
            elif bool(default.iloc[0]["picked"]):
                say(f"  {ds}/{name}: validation keeps the default ({pick['setting']})")
            else:
                was = float(default.iloc[0]["test_ndcg@10"])
                change = f"{100 * (pick['test_ndcg@10'] - was) / was:+.1f}%" if was else "-"
                say(f"  {ds}/{name}: validation picks {pick['setting']} over the default "
                    f"{default.iloc[0]['setting']}: test NDCG@10 {was:.4f} -> "
                    f"{pick['test_ndcg@10']:.4f} ({change})")
    save_csv(df, rdir / "grid.csv", output, key=["dataset"])


@report_app.command("runs")
def runs(
    dataset: DatasetsOpt = None, results_dir: ResultsDirOpt = None, tag: TagOpt = None,
    include_capped: CappedOpt = False, output: OutputOpt = None, markdown: MarkdownOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """The runs behind each Table 2 cell: which were chosen and why the others were not.

    One row per candidate configuration of each dataset and model: chosen or why not (capped
    by --epochs, more departures from the protocol, fewer seeds, made later), settings, seeds,
    epochs, how each run ended, training wall, threads, device, git revision. Writes
    results/runs.csv.

    Example: matrrec report runs --dataset ml-100k
    """
    from matrrec_cli.experiments import table2 as report
    from matrrec_cli.paths import results_dir as results_path

    rdir = results_path(results_dir)
    df = report.runs(rdir, dataset, _selection(tag, include_capped))
    shown = [c for c in df.columns if c != "run_dirs"]  # the CSV and --json keep the paths
    table = frame_table(df[shown], "Runs behind Table 2, every candidate (test metrics: mean "
                                   "over seeds; wall: training and evaluation per run)")
    show(table, markdown=markdown, json_rows=df if json_out else None)
    save_csv(df, rdir / "runs.csv", output, key=["dataset"])


@report_app.command("profile")
def profile(
    dataset: DatasetsOpt = None, results_dir: ResultsDirOpt = None,
    markdown: MarkdownOpt = False, json_out: JsonOpt = False,
) -> None:
    """Tables 4-5 again from the recorded profile rows (yours, then the published ones).

    Timings cannot be re-measured to the digit, so the rows `matrrec profile` wrote (and
    `matrrec publish --profiles` published) are the record; nothing is timed here.

    Example: matrrec report profile --dataset musical --markdown
    """
    from rich.console import Console

    from matrrec_cli.commands.experiments import show_profile
    from matrrec_cli.errors import MatrrecError
    from matrrec_cli.experiments.claims import PROFILE_TITLES, profile_table
    from matrrec_cli.paths import results_dir as results_path

    rdir = results_path(results_dir)
    console = Console(stderr=json_out)
    shown = []
    for name, title in PROFILE_TITLES.items():
        df = profile_table(rdir, name, dataset)
        if df.empty:
            continue
        show_profile(df, title, markdown=markdown, json_out=json_out, console=console)
        shown.append(df)
    if not shown:
        raise MatrrecError(f"no profile rows{' of ' + ', '.join(dataset) if dataset else ''} in "
                           f"{rdir} or its published evidence; run matrrec profile --dataset "
                           f"{(dataset or ['musical'])[0]} first")
    if json_out:
        import pandas as pd

        print_json(pd.concat(shown, ignore_index=True))


@report_app.command("fuse")
def fuse(
    dataset: Annotated[str, typer.Option(help="The dataset the fusion was made on.")],
    model: Annotated[str, typer.Option(help="The fused network.")] = "matrrec",
    with_: Annotated[str, typer.Option("--with", help="The count model it was fused with.")]
        = "sr",
    tag: Annotated[str | None, typer.Option(help="The recipe tag of its runs, e.g. refit.")]
        = None,
    verdict: Annotated[bool, typer.Option(
        help="Only the chosen candidates' verdict, not every candidate.")] = False,
    results_dir: ResultsDirOpt = None, output: OutputOpt = None, markdown: MarkdownOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """A fusion's tables again, from the record `matrrec fuse` kept (published first).

    Nothing is scored: the record holds every candidate's numbers and the per-user test
    NDCG@10 the Wilcoxon tests use, so this needs neither the data nor the checkpoints.
    Writes results/fuse_<dataset>_<model>[_<tag>]_<count>.csv.

    Example: matrrec report fuse --dataset musical --with sr --tag refit
    """
    from matrrec_cli.commands.fuse import show_fusion
    from matrrec_cli.errors import MatrrecError
    from matrrec_cli.experiments import fusion
    from matrrec_cli.paths import published_dir
    from matrrec_cli.paths import results_dir as results_path

    rdir = results_path(results_dir)
    record = fusion.find_record(rdir, dataset, model, with_, tag)
    if record is None:
        where = [fusion.record_dir(r, dataset, model, with_, tag)
                 for r in (rdir, published_dir(rdir))]
        raise MatrrecError(
            f"no fusion record in {where[0]} or {where[1]}; run matrrec fuse --dataset "
            f"{dataset} --model {model} --with {with_}{f' --tag {tag}' if tag else ''} first")
    f = fusion.load(record)
    show_fusion(f, markdown=markdown, json_out=json_out, verdict_only=verdict)
    name = "_".join(x for x in (dataset, model, tag, with_) if x)
    save_csv(f.table, rdir / f"fuse_{name}.csv", output, key=["dataset"])


@report_app.command("bench")
def bench(
    name: Annotated[str, typer.Argument(help="The bench script: speed_options or scale.")],
    from_: Annotated[Path | None, typer.Option(
        "--from", help="Its CSV (the script's --out) \\[default: the published one, "
                       "results/published/bench/NAME.csv].")] = None,
    results_dir: ResultsDirOpt = None, markdown: MarkdownOpt = False, json_out: JsonOpt = False,
) -> None:
    """A benchmark's table again from the rows its script wrote under bench/; nothing is timed.

    speed_options: bench/speed_options.py, each option set against the default; scale:
    bench/scale.py, full against sampled-softmax training at large catalogs.

    Example: matrrec report bench speed_options --markdown
    """
    from matrrec_cli.experiments.bench import LABELS, bench_table
    from matrrec_cli.paths import results_dir as results_path

    title, df = bench_table(name, results_path(results_dir), from_)
    show(frame_table(df, title, left=LABELS), markdown=markdown,
         json_rows=df if json_out else None)


def register(app: typer.Typer) -> None:
    app.add_typer(report_app, name="report")
