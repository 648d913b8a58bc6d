"""The benchmark scripts' measurements read back as tables: `matrrec report bench NAME`.

A timing cannot be re-measured to the digit, so the CSV a script under bench/ wrote is the
record, as the profile rows are for Tables 4-5: the README's speed tables are rendered from
the copies committed under results/published/bench/, and a user renders their own with
`--from bench/out/NAME.csv`. Each view turns one script's rows into the table the README shows;
the speed-ups are computed here from the rows, never stored.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from matrrec_cli.errors import MatrrecError
from matrrec_cli.paths import published_dir

BENCH_DIR = "bench"  # under results/published/
# the views' text columns (the rest are numbers, formatted here, shown right-justified)
LABELS = ("options", "dataset (items)", "objective")


def published_csv(results: Path, name: str) -> Path:
    """Where the published rows of bench script `name` live."""
    return published_dir(results) / BENCH_DIR / f"{name}.csv"


def _need(df: pd.DataFrame, path: Path, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise MatrrecError(f"{path}: no column(s) {', '.join(missing)}; is it the CSV that "
                           "script wrote? Run it again with --out")


def speed_options(df: pd.DataFrame, path: Path) -> tuple[str, pd.DataFrame]:
    """bench/speed_options.py: each option set's median train s/epoch and full-sort s, and its
    speed-up over the first row (the default configuration, timed in the same rounds)."""
    _need(df, path, ("dataset", "model", "max_len", "rounds", "threads", "options",
                     "train_s_per_epoch", "inference_s"))
    base = df.iloc[0]
    out = pd.DataFrame({
        "options": df["options"].fillna("").replace("", "default"),
        "train s/epoch": df["train_s_per_epoch"].map(lambda x: f"{x:.2f}"),
        "full-sort s": df["inference_s"].map(lambda x: f"{x:.3f}"),
        "train speed-up": (base["train_s_per_epoch"] / df["train_s_per_epoch"])
        .map(lambda x: f"{x:.1f}×"),
        "eval speed-up": (base["inference_s"] / df["inference_s"]).map(lambda x: f"{x:.1f}×"),
    })
    # an empty cell (the model's own scan) reads back as NaN
    scan_impl = base.get("scan_impl")
    scan = f", scan {scan_impl}" if isinstance(scan_impl, str) and scan_impl else ""
    title = (f"{base['model']} on {base['dataset']}, L {base['max_len']}{scan}: median of "
             f"{base['rounds']} interleaved rounds, {base['threads']} thread(s)")
    return title, out


def sampled_speedup(df: pd.DataFrame, path: Path, *, model: str = "matrrec",
                    threads: int = 1) -> tuple[str, pd.DataFrame]:
    """bench/scale.py's memory plan: full against sampled-softmax training s/epoch (scaled
    from the timed batches) and peak RSS, per dataset shape and objective."""
    _need(df, path, ("plan", "shape", "threads", "stage", "items", "model", "objective",
                     "loss", "batch", "epoch_s", "peak_rss_gb"))
    items = df[df["stage"] == "prep"].groupby("shape")["items"].max()
    cells = df[(df["plan"] == "memory") & (df["stage"] == "train+eval")
               & (df["model"] == model) & (df["threads"] == threads)]
    rows = []
    for (shape, objective, batch), g in cells.groupby(["shape", "objective", "batch"],
                                                       sort=False):
        by = g.set_index("loss")
        if not {"full", "sampled"} <= set(by.index):
            continue
        full, sampled = by.loc["full"], by.loc["sampled"]
        rows.append({
            "dataset (items)": f"{shape} ({int(items[shape]):,})",
            "objective": objective, "batch": int(batch),
            "full loss, s/epoch": f"{full['epoch_s']:,.0f}",
            "sampled, s/epoch": f"{sampled['epoch_s']:,.0f}",
            "speed-up": f"{full['epoch_s'] / sampled['epoch_s']:.1f}×",
            "peak RSS GB, full / sampled":
                f"{full['peak_rss_gb']:.1f} / {sampled['peak_rss_gb']:.1f}",
        })
    if not rows:
        raise MatrrecError(f"{path}: no {model} cells at {threads} thread(s) with both losses; "
                           "run python bench/scale.py --plan memory")
    title = f"{model}, {threads} thread(s): training s/epoch, full vs sampled softmax"
    return title, pd.DataFrame(rows)


VIEWS: dict[str, Callable[[pd.DataFrame, Path], tuple[str, pd.DataFrame]]] = {
    "speed_options": speed_options,
    "scale": sampled_speedup,
}


def bench_table(name: str, results: Path, source: Path | None = None
                ) -> tuple[str, pd.DataFrame]:
    """The table of bench script `name` from `source`, else from its published rows."""
    if name not in VIEWS:
        raise MatrrecError(f"no bench table '{name}'; choose one of {', '.join(VIEWS)}")
    path = source or published_csv(results, name)
    if not path.is_file():
        raise MatrrecError(f"{path}: no such file; run python bench/{name}.py with --out {path} "
                           "(or give --from PATH)")
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise MatrrecError(f"{path}: not a readable CSV ({e}); write it again with "
                           f"python bench/{name}.py --out {path}") from None
    if df.empty:
        raise MatrrecError(f"{path}: no rows; write it again with python bench/{name}.py")
    return VIEWS[name](df, path)
