"""The torch device a run uses, checked before anything is written."""

from __future__ import annotations

import re

import torch

from matrrec_cli.errors import UsageError

_CUDA = re.compile(r"^cuda(:\d+)?$")


def resolve_device(device: str) -> torch.device:
    """auto (CUDA when torch sees a GPU, else CPU), cpu, cuda or cuda:N; a usage error for
    anything else and for CUDA on a machine without one."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if not _CUDA.match(device):
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, not {device!r}")
    if not torch.cuda.is_available():
        raise UsageError(f"--device {device} was asked for but torch sees no CUDA GPU here; "
                         "use --device cpu (or auto)")
    index = torch.device(device).index
    if index is not None and index >= torch.cuda.device_count():
        raise UsageError(f"--device {device}: torch sees {torch.cuda.device_count()} GPU(s)")
    return torch.device(device)
