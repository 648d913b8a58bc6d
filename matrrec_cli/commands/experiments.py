"""`matrrec ablate`, `matrrec sweep`, `matrrec profile`: the paper's Tables 3-5 and Figures 2-3.

Thin wrappers: options -> RunSpecs (matrrec_cli.experiments) -> runner -> table/CSV/PNG.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from matrrec_cli.commands.tables import (
    ConfigOpt,
    DataDirOpt,
    DeviceOpt,
    JsonOpt,
    MarkdownOpt,
    ObjectiveOpt,
    OutputOpt,
    Preset,
    PresetOpt,
    ResultsDirOpt,
    p_text,
    plain_printer,
    print_json,
    run_options,
    save_csv,
    show,
)
from matrrec_cli.errors import UsageError

if TYPE_CHECKING:
    from matrrec_cli.experiments.jobs import ExecutorOptions
    from matrrec_cli.experiments.runner import Seeds
    from matrrec_cli.train.config import RunOptions

DatasetOpt = Annotated[list[str] | None, typer.Option(
    "--dataset", help="Prepared dataset (repeatable).")]
SeedsOpt = Annotated[str | None, typer.Option(
    help="Seeds: a count K (seed..seed+K-1) or a list 2020,2021 \\[default: one].")]
SeedOpt = Annotated[int | None, typer.Option(help="First seed for --seeds K \\[default: 2020].")]
EpochsOpt = Annotated[int | None, typer.Option(help="Maximum epochs \\[default: 300].")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="key=value for a model or trainer setting (repeatable).")]
RetrainOpt = Annotated[bool, typer.Option(
    help="Train again even where a finished run of the same configuration exists.")]
# Where the runs train (--executor ray: one Ray task per run, on this machine or a cluster).
_RAY = "Ray (--executor ray)"
ExecutorOpt = Annotated[Literal["local", "ray"], typer.Option(
    help="local: one run after another in this process; ray: each run a Ray task on a local "
         "Ray or the cluster at --address (pip install 'matrrec\\[ray]').", rich_help_panel=_RAY)]
AddressOpt = Annotated[str | None, typer.Option(
    help="A running Ray cluster, e.g. ray://head:10001 or auto \\[default: $RAY_ADDRESS, else "
         "an embedded local Ray].", rich_help_panel=_RAY)]
CpusPerRunOpt = Annotated[int, typer.Option(
    help="CPUs Ray reserves per run; also the run's torch threads.", rich_help_panel=_RAY)]
GpusPerRunOpt = Annotated[float | None, typer.Option(
    help="GPUs per run \\[default: 1 where the cluster has GPUs, else 0].",
    rich_help_panel=_RAY)]
KeepCheckpointsOpt = Annotated[bool, typer.Option(
    help="Bring best.pt and last.pt back with each run (matrrec evaluate needs best.pt).",
    rich_help_panel=_RAY)]
SharedDataOpt = Annotated[bool, typer.Option(
    help="Workers read --data-dir themselves (a shared file system) instead of receiving the "
         "dataset through Ray's object store.", rich_help_panel=_RAY)]


def executor_options(executor: str, address: str | None, cpus_per_run: int,
                     gpus_per_run: float | None, keep_checkpoints: bool,
                     shared_data_dir: bool) -> ExecutorOptions:
    from matrrec_cli.experiments.jobs import ExecutorOptions

    if executor == "local" and (address or gpus_per_run is not None or keep_checkpoints
                                or shared_data_dir or cpus_per_run != 1):
        raise UsageError("--address, --cpus-per-run, --gpus-per-run, --keep-checkpoints and "
                         "--shared-data-dir are for --executor ray")
    return ExecutorOptions(kind=executor, address=address, cpus_per_run=cpus_per_run,
                           gpus_per_run=gpus_per_run, keep_checkpoints=keep_checkpoints,
                           shared_data_dir=shared_data_dir)


TrackOpt = Annotated[str | None, typer.Option(
    help="Log each trained run to mlflow or tensorboard \\[default: mlflow when "
         "$MLFLOW_TRACKING_URI is set, else none].", metavar="[none|mlflow|tensorboard]")]
StudyOpt = Annotated[str | None, typer.Option(
    help="The tracker's experiment name \\[default: the dataset].")]
FinishedOnlyOpt = Annotated[bool, typer.Option(
    help="Train nothing: render the table from the finished runs (seeds column says how many).")]


def resolve_dirs(data_dir: str | None, results_dir: str | None) -> tuple[Path, Path]:
    from matrrec_cli.paths import data_dir as dpath
    from matrrec_cli.paths import results_dir as rpath

    return dpath(data_dir), rpath(results_dir)


def _first(datasets: list[str] | None) -> str | None:
    return datasets[0] if datasets else None


def _need(datasets: list[str] | None, base: RunOptions) -> list[str]:
    """The --dataset values, else the run file's dataset (run_options has checked there is
    one)."""
    return list(dict.fromkeys(datasets)) if datasets else [base.dataset]


def tracker(track: str | None) -> str:
    from matrrec_cli.experiments.tracking import tracker as choose

    return choose(track)


def seeds_for(seeds: str | None, seed: int | None, base: RunOptions) -> Seeds:
    """--seeds/--seed, with a run file's seed as the first seed when --seed is not given."""
    from matrrec_cli.experiments.runner import Seeds, parse_seeds

    if seed is None and base.seed is not None:
        out = parse_seeds(seeds, seed=base.seed)
        return out if seeds else Seeds(out.values, base.source("seed"))
    return parse_seeds(seeds, seed=seed)


