"""Scale: preparation -> training -> full-ranking evaluation on synthetic datasets of real shapes.

Shapes (users / items / interactions, L):
  electronics  Table 1's Electronics (datasets.toml), L 50
  ml-1m-like   Table 1's ML-1M (datasets.toml), L 200
  20m-500k     MovieLens-20M's users and interactions over a 500k-item catalog, L 50
Sequences come from experiments/synthetic.py (5 + geometric lengths, popularity ~ 1/rank^0.8)
with every item drawn at least 5 times, so the 5-core keeps the whole shape.

Stages, each in a fresh process whose peak RSS is its own ru_maxrss (os.wait4):
  prep        `matrrec import` of a Parquet table (user, item, timestamp): read, 5-core, time
              order, leave-one-out, prepared Parquet; wall time of the whole command
  train+eval  `matrrec profile`'s worker (experiments/profile.measure) on the prepared data: the
              model, `timed` training batches scaled to the epoch (s/epoch), then full-ranking
              evaluation of `timed` batches of 4,096 test users scaled to every test user; the
              peak RSS covers load, samples, training and evaluation together

Plans:
  growth  electronics at 1x, 3x, 10x the users and interactions (catalog fixed, so only the
          interaction count grows), MaTrRec `prefix`, full cross-entropy, at each --threads;
          prints the exponent b of (measure) ~ interactions^b per stage, least squares on logs
  memory  MaTrRec and SASRec, `prefix` and `all`, full and sampled loss (--set loss=sampled,
          256 uniform negatives) on electronics and 20m-500k, full loss on ml-1m-like, at the
          largest --threads; the goals are 8 GB (electronics) and 16 GB (20m-500k). On 20m-500k
          `all` trains batches of 64 rows (3,200 positions against 500k items; a batch of 2048
          would take over an hour to time here); the scaled s/epoch covers the same rows.
          Then `matrrec profile --dataset NAME --model matrrec` with its defaults, as a user
          types it: the whole command's wall (goal: at most 5 minutes a cell)

  shapes  the memory plan's preparation and MaTrRec cells (both objectives, full loss) at each
          --threads: every shape's stages at 1 and 2 threads
  datasets  MaTrRec with full and sampled loss on the prepared Musical and ml-100k (the settings
          of their 5-seed runs), whole epochs, median of 3

Writes bench/out/scale.csv (one row per stage run) and prints markdown tables. Run it alone on
the machine: the walls are only comparable within one run.
Usage: python bench/scale.py [--plan growth,memory,datasets] [--threads 1,2] [--timed 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from matrrec_cli.experiments.synthetic import synthetic_sequences, table1_counts

OUT = Path("bench/out")
GOAL_GB = {"electronics": 8.0, "20m-500k": 16.0}
SAMPLED = ["loss=sampled", "negatives=256", "sampler=uniform"]


def shapes(quick: bool) -> dict[str, tuple[int, int, int, int]]:
    """name -> (users, items, interactions, L); --quick divides every count by 200."""
    e_users, e_items, e_inter = table1_counts("electronics")
    m_users, m_items, m_inter = table1_counts("ml-1m")
    full = {"electronics": (e_users, e_items, e_inter, 50),
            "ml-1m-like": (m_users, m_items, m_inter, 200),
            "20m-500k": (138_493, 500_000, 20_000_263, 50)}
    if not quick:
        return full
    return {k: (max(u // 200, 20), max(i // 200, 10), max(n // 200, 200), min(L, 20))
            for k, (u, i, n, L) in full.items()}


def child(argv: list[str], threads: int) -> tuple[str, float, float]:
    """Run argv in a fresh process with `threads` threads: (stdout, wall s, peak RSS GB)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "NUMBA_NUM_THREADS": str(threads)}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, text=True)
        # wait4 reaps this child alone and gives its own rusage (RUSAGE_CHILDREN would be the
        # maximum over every child so far)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            tail = (err.read().strip().splitlines() or ["(no output)"])[-1]
            raise SystemExit(f"{' '.join(argv[:4])} ... failed: {tail}")
        rss_kib = usage.ru_maxrss * (1 if sys.platform != "darwin" else 1 / 1024)
        return out.read(), wall, rss_kib / 2**20


def write_raw(path: Path, users: int, items: int, inter: int) -> int:
    """The synthetic interactions as a Parquet table; returns its row count."""
    seqs = synthetic_sequences(users, items, inter, seed=0, item_floor=5)
    n = len(seqs.items)
    pd.DataFrame({"user": np.repeat(np.arange(users), np.diff(seqs.offsets)),
                  "item": seqs.items,
                  "timestamp": np.arange(n, dtype=np.int64)}).to_parquet(path, index=False)
    return n


