"""Provenance recorded with every result: package versions, git revision, machine."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import matrrec_cli

_PACKAGES = ("torch", "numpy", "pandas", "pyarrow", "scipy", "mamba-ssm", "causal-conv1d")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that can change results (None when absent)."""
    out: dict[str, str | None] = {"matrrec": matrrec_cli.__version__}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision() -> str | None:
    """`git describe --always --dirty` of the source checkout, or None outside one."""
    root = Path(matrrec_cli.__file__).resolve().parent.parent
    try:
        res = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=root, capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def environment(device: str | None = None) -> dict[str, Any]:
    """Everything needed to say where a number came from."""
    env: dict[str, Any] = {
        "versions": package_versions(),
        "git_revision": git_revision(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }
    import torch
    import torch.distributed as dist

    # Intra-op threads change the order of float reductions, so a rerun with another count
    # can differ in the last digits on the same machine.
    env["torch_threads"] = torch.get_num_threads()
    # How many ranks ran it (matrrec train --nproc-per-node): they sum gradients in another order
    # and draw other dropout masks, so their numbers match one process's to rounding only.
    if dist.is_available() and dist.is_initialized():
        env["world_size"], env["backend"] = dist.get_world_size(), dist.get_backend()
    else:
        env["world_size"] = 1
    if device is not None:
        env["device"] = device
        if device.startswith("cuda"):
            env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env