def cell_text(value: float, std: Any, *, bold: bool = False, worse: bool = False,
          paper: float | None = None, star: bool = False) -> str:
    from matrrec_cli.experiments.runner import fmt

    text = fmt(value, None if std is None or std != std else float(std)) + ("*" if star else "")
    text += " ↓" if worse else ""
    text = f"[bold]{text}[/]" if bold else text
    return text + (f" [dim](paper {paper:.4f})[/]" if paper is not None and paper == paper else "")


def register(app: typer.Typer) -> None:
    @app.command()
    def ablate(
        dataset: DatasetOpt = None,
        remove: Annotated[list[str] | None, typer.Option(
            help="Remove a module: ffn, rc (all residuals) or dropout (repeatable).")] = None,
        add: Annotated[list[str] | None, typer.Option(
            help="Add a module: pe (learned positional embedding).")] = None,
        heads: Annotated[list[int] | None, typer.Option(
            help="A variant with N attention heads (repeatable).")] = None,
        layers: Annotated[list[int] | None, typer.Option(
            help="A variant with N Mamba+transformer layers (repeatable).")] = None,
        variant: Annotated[list[str] | None, typer.Option(
            help="A variant of any --set settings, KEY=VALUE[,KEY=VALUE] (repeatable), e.g. "
                 "loss=sampled: tested against the default like the paper's rows.")] = None,
        all_: Annotated[bool, typer.Option(
            "--all", help="The paper's six: add pe, remove ffn/rc/dropout, 2 heads, 2 layers.")]
            = False,
        seeds: SeedsOpt = None, seed: SeedOpt = None, epochs: EpochsOpt = None,
        max_len: Annotated[int | None, typer.Option(help="L \\[default: datasets.toml].")] = None,
        dropout: Annotated[float | None, typer.Option(
            help="Dropout \\[default: datasets.toml].")] = None,
        objective: ObjectiveOpt = None, preset: PresetOpt = None, device: DeviceOpt = None,
        data_dir: DataDirOpt = None, results_dir: ResultsDirOpt = None, set_: SetOpt = None,
        markdown: MarkdownOpt = False, json_out: JsonOpt = False, output: OutputOpt = None,
        retrain: RetrainOpt = False, finished_only: FinishedOnlyOpt = False,
        config: ConfigOpt = None, track: TrackOpt = None, study: StudyOpt = None,
        executor: ExecutorOpt = "local", address: AddressOpt = None,
        cpus_per_run: CpusPerRunOpt = 1, gpus_per_run: GpusPerRunOpt = None,
        keep_checkpoints: KeepCheckpointsOpt = False, shared_data_dir: SharedDataOpt = False,
    ) -> None:
        """Table 3: train MaTrRec's default and the requested ablations, render the table.

        Bold: better than the default; ↓: more than 10 % below it. Finished runs of the same
        configuration and seed are reused. Writes results/table3_ablation.csv (rows of other
        datasets and variants kept).

        Example: matrrec ablate --dataset musical --all --seeds 5
        Example: matrrec ablate --dataset musical --variant loss=sampled --seeds 5
        """
        from rich.console import Console
        from rich.table import Table

        from matrrec_cli.experiments import ablation
        from matrrec_cli.experiments.runner import run_all

        variant_list = ablation.variants(remove=remove or [], add=add or [], heads=heads or [],
                                         layers=layers or [], all_=all_,
                                         custom=variant or [])
        base = run_options(_first(dataset), device=device, data_dir=data_dir,
                           results_dir=results_dir, sets=set_, epochs=epochs, config=config,
                           objective=objective, preset=preset, max_len=max_len, dropout=dropout)
        datasets = _need(dataset, base)
        rdir = Path(base.results_dir)
        specs = ablation.specs(datasets, variant_list, base)
        ex = executor_options(executor, address, cpus_per_run, gpus_per_run, keep_checkpoints,
                              shared_data_dir)
        results = run_all(specs, seeds_for(seeds, seed, base), retrain=retrain,
                          finished_only=finished_only, executor=ex,
                          track=tracker(track), study=study)
        if not results:
            raise UsageError("no finished run of these variants yet; run without --finished-only")
        df = ablation.table3(results)
        table = Table(title="Table 3: ablations of MaTrRec (test, mean ± std over seeds; bold "
                            "better than default, ↓ >10 % worse, * differs from default: "
                            f"Welch's t-test over seeds, p < {ablation.ALPHA})")
        table.add_column("architecture")
        for ds in datasets:
            for m in ablation.METRICS:
                table.add_column(f"{ds} {m}", justify="right")
        table.add_column("seeds", justify="right")
        for label, _ in variant_list:
            cells, n = [], []
            for ds in datasets:
                rows = df[(df["dataset"] == ds) & (df["label"] == label)]
                if rows.empty:  # --finished-only and no seed of it finished yet
                    cells += ["-"] * len(ablation.METRICS)
                    n.append("0")
                    continue
                row = rows.iloc[0]
                cells += [cell_text(row[m], row[f"{m}_std"], bold=row[f"{m}_better"],
                                    worse=row[f"{m}_worse10"], paper=row[f"{m}_paper"],
                                    star=row[f"{m}_p"] is not None
                                    and row[f"{m}_p"] < ablation.ALPHA)
                          for m in ablation.METRICS]
                n.append(str(row["n_seeds"]))
            table.add_row(label, *cells, "/".join(n))
        console = Console(stderr=json_out)
        show(table, markdown=markdown, console=console, json_rows=df if json_out else None)
        say = plain_printer(console, markdown=markdown, json_out=json_out)
        for _, r in df[df["label"] != ablation.DEFAULT_LABEL].iterrows():
            # the test behind each `*`, so a reader sees how far from significance a row is
            pct = {m: r[f"{m}_vs_default_pct"] for m in ablation.METRICS}
            if any(v is None or v != v for v in pct.values()):
                continue  # no default runs on this dataset: nothing to compare with
            say(f"  {r['label']} vs {ablation.DEFAULT_LABEL} on {r['dataset']}: " + ", ".join(
                f"{m} {pct[m]:+.1f}% (Welch p {p_text(r[f'{m}_p'])})"
                for m in ablation.METRICS))
        save_csv(df, rdir / "table3_ablation.csv", output, key=["dataset", "label"])

    @app.command()
    def sweep(
        param: Annotated[Literal["dropout", "max_len", "max-len"], typer.Argument(
            help="The setting to sweep (max-len: the older spelling of max_len).")],
        values: Annotated[str, typer.Argument(help="Comma list, e.g. 0.1,0.2,0.3.")],
        dataset: DatasetOpt = None,
        model: Annotated[str | None, typer.Option(
            help="Model name \\[default: matrrec].")] = None,
        seeds: SeedsOpt = None, seed: SeedOpt = None, epochs: EpochsOpt = None,
        max_len: Annotated[int | None, typer.Option(help="Fixed L for a dropout sweep.")] = None,
        dropout: Annotated[float | None, typer.Option(
            help="Fixed dropout for a max-len sweep.")] = None,
        objective: ObjectiveOpt = None, preset: PresetOpt = None, device: DeviceOpt = None,
        data_dir: DataDirOpt = None, results_dir: ResultsDirOpt = None, set_: SetOpt = None,
        markdown: MarkdownOpt = False, json_out: JsonOpt = False, output: OutputOpt = None,
        retrain: RetrainOpt = False, finished_only: FinishedOnlyOpt = False,
        config: ConfigOpt = None, track: TrackOpt = None, study: StudyOpt = None,
        executor: ExecutorOpt = "local", address: AddressOpt = None,
        cpus_per_run: CpusPerRunOpt = 1, gpus_per_run: GpusPerRunOpt = None,
        keep_checkpoints: KeepCheckpointsOpt = False, shared_data_dir: SharedDataOpt = False,
    ) -> None:
        """Figures 2-3: train over a dropout or max-length sweep; CSV and a PNG line plot.

        Writes results/sweep_<param>_<datasets>_<model>[_<tag>].csv and the figure beside it
        (fig2_... for dropout, fig3_... for max_len), or --output and the PNG beside it.

        Example: matrrec sweep dropout 0.1,0.2,0.3,0.4,0.5 --dataset musical
        """
        from rich.table import Table

        from matrrec_cli.experiments import sweep as sweep_mod
        from matrrec_cli.experiments.runner import run_all

        param = sweep_mod.canonical(param)
        _, vals = sweep_mod.parse(param, values)
        base = run_options(_first(dataset), model=model, device=device, data_dir=data_dir,
                           results_dir=results_dir, sets=set_, epochs=epochs, config=config,
                           objective=objective, preset=preset, max_len=max_len, dropout=dropout)
        datasets = _need(dataset, base)
        model, ddir, rdir = base.model, Path(base.data_dir), Path(base.results_dir)
        specs = sweep_mod.specs(param, vals, datasets, base)
        ex = executor_options(executor, address, cpus_per_run, gpus_per_run, keep_checkpoints,
                              shared_data_dir)
        results = run_all(specs, seeds_for(seeds, seed, base), retrain=retrain,
                          finished_only=finished_only, executor=ex, track=tracker(track),
                          study=study)
        if not results:
            raise UsageError("no finished run of this sweep yet; run without --finished-only")
        df = sweep_mod.frame(param, results)
        stem = sweep_mod.file_stem(param, datasets, model, list(set_ or []))
        csv = save_csv(df, rdir / f"sweep_{stem}.csv", output, key=["dataset", param])
        png = (csv.with_suffix(".png") if output is not None
               else rdir / f"{sweep_mod.PARAMS[param][2]}_{stem}.png")
        default = (getattr(_defaults(datasets[0], ddir), sweep_mod.PARAMS[param][0])
                   if len(datasets) == 1 else None)
        sweep_mod.plot(param, df, png, default=default,
                       note=sweep_mod.setting_note(param, results))
        print(f"written {png}", file=sys.stderr)
        table = Table(title=f"{model}: {param} sweep (test, mean ± std over seeds)")
        for col in ("dataset", param, *sweep_mod.METRICS, "epochs", "seeds"):
            table.add_column(col, justify="left" if col == "dataset" else "right")
        rows = {(r["dataset"], r[param]): r for _, r in df.iterrows()}
        for ds in datasets:
            best = df[df["dataset"] == ds]["ndcg@10"].max()
            for v in vals:  # every point asked for: one without finished runs shows 0 seeds
                r = rows.get((ds, v))
                if r is None:
                    table.add_row(ds, str(v), *("-" for _ in sweep_mod.METRICS), "-", "0")
                    continue
                table.add_row(ds, str(v), *(
                    cell_text(r[m], r[f"{m}_std"], bold=(m == "ndcg@10" and r[m] == best))
                    for m in sweep_mod.METRICS), str(r["epochs"]), str(r["n_seeds"]))
        show(table, markdown=markdown, json_rows=df if json_out else None)

    @app.command()
    def profile(
        dataset: DatasetOpt = None,
        synthetic_like: Annotated[list[str] | None, typer.Option(
            help="Random data with this dataset's Table 1 statistics (repeatable).")] = None,
        max_len: Annotated[str | None, typer.Option(
            help="Table 4: MaTrRec at these lengths, e.g. 10,30,50,70.")] = None,
        model: Annotated[list[str] | None, typer.Option(
            "--model", help="Table 5: these models (repeatable or a comma list; 'all') at the "
                            "dataset's L.")] = None,
        models_alias: Annotated[str | None, typer.Option("--models", hidden=True)] = None,
        device: DeviceOpt = None,
        repeats: Annotated[int, typer.Option(help="Timed repeats (median).")] = 3,
        warmup: Annotated[int, typer.Option(help="Warm-up batches.")] = 2,
        max_batches: Annotated[str, typer.Option(
            help="Time this many batches (and as many evaluation batches) and scale to the "
                 "epoch, fewer where they would take over 2 minutes a cell; or 'all' for the "
                 "whole epoch \\[default: 10, so a cell of any dataset size finishes in "
                 "minutes].", show_default=False)] = "10",
        preset: Annotated[Preset | None, typer.Option(
            help="paper or recbole \\[default: paper].")] = None,
        set_: SetOpt = None, config: ConfigOpt = None,
        data_dir: DataDirOpt = None, results_dir: ResultsDirOpt = None,
        markdown: MarkdownOpt = False, json_out: JsonOpt = False,
        executor: ExecutorOpt = "local", address: AddressOpt = None,
        cpus_per_run: CpusPerRunOpt = 1, gpus_per_run: GpusPerRunOpt = None,
        plan: Annotated[str | None, typer.Option(
            "--plan", help="Profile nothing: what table2, table3 or figures would cost on "
                           "--dataset (runs x epochs x s/epoch from the profile rows and the "
                           "finished runs), here and on N Ray workers.")] = None,
        workers: Annotated[int, typer.Option(
            help="With --plan: also the wall on this many Ray workers.")] = 16,
    ) -> None:
        """Tables 4-5: memory, training time per epoch and inference time per model and L.

        Each cell runs in a fresh process. Without --max-len and --models both tables are made
        (L 10,30,50,70 and every model). Writes results/table4_max_len.csv and
        results/table5_complexity.csv, replacing only the rows of the cells profiled again.

        By default each cell times 10 training and 10 evaluation batches, fewer where those
        would take more than 2 minutes of timing in all (a large catalog), and scales them to
        the epoch (the table and the CSV say how many were timed); --max-batches all times
        whole epochs.

        Example: matrrec profile --synthetic-like electronics --model all
        """
        from matrrec_cli.experiments import profile as prof
        from matrrec_cli.experiments.runner import parse_values
        from matrrec_cli.models import model_names

        if plan is not None:
            names = [*(dataset or []), *(synthetic_like or [])]
            if len(names) != 1:
                raise UsageError("--plan needs one --dataset (or --synthetic-like) NAME")
            if workers < 1:
                raise UsageError(f"--workers must be at least 1, not {workers}")
            # on a real dataset, the options the experiment will get (--set, --preset,
            # --config) say which finished runs it would reuse, so the plan counts what is left
            base = run_options(names[0], model="matrrec", data_dir=data_dir,
                               results_dir=results_dir, sets=set_, config=config,
                               preset=preset) if dataset else None
            _plan(plan, names[0], resolve_dirs(data_dir, results_dir)[1], workers,
                  markdown=markdown, base=base)
            return

        if config is not None:  # a run file's dataset, preset and settings; flags override it
            from matrrec_cli.train.config import read_config_file

            file = read_config_file(config)
            if not dataset and not synthetic_like and file.get("dataset"):
                dataset = [file["dataset"]]
            preset = preset or file.get("preset")
            set_ = [*file["sets"], *(set_ or [])]
        preset = preset or "paper"
        sources = [(d, False) for d in dataset or []] + [(d, True) for d in synthetic_like or []]
        if not sources:
            raise UsageError("give --dataset NAME or --synthetic-like NAME (repeatable)")
        batches_cap = _batches(max_batches)
        if repeats < 1 or warmup < 0:
            raise UsageError("--repeats must be at least 1, --warmup >= 0")
        models = ",".join([*(model or []), *([models_alias] if models_alias else [])]) or None
        lens = parse_values(max_len, int) if max_len else ([] if models else [10, 30, 50, 70])
        names = (model_names() if models in (None, "all") else parse_values(models, str)) \
            if models or not max_len else []
        for name in names:
            if name not in model_names():
                raise UsageError(f"unknown model {name!r}; known: {', '.join(model_names())}")
        ddir, rdir = resolve_dirs(data_dir, results_dir)
        base = {"device": device or "auto", "data_dir": str(ddir), "repeats": repeats,
                "warmup": warmup, "max_batches": batches_cap, "preset": preset,
                "budget_s": prof.CELL_BUDGET_S,
                "sets": list(set_ or [])}
        t4 = [{**base, "dataset": d, "synthetic": s, "model": "matrrec", "max_len": n}
              for d, s in sources for n in lens]
        t5 = [{**base, "dataset": d, "synthetic": s, "model": m,
               "max_len": _defaults(d, ddir).max_len} for d, s in sources for m in names]
        ex = executor_options(executor, address, cpus_per_run, gpus_per_run, False, False)
        _profile_tables(prof, t4, t5, rdir, markdown=markdown, json_out=json_out, executor=ex)


