"""How much of a count model's test score comes from the valid item (issue 21, the refit option).

Under leave-one-out the test history ends with the valid item. A count model (markov, sr, ...)
counts everything known before each target, so at test time it also counts every user's valid
transition; an early-stopped network was trained on the train targets only. This script scores
the count models' test split twice: with the counts known before the test targets (as Table 2
does) and with the counts known before the valid targets ("stale": what the network knows).

Example: python bench/stale_counts.py --dataset musical --models markov,sr
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from matrrec_cli.train import pipeline  # noqa: E402
from matrrec_cli.train.config import TrainConfig  # noqa: E402
from matrrec_cli.train.evaluate import evaluate_split, fit_known  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="musical")
    ap.add_argument("--models", default="markov,sr")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--max-len", type=int, default=50)
    args = ap.parse_args()
    print("dataset model valid(counts before valid) test(counts before test) "
          "test(counts before valid) share_from_valid_item")
    for name in args.models.split(","):
        cfg = TrainConfig(dataset=args.dataset, model=name, dropout=None, model_config={},
                          sources={}, max_len=args.max_len, data_dir=args.data_dir)
        data = pipeline.load_split(cfg)
        model = pipeline.model_builder(cfg, data.seqs.n_items)()
        out = []
        for fitted, scored in (("valid", "valid"), ("test", "test"), ("valid", "test")):
            fit_known(model, data, fitted)
            res = evaluate_split(model, data, cfg, split=scored, device=torch.device("cpu"))
            out.append(res.metrics["ndcg@10"])
        share = (out[1] - out[2]) / out[1]
        print(args.dataset, name, *(f"{x:.4f}" for x in out), f"{100 * share:.1f}%")


if __name__ == "__main__":
    main()
