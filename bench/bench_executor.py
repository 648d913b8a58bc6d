"""The same 8-run sweep through `--executor local` and through a local Ray with two one-thread
workers, side by side in one invocation, as a ratio of wall-clock times.

Both go through the CLI in a fresh process with fresh results directories (nothing reused), on
a synthetic dataset imported into a temporary directory, so the bench needs no download.
`local` trains the 8 runs one after another with one torch thread; `ray` runs two tasks at a
time, one CPU and one thread each, on an embedded Ray (its start-up, a few seconds, is counted).
On a 2-core machine the ideal ratio is 2x; what Ray costs on top is the gap.

Then, when bench/bench_ddp.py is present, the training-step time of 1 vs 2 gloo ranks.

Example: python bench/bench_executor.py --users 600 --epochs 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers import synthetic_interactions


def matrrec(*args: str, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "matrrec_cli", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=600)
    ap.add_argument("--items", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--model", default="sasrec")
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        csv = root / "i.csv"
        synthetic_interactions(n_users=args.users, n_items=args.items, max_len=60
                               ).to_csv(csv, index=False)
        matrrec("import", "syn", "--from-file", str(csv), "--format", "table", "--kcore", "0",
                "--data-dir", str(root / "data"), env=env)
        sweep = ["sweep", "dropout", "0.1,0.2,0.3,0.4", "--seeds", "2", "--dataset", "syn",
                 "--model", args.model,
                 "--epochs", str(args.epochs), "--device", "cpu", "--data-dir",
                 str(root / "data")]
        local = matrrec(*sweep, "--results-dir", str(root / "local"), env=env)
        ray = matrrec(*sweep, "--results-dir", str(root / "ray"), "--executor", "ray",
                      "--cpus-per-run", "1", env=env)
    print(f"8-run {args.model} sweep ({args.users} users, {args.epochs} epochs each, "
          f"{os.cpu_count()} CPUs)")
    print(f"  local, one thread:            {local:7.1f} s")
    print(f"  ray, 2 one-thread workers:    {ray:7.1f} s")
    print(f"  speed-up local / ray:         {local / ray:7.2f}x")
    ddp = Path(__file__).with_name("bench_ddp.py")
    if ddp.exists():
        print("training step, 1 vs 2 gloo ranks:")
        subprocess.run([sys.executable, str(ddp)], check=True)


if __name__ == "__main__":
    main()
