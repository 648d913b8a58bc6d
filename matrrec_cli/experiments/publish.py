"""The published evidence: finished runs of this machine copied into results/published/.

    results/published/
        runs/<dataset>/<model>/<run id>/   a run's record (config.json, env.json, history.jsonl,
                                           metrics.json, ranks.parquet; best.pt and refit.pt
                                           only with --checkpoints, for fuse/evaluate/recommend)
        users/<dataset>.parquet            each test user's history length and target popularity
                                           (claim 2 and the breakdown read it where the dataset
                                           is not prepared, as on a fresh clone)
        fusions/<dataset>/<name>/          matrrec fuse's records (report fuse renders them)
        <profile>.csv                      matrrec profile's Tables 4-5 rows (claim 5)

Only `matrrec publish` writes here; the git repository commits it, so a clone re-renders every
table of the README without training (`matrrec docs --check`), and experiment commands reuse
its runs instead of training them again. A run is copied whole into a staging directory and
renamed into place, so the store never holds half a run. The directories of the machine that
trained it are replaced by the defaults (they are not part of the configuration's identity and
mean nothing on another machine); every other byte is the record as the trainer wrote it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from matrrec_cli.errors import MatrrecError
from matrrec_cli.io import merge_csv
from matrrec_cli.paths import DEFAULT_DATA_DIR, DEFAULT_RESULTS_DIR, published_dir, run_stores
from matrrec_cli.train.runs import (
    BEST,
    CAPPED,
    CONFIG,
    METRICS,
    REFIT,
    check_record,
    pack_run,
    place_run,
    read_json,
    record_bytes,
    stop_reason,
)


@dataclasses.dataclass
class Outcome:
    """What publishing one run did: `published` (its new path) or why it was left out."""

    run: Path
    published: Path | None = None
    why: str = ""


def own_finished(results_dir: str | Path) -> list[Path]:
    """This machine's finished run directories (results/runs), in run-id order."""
    store = run_stores(results_dir)[1]
    return sorted((p.parent for p in store.glob(f"*/*/*/{METRICS}")),
                  key=lambda p: p.parts[-3:])


def _published_key(store: Path) -> dict[tuple[str, str, str, int], Path]:
    """(dataset, model, config hash, seed) -> its published run."""
    out = {}
    for metrics in store.glob(f"*/*/*/{METRICS}"):
        run = metrics.parent
        try:
            cfg = read_json(run / CONFIG)
            out[(run.parts[-3], run.parts[-2], cfg["config_hash"], cfg["seed"])] = run
        except (MatrrecError, KeyError, TypeError):
            continue  # a damaged published record: check_docs and the reports name it
    return out


def publish(results_dir: str | Path, runs: list[Path] | None = None, *,
            datasets: list[str] | None = None, models: list[str] | None = None,
            checkpoints: bool = False, include_capped: bool = False,
            dry_run: bool = False) -> list[Outcome]:
    """Copy finished runs (`runs`, else every finished run of this machine, filtered by
    `datasets` / `models`) into the published evidence. A run is left out, with the reason,
    when it is already published, when another run of the same configuration and seed is (the
    first published stays: a table never changes under a reader because a rerun landed), or
    when `--epochs` cut it short (a smoke run; `include_capped` or a tagged recipe admits it)."""
    rdir = Path(results_dir)
    store = run_stores(rdir)[0]
    known = _published_key(store)
    chosen = [Path(r) for r in runs] if runs else own_finished(rdir)
    out = []
    for run in chosen:
        if not (run / METRICS).is_file():
            raise MatrrecError(f"{run} is not a finished run (no {METRICS}); train it to the end "
                               "first")
        cfg, metrics = read_json(run / CONFIG), read_json(run / METRICS)
        check_record(run, cfg, metrics)
        dataset, model = cfg["dataset"], cfg["model"]
        if (datasets and dataset not in datasets) or (models and model not in models):
            continue
        target = store / dataset / model / run.name
        twin = known.get((dataset, model, cfg.get("config_hash"), cfg["seed"]))
        if target.exists():
            out.append(Outcome(run, why="already published"))
        elif twin is not None:
            out.append(Outcome(run, why=f"the same configuration and seed is published as "
                                        f"{twin.name}"))
        elif stop_reason(cfg, metrics) == CAPPED and not (include_capped or cfg.get("tag")):
            out.append(Outcome(run, why="cut short by --epochs (a smoke run; --include-capped "
                                        "publishes it)"))
        else:
            if not dry_run:
                _copy_run(run, target, cfg, checkpoints=checkpoints)
                known[(dataset, model, cfg.get("config_hash"), cfg["seed"])] = target
            out.append(Outcome(run, published=target))
    return out


