"""The speed options side by side in one invocation: train s/epoch and full-sort s per option set.

Each option set is one `matrrec profile` cell (fresh worker process, same data, model, batches
and repeats); the sets run interleaved round by round (default, A, B, ..., default, A, B, ...)
so that a slow spell of a noisy machine touches every set alike, and each set's median over the
rounds is reported with its speed-up over the first set (the default unless --sets says
otherwise).

`--scan-impl` runs every set, the default row included, with that Mamba scan (the set's own
scan_impl, if it names one, wins), so the CPU scans compare as
  --scan-impl torch --sets scan_impl=kernel
`--synthetic-like` times on synthetic data of the dataset's Table 1 size (no download needed).

Example:
  python bench/speed_options.py --dataset musical --model matrrec \
      --sets skip_padding=true \
      --sets skip_padding=true,bucket_by_length=true \
      --sets skip_padding=true,bucket_by_length=true,readout_only=true \
      --out results/published/bench/speed_options.csv

`--out` writes each set's medians as a CSV (temp file, then rename): the README's speed-options
table is `matrrec report bench speed_options`, rendered from the published one.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--max-len", type=int, default=None, help="default: datasets.toml")
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--sets", action="append", default=[], metavar="K=V,K=V",
                    help="one option set (comma list of --set pairs); repeatable. The default "
                         "configuration is always the first row")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-batches", type=int, default=None)
    ap.add_argument("--data-dir", type=Path, default=REPO / "data")
    ap.add_argument("--scan-impl", choices=("auto", "kernel", "torch"), default=None,
                    help="Mamba scan of every set (MaTrRec, Mamba4Rec); default: the model's")
    ap.add_argument("--synthetic-like", action="store_true",
                    help="synthetic data of the dataset's Table 1 size instead of the prepared")
    ap.add_argument("--out", type=Path, default=None,
                    help="write the rows as a CSV here (replaced whole)")
    args = ap.parse_args()

    from matrrec_cli.data.registry import training_defaults
    from matrrec_cli.experiments.profile import run_cell

    max_len = args.max_len or training_defaults(args.dataset, args.data_dir).max_len
    option_sets = [()] + [tuple(p for p in s.split(",") if p) for s in args.sets]
    base = (f"scan_impl={args.scan_impl}",) if args.scan_impl else ()
    times: dict[tuple[str, ...], list[tuple[float, float]]] = {s: [] for s in option_sets}
    threads = 0
    for _ in range(args.rounds):
        for sets in option_sets:
            cell = run_cell({"dataset": args.dataset, "model": args.model, "max_len": max_len,
                             "synthetic": args.synthetic_like, "device": "cpu",
                             "data_dir": str(args.data_dir), "repeats": 1, "warmup": 1,
                             "max_batches": args.max_batches, "preset": args.preset,
                             "sets": base + sets})
            times[sets].append((cell["train_s_per_epoch"], cell["inference_s"]))
            threads = cell["threads"]

    import pandas as pd

    from matrrec_cli.experiments.bench import speed_options
    from matrrec_cli.io import write_csv

    df = pd.DataFrame([{"dataset": args.dataset, "synthetic": args.synthetic_like,
                        "model": args.model, "max_len": max_len, "preset": args.preset,
                        "scan_impl": args.scan_impl or "", "rounds": args.rounds,
                        "threads": threads, "options": ",".join(sets),
                        "train_s_per_epoch": statistics.median(t for t, _ in ts),
                        "inference_s": statistics.median(e for _, e in ts)}
                       for sets, ts in times.items()])
    # the table `matrrec report bench speed_options` renders from the CSV: one place computes
    # the speed-ups
    title, table = speed_options(df, args.out or Path("(this run)"))
    print(f"{title}{' (synthetic data)' if args.synthetic_like else ''}:")
    print(table.to_string(index=False))
    if args.out:
        write_csv(df, args.out)
        print(f"written {args.out}")


if __name__ == "__main__":
    main()