def _plan(what: str, dataset: str, rdir: Path, workers: int, *, markdown: bool,
          base: Any = None) -> None:
    """`profile --plan`: the plan's lines as a table, then its wall per device and workers."""
    from rich.table import Table

    from matrrec_cli.experiments import plan as pl

    counts = None if base is None or what == "table2" else pl.to_run(what, base)
    lines = pl.plan(rdir, dataset, what, left=None if counts is None else counts[0])
    left = "" if counts is None else " ({} of its {} runs left to train)".format(*counts)
    table = Table(title=f"{pl.PLANS[what]} on {dataset}{left}: what it would cost")
    for col in ("model", "runs", "epochs/run", "device", "train s/epoch", "inference s",
                "memory GB", "run-hours", "epochs from"):
        table.add_column(col, justify="left" if col in ("model", "device", "epochs from")
                         else "right")
    for x in lines:
        table.add_row(x.model, str(x.runs), f"{x.epochs:.0f}", x.device or "-",
                      "-" if x.s_per_epoch is None else _seconds(x.s_per_epoch),
                      "-" if x.inference_s is None else _seconds(x.inference_s),
                      "-" if x.memory_gb is None else f"{x.memory_gb:.2f}",
                      "-" if x.hours is None else f"{x.hours:.1f}", x.epochs_from)
    show(table, markdown=markdown)
    out = sys.stdout if markdown else sys.stderr
    for device in sorted({x.device for x in lines if x.device}):
        walls = [(n, pl.wall_hours(lines, device, n)) for n in dict.fromkeys((1, workers))]
        print(f"{device}: " + "; ".join(f"{w:.1f} h on {n} worker{'s' if n > 1 else ''}"
                                        for n, w in walls if w is not None), file=out)
    missing = sorted({x.model for x in lines if x.device is None and x.runs})
    if missing:
        print(f"not profiled on {dataset}: {', '.join(missing)}; measure them with matrrec "
              f"profile --dataset {dataset} --model {','.join(missing)} (or --synthetic-like "
              f"{dataset})", file=out)