def prep(name: str, shape: tuple[int, int, int, int], data_dir: Path, threads: int) -> dict:
    users, items, inter, max_len = shape
    raw = data_dir / f"{name}.parquet"
    n = write_raw(raw, users, items, inter)
    shutil.rmtree(data_dir / name, ignore_errors=True)
    _, wall, rss = child([sys.executable, "-m", "matrrec_cli", "import", name, "--from-file",
                          str(raw), "--format", "table", "--max-len", str(max_len),
                          "--data-dir", str(data_dir)], threads)
    meta = json.loads((data_dir / name / "meta.json").read_text())
    raw.unlink()
    return {"stage": "prep", "interactions": n, "users": meta["n_users"],
            "items": meta["n_items"], "wall_s": round(wall, 2), "peak_rss_gb": round(rss, 3)}


def train_eval(name: str, data_dir: Path, *, model: str, objective: str | None,
               sets: list[str], max_len: int | None, timed: int | None, threads: int,
               repeats: int = 1) -> dict:
    """One profile cell (None: the dataset's own objective / L; timed None: whole epochs)."""
    cell = {"dataset": name, "model": model, "device": "cpu", "data_dir": str(data_dir),
            "sets": sets, "preset": None, "max_len": max_len, "synthetic": False,
            "objective": objective, "max_batches": timed, "warmup": 1, "repeats": repeats}
    out, wall, rss = child([sys.executable, "-m", "matrrec_cli.experiments.profile",
                            json.dumps(cell)], threads)
    r = json.loads(out.strip().splitlines()[-1])
    return {"stage": "train+eval", "model": model, "objective": r["objective"],
            "loss": "sampled" if "loss=sampled" in sets else "full",
            "batch": next((s.split("=")[1] for s in sets if s.startswith("batch_size=")), "2048"),
            "epoch_s": round(r["train_s_per_epoch"], 1),
            "timed": f"{r['timed_batches']}/{r['n_batches']}",
            "eval_s": round(r["inference_s"], 1),
            "eval_timed": f"{r['timed_eval_batches']}/{r['eval_batches']}",
            "wall_s": round(wall, 2), "peak_rss_gb": round(rss, 3)}


def growth(shape: tuple[int, int, int, int], data_dir: Path, threads: list[int], timed: int,
           rows: list[dict]) -> None:
    users, items, inter, max_len = shape
    for f in (1, 3, 10):
        name = f"scale-electronics-{f}x"
        for t in threads:
            base = {"plan": "growth", "shape": "electronics", "scale": f, "threads": t,
                    "max_len": max_len}
            rows.append({**base, **prep(name, (users * f, items, inter * f, max_len), data_dir,
                                        t)})
            print(rows[-1], flush=True)
            rows.append({**base, **train_eval(name, data_dir, model="matrrec",
                                              objective="prefix", sets=[], max_len=max_len,
                                              timed=timed, threads=t)})
            print(rows[-1], flush=True)
        shutil.rmtree(data_dir / name, ignore_errors=True)


def memory(all_shapes: dict[str, tuple[int, int, int, int]], data_dir: Path, threads: int,
           timed: int, rows: list[dict], *, models: tuple[str, ...] = ("matrrec", "sasrec"),
           full_only: bool = False, profile: bool = True) -> None:
    for shape_name in ("electronics", "ml-1m-like", "20m-500k"):
        shape = all_shapes[shape_name]
        max_len = shape[3]
        name = f"scale-{shape_name}"
        base = {"plan": "memory", "shape": shape_name, "scale": 1, "threads": threads,
                "max_len": max_len}
        rows.append({**base, **prep(name, shape, data_dir, threads)})
        print(rows[-1], flush=True)
        losses = [[]] if shape_name == "ml-1m-like" or full_only else [[], SAMPLED]
        for model in models:
            for objective in ("prefix", "all"):
                for loss in losses:
                    sets = list(loss)
                    if shape_name == "20m-500k" and objective == "all":
                        sets.append("batch_size=64")
                    rows.append({**base, **train_eval(name, data_dir, model=model,
                                                      objective=objective, sets=sets,
                                                      max_len=max_len, timed=timed,
                                                      threads=threads)})
                    print(rows[-1], flush=True)
        if profile:
            rows.append({**base, **profile_cli(name, data_dir, threads)})
            print(rows[-1], flush=True)
        shutil.rmtree(data_dir / name, ignore_errors=True)


