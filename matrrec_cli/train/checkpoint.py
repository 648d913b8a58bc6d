"""Checkpoints and random state: what makes a run resumable to the bit.

Checkpoints hold only tensors and plain values, so they load with torch.load(weights_only=True):
a checkpoint is data, never code. Anything unreadable is one error naming the file and what to do.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from matrrec_cli.errors import MatrrecError
from matrrec_cli.io import atomic_path


def seed_everything(seed: int) -> None:
    """RecBole's init_seed: python, numpy, torch (and CUDA) seeded; deterministic cuDNN."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 -- the legacy global RNG is what RecBole seeds
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def rng_state(gen: torch.Generator) -> dict[str, Any]:
    kind, key, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "shuffle": gen.get_state(),
    }


def set_rng_state(state: dict[str, Any], gen: torch.Generator) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, key.numpy().astype(np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    gen.set_state(state["shuffle"])


def save(obj: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


LAST_KEYS = ("model", "optimizer", "epoch", "early_stopping", "history", "elapsed", "rng",
             "config_hash")
# refit_last.pt: the same, without early stopping (the refit's epoch count is fixed)
REFIT_KEYS = tuple(k for k in LAST_KEYS if k not in ("early_stopping", "history"))


def load_checkpoint(path: Path, keys: tuple[str, ...] = ("model",)) -> dict[str, Any]:
    """A checkpoint with at least `keys`, loaded as data (weights_only: never code); anything
    unreadable is one error that names the file and what to do."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MatrrecError(f"{path} is missing; train the run again (matrrec train)") from None
    except Exception as exc:  # torn write, random bytes, a pickle that is not plain data
        raise MatrrecError(f"{path} is corrupt ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:120] if str(exc) else ''}); "
                           f"{REBUILD.get(path.name, 'train it again')}") from None
    missing = [k for k in keys if not isinstance(ck, dict) or k not in ck]
    if missing:
        raise MatrrecError(f"{path} is corrupt (no {', '.join(missing)}); "
                           f"{REBUILD.get(path.name, 'train it again')}")
    return ck


REBUILD = {  # what a user does about a bad checkpoint, by file name
    "last.pt": "delete it and train without --resume (the run starts over)",
    "best.pt": "delete the run directory and train it again",
    "refit_last.pt": "delete it and train with --resume (the refit starts over)",
    "refit.pt": "delete the run directory and train it again",
}


def restore(model: torch.nn.Module, state: dict[str, Any], path: Path) -> None:
    """load_state_dict, with a wrong or mismatched state as one error naming the file."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise MatrrecError(f"{path} does not fit this model ({str(exc).splitlines()[0][:120]}); "
                           f"{REBUILD.get(path.name, 'train it again')}") from None
