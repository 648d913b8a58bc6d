"""Choose a count model's settings on the validation split (sr, itemknn, sknn, vsknn, ease, ...).

Count models have no epochs, so their hyper-parameters are chosen the plain way: fit on what is
known before the validation targets (`fit_data(split="valid")`), rank the validation targets with
the evaluator the trainer uses, and keep the grid point with the highest valid NDCG@10 (full
precision; a tie keeps the earlier point in grid order). The test split takes no part: train the
winner with `matrrec train --model M --set k=v ...` to get its test metrics.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch

from matrrec_cli.data.split import SplitData
from matrrec_cli.errors import MatrrecError
from matrrec_cli.models import build_model, get_model_class
from matrrec_cli.train.config import TRAINER_DEFAULTS
from matrrec_cli.train.evaluate import evaluate

SCORE = "ndcg@10"  # RecBole's valid_metric, as `matrrec tune`


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the first key varying slowest."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True))
            for values in itertools.product(*(grid[k] for k in keys))]


def choose_on_validation(
    model: str, data: SplitData, *, grid: dict[str, list[Any]] | None = None,
    base: dict[str, Any] | None = None, mask_history: bool = False,
    device: torch.device | str = "cpu",
    batch_size: int = TRAINER_DEFAULTS["eval_batch_size"],
) -> tuple[dict[str, Any], list[tuple[dict[str, Any], float]]]:
    """The best overrides of count model `model` on `data`'s validation split, and the table of
    (overrides, valid NDCG@10) of every grid point, in grid order. `grid` defaults to the
    model's own `grid` (models/sr.py's CountScorer); `base` holds overrides shared by every
    point."""
    cls = get_model_class(model)
    if cls.trainable:
        raise MatrrecError(f"{model} is trained, not counted; tune it with `matrrec tune`")
    if grid is None:  # pop and markov have none: their one point is the defaults
        grid = getattr(cls, "grid", {})
    table: list[tuple[dict[str, Any], float]] = []
    for point in grid_points(grid):
        overrides = {**(base or {}), **point}
        m = build_model(model, n_items=data.seqs.n_items, max_len=data.max_len,
                        overrides=overrides)
        m.fit_data(data.seqs.items, data.seqs.offsets, split="valid")
        m.to(device)
        res = evaluate(m, data, split="valid", device=device, batch_size=batch_size,
                       mask_history=mask_history)
        table.append((overrides, res.metrics[SCORE]))
    if not table:
        raise MatrrecError(f"the grid for {model} has no points")
    best = max(range(len(table)), key=lambda i: (table[i][1], -i))  # tie: the earlier point
    return table[best][0], table
