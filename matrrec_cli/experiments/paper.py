"""The paper's published numbers (Tables 2 and 3), for printing beside ours.

They live in `matrrec_cli/paper_tables.toml`, transcribed from the paper; nothing here computes
them. `outside` is the check the Table 2 report applies: our mean is more than two of our
standard deviations (over seeds) away from the paper's value.
"""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path
from typing import Any

_PATH = Path(__file__).resolve().parent.parent / "paper_tables.toml"


@functools.cache
def _tables() -> dict[str, Any]:
    with _PATH.open("rb") as f:
        return tomllib.load(f)


def table2_value(dataset: str, model: str, metric: str) -> float | None:
    """The paper's Table 2 value, or None where the paper has none (e.g. ml-100k)."""
    return _tables()["table2"].get(dataset, {}).get(model, {}).get(metric)


def table3_value(dataset: str, label: str, metric: str) -> float | None:
    """The paper's Table 3 value for an ablation row label (ablation.variants' labels)."""
    return _tables()["table3"].get(dataset, {}).get(label, {}).get(metric)


def outside(mean: float, std: float | None, paper: float | None) -> bool | None:
    """True when |mean - paper| > 2 std; None when there is no paper value or no std
    (fewer than two seeds), so no claim is made either way."""
    if paper is None or std is None or std != std:
        return None
    return abs(mean - paper) > 2 * std
