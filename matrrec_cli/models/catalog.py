"""The model registry described for a person: kind, objectives, and what the paper preset sets."""

from __future__ import annotations

import re
import sys
from typing import Any

from matrrec_cli.models import get_model_class, model_names


def model_rows() -> list[dict[str, Any]]:
    """One row per registered model, in registry order."""
    rows = []
    for name in model_names():
        cls = get_model_class(name)
        preset = cls.paper_overrides(dropout=0.4)
        rows.append({
            "name": name,
            "kind": "neural" if cls.trainable else "count-based (no training)",
            "objectives": (["prefix", "all"] if cls.supports_all_objective else ["prefix"])
            if cls.trainable else ["-"],
            "paper_preset": ", ".join(f"{k}={'p' if v == 0.4 else v}" for k, v in preset.items())
            or "model defaults",
            "description": _first_line(cls.__doc__ or sys.modules[cls.__module__].__doc__),
        })
    return rows


def _first_line(doc: str | None) -> str:
    line = next(iter((doc or "").strip().splitlines()), "")
    return re.sub(r"\s*\(protocol §[^)]*\)", "", line)  # our working notes, not the user's