def _batches(text: str) -> int | None:
    """--max-batches: a count of at least 1, or 'all' (None: every batch)."""
    if text.strip().lower() == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"--max-batches must be a whole number of at least 1 or 'all', not "
                         f"{text!r}")
    return value


def _defaults(dataset: str, data_dir: Path) -> Any:
    from matrrec_cli.data.registry import training_defaults

    return training_defaults(dataset, data_dir)


def _seconds(x: float) -> str:
    return f"{x:.2f}" if x >= 0.1 else f"{x:.4f}"  # count models take milliseconds


def _profile_tables(prof: Any, t4: list[dict], t5: list[dict], rdir: Path, *,
                    markdown: bool = False, json_out: bool = False,
                    executor: ExecutorOptions | None = None) -> None:
    import pandas as pd
    from rich.console import Console

    from matrrec_cli.experiments.claims import PROFILE_KEY, PROFILE_TITLES

    console = Console(stderr=json_out)
    rows_out: list[dict] = []
    for cells, csv in ((t4, "table4_max_len.csv"), (t5, "table5_complexity.csv")):
        title = PROFILE_TITLES[csv]
        if not cells:
            continue
        rows = []
        for i, cell in enumerate(cells, 1):
            print(f"[{i}/{len(cells)}] profiling {cell['model']} on {cell['dataset']}"
                  f"{' (synthetic)' if cell['synthetic'] else ''} L {cell['max_len']}"
                  + (" (a Ray task)" if executor and executor.kind == "ray" else ""),
                  file=sys.stderr, flush=True)
            if not executor or executor.kind == "local":
                rows.append(prof.run_cell(cell))
        if executor and executor.kind == "ray":
            from matrrec_cli.experiments.ray_executor import profile_cells

            rows = profile_cells(cells, executor, prof.measure)
        df = pd.DataFrame(rows)
        rows_out += rows
        save_csv(df, rdir / csv, None, key=list(PROFILE_KEY))
        show_profile(df, title, markdown=markdown, json_out=json_out, console=console)
    if json_out:
        print_json(rows_out)


