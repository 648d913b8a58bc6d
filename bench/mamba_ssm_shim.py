"""Import mamba_ssm's Python source from an extracted sdist, for bench/gpu_check.sh.

mamba_ssm's package `__init__` imports every model (Mamba2, the LM head, `transformers`), and
`ops/selective_scan_interface.py` imports the compiled `selective_scan_cuda` unconditionally. For
a parity check we need only `modules/mamba_simple.py` and `selective_scan_ref`, so `install`
registers `mamba_ssm` as a bare package (its `__init__` is skipped) and, with `stub_kernels`, puts
empty stand-ins for the CUDA extensions in `sys.modules` (no kernel is called: the check replaces
the scan with mamba_ssm's own `selective_scan_ref` and `causal_conv1d` is made absent, which is
mamba_simple's documented fallback to `nn.Conv1d`).
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path


def install(src: str | Path, *, stub_kernels: bool, conv_src: str | Path | None = None) -> None:
    """Make `import mamba_ssm.<submodule>` load from `src` (an extracted mamba_ssm sdist)."""
    root = Path(src).resolve()
    if not (root / "mamba_ssm").is_dir():
        raise FileNotFoundError(f"{root} has no mamba_ssm/ package")
    sys.path.insert(0, str(root))  # selective_scan_cuda*.so, when built in place, lives here
    if conv_src is not None:
        sys.path.insert(0, str(Path(conv_src).resolve()))
    pkg = types.ModuleType("mamba_ssm")
    pkg.__path__ = [str(root / "mamba_ssm")]
    pkg.__file__ = str(root / "mamba_ssm" / "__init__.py")
    sys.modules["mamba_ssm"] = pkg
    if stub_kernels:
        sys.modules["selective_scan_cuda"] = types.ModuleType("selective_scan_cuda")
        sys.modules["causal_conv1d"] = None  # type: ignore[assignment]  # -> ImportError
        sys.modules["causal_conv1d_cuda"] = None  # type: ignore[assignment]
    # The Triton layer-norm ops are imported at module level by newer versions but used only
    # with the rms-norm options that Mamba (v1) does not set; stub them where Triton fails.
    try:
        importlib.import_module("mamba_ssm.ops.triton.layer_norm")
    except Exception as exc:  # Triton absent or incompatible: any failure means "stub it"
        stub = types.ModuleType("mamba_ssm.ops.triton.layer_norm")
        stub.__doc__ = f"stub: {type(exc).__name__}: {exc}"
        for name in ("_layer_norm_fwd", "RMSNorm", "layer_norm_fn", "rms_norm_fn"):
            setattr(stub, name, None)
        sys.modules["mamba_ssm.ops.triton.layer_norm"] = stub


def mamba_simple_with_ref_scan() -> types.ModuleType:
    """mamba_ssm.modules.mamba_simple with its scan replaced by mamba_ssm's `selective_scan_ref`."""
    iface = importlib.import_module("mamba_ssm.ops.selective_scan_interface")
    simple = importlib.import_module("mamba_ssm.modules.mamba_simple")
    simple.selective_scan_fn = iface.selective_scan_ref
    simple.causal_conv1d_fn = None
    return simple
