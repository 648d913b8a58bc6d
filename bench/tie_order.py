"""How much the same-day tie-break moves the Musical split's numbers (issue 8, Table 2 deviations).

Amazon 2014 timestamps have day granularity: on the Musical 5-core dump 44 % of users have their
test item on the same day as their valid item, so which one is held out for test is decided by
the tie-break alone (protocol §2 step 5: file order, i.e. asin order). This script imports the dump
twice through `matrrec import` — in file order and in reversed file order — and trains the given
models on both, printing test NDCG@10 / Recall@10 side by side.

Example: python bench/tie_order.py --models pop,markov
         python bench/tie_order.py --models sasrec --set readout_only=true   (minutes on a CPU)
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from matrrec_cli.data.prepared import load_interactions  # noqa: E402

DUMP = REPO.parent / "shared" / "data" / "musical" / "reviews_Musical_Instruments_5.json.gz"


def _matrrec(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "matrrec_cli", *args], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr.strip().splitlines()[-1])
    return proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dump", type=Path, default=DUMP)
    ap.add_argument("--models", default="pop,markov")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args()
    with gzip.open(args.dump, "rt") as f:
        rows = [json.loads(line) for line in f]
    df = pd.DataFrame({"user": [r["reviewerID"] for r in rows], "item": [r["asin"] for r in rows],
                       "timestamp": [r["unixReviewTime"] for r in rows]})
    with tempfile.TemporaryDirectory() as tmp:
        data, results = Path(tmp, "data"), Path(tmp, "results")
        for name, frame in (("file", df), ("reversed", df.iloc[::-1])):
            csv = Path(tmp, f"{name}.csv")
            frame.to_csv(csv, index=False)
            _matrrec("import", f"musical-{name}", "--from-file", str(csv), "--format", "table",
                     "--data-dir", str(data))
        # the prepared rows are in the toolkit's own (user, time, tie-break) order
        ts = load_interactions("musical-file", data).groupby("user")["timestamp"]
        tied = (ts.nth(-1).to_numpy() == ts.nth(-2).to_numpy()).mean()
        print(f"users whose test and valid items share a timestamp: {tied:.1%}")
        for model in args.models.split(","):
            cells = []
            for name in ("file", "reversed"):
                sets = [x for s in args.sets for x in ("--set", s)]
                out = _matrrec("train", "--dataset", f"musical-{name}", "--model", model,
                               "--data-dir", str(data), "--results-dir", str(results), "--json",
                               *sets)
                test = json.loads(out)["test"]
                cells.append(f"{name} order {test['ndcg@10']:.4f} / {test['recall@10']:.4f}")
            print(f"{model}: test NDCG@10 / Recall@10: " + ", ".join(cells))


if __name__ == "__main__":
    main()
