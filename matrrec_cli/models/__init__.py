"""The model zoo: a registry the CLI can list without importing torch.

Every model is one module with one class implementing `SequentialRecommender` (see base.py).
`MODEL_PATHS` maps the lowercase name used on the command line to "module:Class"; the module is
imported only when that model is built, so optional heavy dependencies stay optional.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING, Any

from matrrec_cli.errors import MatrrecError, UsageError

if TYPE_CHECKING:
    from matrrec_cli.models.base import SequentialRecommender

MODEL_PATHS: dict[str, str] = {
    "matrrec": "matrrec_cli.models.matrrec:MaTrRec",
    "gru4rec": "matrrec_cli.models.gru4rec:GRU4Rec",
    "narm": "matrrec_cli.models.narm:NARM",
    "sasrec": "matrrec_cli.models.sasrec:SASRec",
    "nextitnet": "matrrec_cli.models.nextitnet:NextItNet",
    "bert4rec": "matrrec_cli.models.bert4rec:BERT4Rec",
    "sine": "matrrec_cli.models.sine:SINE",
    "core": "matrrec_cli.models.core:CORE",
    "mamba4rec": "matrrec_cli.models.mamba4rec:Mamba4Rec",
    # beyond the paper: count-based reference points, no gradient training
    "markov": "matrrec_cli.models.markov:Markov",
    "sr": "matrrec_cli.models.sr:SR",
    "itemknn": "matrrec_cli.models.itemknn:ItemKNN",
    "sknn": "matrrec_cli.models.sknn:SKNN",
    "vsknn": "matrrec_cli.models.sknn:VSKNN",
    "ease": "matrrec_cli.models.ease:EASE",
    "pop": "matrrec_cli.models.pop:Pop",
}


def model_names() -> list[str]:
    """Names accepted by `--model`, in registry order."""
    return list(MODEL_PATHS)


def get_model_class(name: str) -> type[SequentialRecommender]:
    """Import and return the class registered under `name`."""
    key = name.lower()
    if key not in MODEL_PATHS:
        raise MatrrecError(f"unknown model {name!r}; known models: {', '.join(MODEL_PATHS)}")
    module_name, cls_name = MODEL_PATHS[key].split(":")
    cls: type[SequentialRecommender] = getattr(importlib.import_module(module_name), cls_name)
    return cls


def make_config(name: str, overrides: dict[str, Any] | None = None) -> Any:
    """The model's Config dataclass with `overrides` applied; an unknown key is an error."""
    cls = get_model_class(name)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = sorted(set(overrides or {}) - fields)
    if unknown:
        raise MatrrecError(
            f"unknown setting(s) {', '.join(unknown)} for model {name!r}; "
            f"known: {', '.join(sorted(fields))}"
        )
    config = cls.Config(**(overrides or {}))
    check_values(name, config)
    return config


def check_values(name: str, config: Any) -> None:
    """Reject values no model can train with, before anything is built: every int setting here
    is a size or a count (>= 1); every float is finite and >= 0, a dropout below 1, an epsilon
    or temperature above 0."""
    import math

    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, bool):
            continue
        bad = None
        if isinstance(value, int) and value < 1:
            bad = "must be at least 1"
        elif isinstance(value, float):
            if not math.isfinite(value) or value < 0:
                bad = "must be a finite number >= 0"
            elif "dropout" in f.name and value >= 1:
                bad = "must be in [0, 1)"
            elif f.name in ("layer_norm_eps", "temperature") and value == 0:
                bad = "must be above 0"
        if bad:
            raise UsageError(f"model {name!r}: {f.name}={value!r} {bad} (--set {f.name}=...)")


def build_model(
    name: str, *, n_items: int, max_len: int, overrides: dict[str, Any] | None = None
) -> SequentialRecommender:
    """Construct model `name` for a catalogue of `n_items` ids (padding 0 included)."""
    cls = get_model_class(name)
    return cls(n_items=n_items, max_len=max_len, config=make_config(name, overrides))