def profile_cli(name: str, data_dir: Path, threads: int) -> dict:
    """`matrrec profile --dataset NAME --model matrrec` as a user types it (its defaults: 10
    batches within a 2-minute timing budget, 3 repeats): the whole command's wall."""
    with tempfile.TemporaryDirectory(dir=OUT) as results:
        out, wall, rss = child([sys.executable, "-m", "matrrec_cli", "profile", "--dataset",
                                name, "--model", "matrrec", "--device", "cpu", "--data-dir",
                                str(data_dir), "--results-dir", results, "--json"], threads)
    r = json.loads(out)[0]
    return {"stage": "profile (CLI defaults)", "model": "matrrec", "objective": "prefix",
            "epoch_s": round(r["train_s_per_epoch"], 1),
            "timed": f"{r['timed_batches']}/{r['n_batches']}",
            "eval_s": round(r["inference_s"], 1),
            "eval_timed": f"{r['timed_eval_batches']}/{r['eval_batches']}",
            "wall_s": round(wall, 2), "peak_rss_gb": round(rss, 3)}


def real(data_dir: Path, threads: int, rows: list[dict]) -> None:
    """Full and sampled loss on the prepared small datasets, whole epochs, 3 repeats (median),
    with the settings of the 5-seed runs: skip_padding, Musical's own objective, ml-100k's
    `all` (the README's ml-100k runs use `--objective all`: 2 batches an epoch, not 48)."""
    for ds, objective in (("musical", None), ("ml-100k", "all")):
        if not (data_dir / ds / "meta.json").is_file():
            print(f"{ds}: not prepared in {data_dir}; skipped (matrrec download {ds})")
            continue
        base = {"plan": "datasets", "shape": ds, "scale": 1, "threads": threads}
        for loss in ([], SAMPLED):
            rows.append({**base, **train_eval(ds, data_dir, model="matrrec", objective=objective,
                                              sets=[*loss, "skip_padding=true"], max_len=None,
                                              timed=None, threads=threads, repeats=3)})
            print(rows[-1], flush=True)


def exponents(df: pd.DataFrame) -> pd.DataFrame:
    """b in measure ~ interactions^b, per stage and thread count (least squares on logs)."""
    out = []
    g = df[df["plan"] == "growth"].copy()
    g["interactions"] = g.groupby(["scale"])["interactions"].transform("max")
    for (stage, threads), sub in g.groupby(["stage", "threads"]):
        x = np.log(sub["interactions"].astype(float))
        row = {"stage": stage, "threads": threads}
        for col in ("wall_s", "peak_rss_gb", "epoch_s", "eval_s"):
            if col in sub and sub[col].notna().all():
                row[col] = round(float(np.polyfit(x, np.log(sub[col].astype(float)), 1)[0]), 2)
        out.append(row)
    return pd.DataFrame(out)


def markdown(df: pd.DataFrame) -> str:
    cells = df.astype(object).where(df.notna(), "")
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in cells.itertuples(index=False)]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plan", default="growth,memory,datasets")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--timed", type=int, default=2, help="timed batches per cell (scaled)")
    ap.add_argument("--quick", action="store_true", help="every count / 200: a smoke run")
    ap.add_argument("--out", type=Path, default=OUT / "scale.csv")
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MATRREC_DATA_DIR",
                                                                         "data")),
                    help="where musical and ml-100k are prepared (--plan datasets)")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    all_shapes = shapes(args.quick)
    rows: list[dict] = []
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=OUT, prefix="scale-data-") as tmp:
        data_dir = Path(tmp)
        plans = args.plan.split(",")
        if "growth" in plans:
            growth(all_shapes["electronics"], data_dir, threads, args.timed, rows)
        if "memory" in plans:
            memory(all_shapes, data_dir, max(threads), args.timed, rows)
        if "shapes" in plans:  # the memory plan's stages at these threads: MaTrRec, full loss
            for t in threads:
                memory(all_shapes, data_dir, t, args.timed, rows, models=("matrrec",),
                       full_only=True, profile=False)
        if "datasets" in plans:
            real(args.data_dir, max(threads), rows)
    df = pd.DataFrame(rows)
    tmp_csv = args.out.with_suffix(".csv.tmp")
    df.to_csv(tmp_csv, index=False)
    tmp_csv.replace(args.out)
    cols = ["plan", "shape", "scale", "threads", "stage", "model", "objective", "loss", "batch",
            "interactions", "items", "wall_s", "epoch_s", "timed", "eval_s", "eval_timed",
            "peak_rss_gb"]
    for col in ("interactions", "items"):  # the prep row's counts, on every row of its data
        df[col] = df.groupby(["plan", "shape", "scale"])[col].transform("max").astype("Int64")
    print(markdown(df[[c for c in cols if c in df]]))
    if "growth" in args.plan:
        print("\nexponent b of measure ~ interactions^b (1x -> 10x):")
        print(markdown(exponents(df)))
    for shape_name, goal in GOAL_GB.items():
        sub = df[(df["shape"] == shape_name) & (df["plan"] == "memory")]
        if len(sub):
            peak = sub["peak_rss_gb"].max()
            print(f"{shape_name}: highest peak RSS {peak:.2f} GB, goal {goal:g} GB: "
                  f"{'met' if peak <= goal else 'NOT met'}")


if __name__ == "__main__":
    main()