def _copy_run(run: Path, target: Path, cfg: dict, *, checkpoints: bool) -> None:
    """The published copy of `run`, placed whole (runs.place_run); config.json names the
    default directories (the training machine's mean nothing elsewhere)."""
    files = pack_run(run, checkpoints=(BEST, REFIT) if checkpoints else ())
    files[CONFIG] = record_bytes({**cfg, "data_dir": DEFAULT_DATA_DIR,
                                  "results_dir": DEFAULT_RESULTS_DIR})
    place_run(files, target, target.parents[2] / ".staging")


def publish_fusions(results_dir: str | Path, datasets: list[str] | None = None, *,
                    dry_run: bool = False) -> list[Outcome]:
    """Copy this machine's fusion records (experiments/fusion.py) into the published evidence,
    each whole. A record is left out while one of its runs is not published (a published
    fusion must re-render from published runs), or when the same fusion is published (the
    first stays, as for runs)."""
    from matrrec_cli.experiments.fusion import FUSIONS, RECORD

    rdir = Path(results_dir)
    store = published_dir(rdir) / FUSIONS
    published_runs = {m.parent.name for m in run_stores(rdir)[0].glob(f"*/*/*/{METRICS}")}
    out = []
    for rec in sorted((rdir / FUSIONS).glob(f"*/*/{RECORD}")):
        own, dataset = rec.parent, rec.parent.parent.name
        if datasets and dataset not in datasets:
            continue
        members = read_json(rec).get("runs") or []
        target = store / dataset / own.name
        missing = [r for r in members if r not in published_runs]
        if target.exists():
            same = (read_json(target / RECORD).get("runs") or []) == members
            out.append(Outcome(own, why="already published" if same else
                               "this fusion is published from other runs; that one stays"))
        elif missing:
            out.append(Outcome(own, why=f"its run {missing[0]} is not published; publish the "
                                        "runs first (with --checkpoints, so fuse can score "
                                        "them again)"))
        else:
            if not dry_run:
                files = {p.name: p.read_bytes() for p in sorted(own.iterdir()) if p.is_file()}
                place_run(files, target, store / ".staging")
            out.append(Outcome(own, published=target))
    return out


def publish_users(results_dir: str | Path, dataset: str, data_dir: str | Path) -> Path | None:
    """Write the dataset's per-user features (breakdown.user_features) beside the published
    runs, from the prepared dataset; None when it is not prepared here."""
    from matrrec_cli.data.prepared import require_prepared
    from matrrec_cli.experiments.breakdown import user_features, users_path
    from matrrec_cli.io import atomic_path

    try:
        require_prepared(dataset, data_dir)
    except MatrrecError:
        return None
    feat = user_features(dataset, data_dir).rename_axis("user").reset_index()
    path = users_path(results_dir, dataset)
    with atomic_path(path) as tmp:
        feat.to_parquet(tmp, index=False)
    return path


def publish_profiles(results_dir: str | Path, datasets: list[str] | None) -> list[Path]:
    """Merge this machine's profile rows (results/<table>.csv) of `datasets` into the published
    ones, replacing the published rows of the same cells."""
    from matrrec_cli.experiments.claims import PROFILE_CSVS, PROFILE_KEY

    rdir = Path(results_dir)
    out = []
    for name in PROFILE_CSVS:
        src = rdir / name
        if not src.is_file():
            continue
        df = pd.read_csv(src)
        if datasets:
            df = df[df["dataset"].isin(datasets)]
        if df.empty:
            continue
        merge_csv(df, published_dir(rdir) / name, key=list(PROFILE_KEY))
        out.append(published_dir(rdir) / name)
    return out


def store_bytes(results_dir: str | Path) -> int:
    """The published evidence's size on disk, in bytes (the budget is 30 MB)."""
    root = published_dir(results_dir)
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.is_dir() else 0