def show_profile(df: Any, title: str, *, markdown: bool = False, json_out: bool = False,
                 console: Any = None) -> None:
    """One profile table (Table 4 or 5 rows), as `profile` prints it after measuring and
    `report profile` prints it again from the recorded rows."""
    from rich.table import Table

    # CPU times depend on the thread count, so the title names it (rows of older records lack it)
    threads = sorted({int(t) for t in df["threads"].dropna()}) if "threads" in df else []
    per = f", {'/'.join(map(str, threads))} thread{'s' if threads != [1] else ''}" \
        if threads else ""
    table = Table(title=f"{title} ({df['memory_kind'].iloc[0]}, median of "
                        f"{df['repeats'].iloc[0]}, device {df['device'].iloc[0]}{per})")
    for col in ("dataset", "model", "L", "memory GB", "train s/epoch", "inference s",
                "timed batches"):
        table.add_column(col, justify="left" if col in ("dataset", "model") else "right")
    for _, r in df.iterrows():
        ds = r["dataset"] + (" (synthetic)" if r["synthetic"] else "")
        table.add_row(ds, r["model"], str(r["max_len"]), f"{r['memory_gb']:.2f}",
                      _seconds(r["train_s_per_epoch"]), _seconds(r["inference_s"]),
                      f"{r['timed_batches']}/{r['n_batches']}")
    show(table, markdown=markdown, console=console)
    scaled = df[df["timed_batches"] < df["n_batches"]]
    if not scaled.empty:
        print(f"  train s/epoch and inference s of {len(scaled)} cell(s) are scaled from the "
              "timed batches (column 'timed batches'); --max-batches all times whole "
              "epochs", file=sys.stdout if markdown and not json_out else sys.stderr)
