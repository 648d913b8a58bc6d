"""Full-sort evaluation over every item (protocol §4).

Each user's valid (or test) history is scored against all items; the padding column is set to
-inf so it is never ranked; items the user already saw stay rankable by default (RecBole's
sequential convention, issues #1823/#1449), `mask_history=True` masks them (S3Rec/FMLP style).
Rows are independent, so the ranks, hence the metrics, do not depend on the batch size (tested).
On several ranks (distributed.py) each rank scores every world-th of the batches one process
would score, and the ranks of all users are gathered before any metric is computed.
With `bucket` (the bucket_by_length option) users are ranked in small batches of similar history
length, each trimmed to its longest history; for a model that ignores right padding that computes
the same scores up to float rounding, with far less padding where histories vary in length.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import torch

from matrrec_cli.data.split import SplitData, history_mask_indices
from matrrec_cli.models.base import SequentialRecommender
from matrrec_cli.train import distributed
from matrrec_cli.train.config import TRAINER_DEFAULTS, TrainConfig
from matrrec_cli.train.metrics import metrics_from_ranks, ranks_from_scores
from matrrec_cli.train.samples import make_batch

# Users per length bucket: small enough that a bucket's lengths are close, large enough that the
# per-batch overhead and the (B, n_items) score matmul stay efficient.
EVAL_BUCKET = 256


@dataclasses.dataclass(frozen=True)
class EvalResult:
    split: str
    users: np.ndarray  # (U,) user ids
    ranks: np.ndarray  # (U,) 1-based rank of each user's target
    metrics: dict[str, float]  # full precision, averaged over users


SCORES_BUDGET = 512 * 2**20  # bytes of one evaluation batch's users x items scores


@torch.no_grad()
def evaluate(
    model: SequentialRecommender,
    data: SplitData,
    *,
    split: str,
    device: torch.device | str = "cpu",
    batch_size: int = TRAINER_DEFAULTS["eval_batch_size"],
    mask_history: bool = False,
    bucket: bool = False,
) -> EvalResult:
    """Rank each user's held-out item among all items; metrics averaged over users (all of
    them, also on several ranks)."""
    samples = {"valid": data.valid, "test": data.test}[split]
    was_training = model.training
    model.eval()
    ranks = np.zeros(len(samples), dtype=np.int64)
    # a batch's score block (users x items, float32) stays within the budget at any catalog
    # size; the batch size cannot change a rank, so neither can this
    batch_size = max(1, min(batch_size, SCORES_BUDGET // (4 * data.seqs.n_items)))
    if bucket:
        order = np.argsort(samples.lengths, kind="stable")
        step = min(batch_size, EVAL_BUCKET)
    else:
        order, step = np.arange(len(samples)), batch_size
    batches = [order[lo:lo + step] for lo in range(0, len(samples), step)]
    for idx in distributed.my_batches(batches):  # all of them in one process
        part = samples.take(idx)
        batch = make_batch(data, part, split=split, trim=bucket).to(device)
        scores = model.full_sort_scores(batch.item_seq, batch.lengths).float()  # (B, n_items)
        scores[:, 0] = -torch.inf  # padding is never a candidate
        if mask_history:
            row, item = history_mask_indices(data, part, split=split)
            scores[torch.from_numpy(row).to(device), torch.from_numpy(item).to(device)] = -torch.inf
        ranks[idx] = ranks_from_scores(scores, batch.target).cpu().numpy()
    ranks = distributed.gather_ranks(ranks, batches)  # as is in one process
    model.train(was_training)
    return EvalResult(split=split, users=samples.user.copy(), ranks=ranks,
                      metrics=metrics_from_ranks(ranks))


def fit_known(model: SequentialRecommender, data: SplitData, split: str) -> None:
    """Give a count model what is known before `split`'s targets, in the order that split's
    samples see (its own under the shuffle test); a trained model ignores it."""
    model.fit_data(data.sequences(split).items, data.seqs.offsets, split=split)


def ranks_frame(results: list[EvalResult]) -> pd.DataFrame:
    """Per-user ranks of several splits in one long table (user, split, rank) for significance
    tests (e.g. a paired Wilcoxon test between two runs' NDCG per user)."""
    return pd.concat(
        [pd.DataFrame({"user": r.users.astype(np.int64), "split": r.split, "rank": r.ranks})
         for r in results],
        ignore_index=True,
    )


def evaluate_split(model: SequentialRecommender, data: SplitData, cfg: TrainConfig, *,
                   split: str, device: torch.device | str) -> EvalResult:
    """`evaluate` with the run's own evaluation settings (batch size, history masking,
    length buckets): the one call the trainer, `matrrec evaluate` and profile share."""
    return evaluate(model, data, split=split, device=device, batch_size=cfg.eval_batch_size,
                    mask_history=cfg.mask_history, bucket=cfg.bucket_by_length)
