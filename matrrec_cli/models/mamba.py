"""The Mamba block in plain PyTorch, parameter-compatible with `mamba_ssm.Mamba` (protocol §7).

Same constructor, submodule and parameter names and shapes as mamba_ssm 2.2.2 `mamba_simple.py`
(in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj), so `load_state_dict(strict=True)` works in
both directions and one checkpoint serves CPU and GPU. The forward math is §7 steps 1-8; the
selective scan (step 6) is `matrrec_cli.models.scan.selective_scan`.

Backends: "torch" always runs our code; "cuda" runs mamba_ssm's fused kernels (`mamba_inner_fn`)
and fails clearly when they cannot be used; "auto" takes the kernels only when mamba_ssm imports
and the input is on a CUDA device. mamba_ssm is imported lazily, and only there: on a CPU machine
`import mamba_ssm` fails (no `selective_scan_cuda`, see reference/mamba-on-cpu.md).

Scan implementations of "our code" (`scan_impl`): "kernel" runs the numba loops of
scan_kernel.py (CPU tensors; optional dependency, `pip install 'matrrec[numba]'`): the selective
scan with its gate, and the causal conv + SiLU before it; "torch" the eager scan of scan.py and
nn.Conv1d; "auto" the kernels on CPU tensors when numba imports, else eager. CUDA tensors always
run eager (or mamba_ssm's kernels, as above). numba is imported at the first CPU forward that may
use it, never at import.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from matrrec_cli.errors import MatrrecError, UsageError
from matrrec_cli.models.scan import selective_scan

Backend = Literal["auto", "torch", "cuda"]
ScanImpl = Literal["auto", "kernel", "torch"]
SCAN_IMPLS = ("auto", "kernel", "torch")
_INSTALL_HINT = (
    "build the kernels on a CUDA machine as docs/gpu.md says (pip install hatchling editables "
    "setuptools wheel packaging ninja && MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE "
    "pip install --no-build-isolation -e '.[cuda]')"
)


@functools.cache
def _mamba_ssm() -> tuple[dict[str, Any] | None, str]:
    """mamba_ssm's kernel entry points, or None and why not. Import failures vary (missing
    module, CUDA library mismatch, driver errors), so all of them are caught."""
    try:
        from mamba_ssm.ops.selective_scan_interface import mamba_inner_fn, selective_scan_fn
    except (ImportError, OSError, RuntimeError, AttributeError) as exc:
        return None, f"mamba_ssm does not import ({type(exc).__name__}: {exc})"
    try:
        from causal_conv1d import causal_conv1d_fn
    except (ImportError, OSError, RuntimeError, AttributeError):
        causal_conv1d_fn = None  # mamba_ssm then runs its slow path: torch conv + fused scan
    fns = {"mamba_inner_fn": mamba_inner_fn, "selective_scan_fn": selective_scan_fn,
           "causal_conv1d_fn": causal_conv1d_fn}
    conv = "with causal_conv1d" if causal_conv1d_fn is not None else "without causal_conv1d"
    return fns, f"mamba_ssm kernels import ({conv})"


def cuda_backend_available() -> bool:
    """True when mamba_ssm's kernels import here (they run only on CUDA tensors)."""
    return _mamba_ssm()[0] is not None


def cuda_backend_reason() -> str:
    """One line saying why the fused backend is or is not available (in the error of
    `--set mamba_backend=cuda` where it cannot run, and in the GPU checks)."""
    return _mamba_ssm()[1]


@functools.cache
def _scan_kernel() -> Any:
    """The numba scan module, imported on first use (it imports numba, ~1 s)."""
    from matrrec_cli.models import scan_kernel

    return scan_kernel


def scan_kernel_available() -> bool:
    """True when the numba scan kernel can run here (numba imports)."""
    return bool(_scan_kernel().available())


def check_scan_impl(scan_impl: str) -> None:
    """Reject a scan_impl other than auto, kernel or torch, and "kernel" where numba is missing."""
    if scan_impl not in SCAN_IMPLS:
        raise UsageError(f"scan_impl must be auto, kernel or torch, not {scan_impl!r} "
                         "(--set scan_impl=...)")
    if scan_impl == "kernel" and not scan_kernel_available():
        raise UsageError(f"scan_impl 'kernel' needs numba, but {_scan_kernel().reason()} "
                         "(or --set scan_impl=torch)")


def resolved_scan_impl(scan_impl: str, device: torch.device | str) -> str:
    """The scan that `scan_impl` runs for tensors on `device`: "kernel" (numba, CPU only) or
    "torch" (for the run records; on CUDA the block may run mamba_ssm's kernels instead, which
    `Mamba.last_backend` says)."""
    check_scan_impl(scan_impl)
    if torch.device(device).type != "cpu" or scan_impl == "torch":
        return "torch"
    return "kernel" if scan_kernel_available() else "torch"


class Mamba(nn.Module):
    """Selective state-space block; input and output (B, L, d_model)."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        use_fast_path: bool = True,  # mamba_ssm's fused in_proj..out_proj kernel when on "cuda"
        layer_idx: int | None = None,  # kept for signature compatibility (inference caches)
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        backend: Backend = "auto",
        scan_impl: ScanImpl = "auto",  # CPU scan: numba "kernel", eager "torch", or "auto"
    ) -> None:
        factory_kwargs: dict[str, Any] = {"device": device, "dtype": dtype}
        super().__init__()
        if backend not in ("auto", "torch", "cuda"):
            raise MatrrecError(f"mamba backend must be auto, torch or cuda, not {backend!r}")
        check_scan_impl(scan_impl)
        if backend == "cuda" and not cuda_backend_available():
            raise MatrrecError(
                f"mamba backend 'cuda' needs mamba_ssm's kernels, but {cuda_backend_reason()}; "
                f"use backend 'auto' or 'torch', or {_INSTALL_HINT}"
            )
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.use_fast_path = use_fast_path
        self.layer_idx = layer_idx
        self.backend = backend
        self.scan_impl = scan_impl
        self.last_backend: str | None = None  # "torch" or "cuda": what the last forward ran
        self.last_scan_impl: str | None = None  # "kernel" or "torch" when last_backend is torch

        self.in_proj = nn.Linear(d_model, self.d_inner * 2, bias=bias, **factory_kwargs)
        self.conv1d = nn.Conv1d(
            in_channels=self.d_inner,
            out_channels=self.d_inner,
            bias=conv_bias,
            kernel_size=d_conv,
            groups=self.d_inner,  # depthwise
            padding=d_conv - 1,  # keep the first L outputs: causal (§7 step 2)
            **factory_kwargs,
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + d_state * 2, bias=False,
                                **factory_kwargs)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory_kwargs)

        # dt projection init that preserves variance (mamba_simple.py)
        dt_init_std = self.dt_rank**-0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, dt_init_std)
        elif dt_init == "random":
            nn.init.uniform_(self.dt_proj.weight, -dt_init_std, dt_init_std)
        else:
            raise MatrrecError(f"dt_init must be 'random' or 'constant', not {dt_init!r}")
        # dt bias so that softplus(bias) is log-uniform in [dt_min, dt_max]
        dt = torch.exp(
            torch.rand(self.d_inner, **factory_kwargs) * (math.log(dt_max) - math.log(dt_min))
            + math.log(dt_min)
        ).clamp(min=dt_init_floor)
        inv_dt = dt + torch.log(-torch.expm1(-dt))  # inverse softplus
        with torch.no_grad():
            self.dt_proj.bias.copy_(inv_dt)
        self.dt_proj.bias._no_reinit = True  # type: ignore[attr-defined]

        # S4D real init: A[d, n] = -(n + 1); A_log kept in fp32 like mamba_ssm
        A = torch.arange(1, d_state + 1, dtype=torch.float32, device=device)
        self.A_log = nn.Parameter(torch.log(A).repeat(self.d_inner, 1).contiguous())
        self.A_log._no_weight_decay = True  # type: ignore[attr-defined]
        self.D = nn.Parameter(torch.ones(self.d_inner, device=device))  # skip, fp32
        self.D._no_weight_decay = True  # type: ignore[attr-defined]

        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory_kwargs)

    def forward(self, hidden_states: torch.Tensor, lengths: torch.Tensor | None = None
                ) -> torch.Tensor:
        """(B, L, d_model) -> (B, L, d_model).

        `lengths` (B,), our extension: the rows are right-padded histories and the torch scan
        skips their padded steps (outputs there are 0; see `selective_scan`). The fused kernels
        have no such input and compute every step; real positions agree either way."""
        on_cuda = hidden_states.is_cuda
        if self.backend == "cuda" and not on_cuda:
            raise MatrrecError(
                "mamba backend 'cuda' needs the model and batch on a CUDA device; "
                "use --device cuda, or backend 'auto' or 'torch' on a CPU"
            )
        if on_cuda and self.backend != "torch" and cuda_backend_available():
            self.last_backend, self.last_scan_impl = "cuda", None
            return self._forward_cuda(hidden_states)
        self.last_backend = "torch"
        return self._forward_torch(hidden_states, lengths)

    def _forward_torch(self, hidden_states: torch.Tensor, lengths: torch.Tensor | None = None
                       ) -> torch.Tensor:
        L = hidden_states.shape[1]
        # The scan runs in at least fp32, like the kernels (§7: "All in fp32").
        dtype = torch.promote_types(hidden_states.dtype, torch.float32)
        self.last_scan_impl = resolved_scan_impl(self.scan_impl, hidden_states.device)
        kernels = _scan_kernel() if self.last_scan_impl == "kernel" else None
        x, z = self.in_proj(hidden_states).chunk(2, dim=-1)  # (B, L, Din) each
        if kernels is not None and x.dtype in (torch.float32, torch.float64):
            # the fused conv + SiLU: eager, they cost as much as an attention block here
            bias = self.conv1d.bias if self.conv1d.bias is not None else x.new_zeros(self.d_inner)
            x = kernels.causal_conv1d_silu(x, self.conv1d.weight, bias)  # (B, L, Din)
        else:
            x = self.conv1d(x.transpose(1, 2))[..., :L]  # (B, Din, L), causal
            x = F.silu(x).transpose(1, 2)  # (B, L, Din)
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight)  # (B, L, Din); bias is added inside the scan
        A = -torch.exp(self.A_log.to(dtype))  # (Din, N)
        scan = kernels.selective_scan_kernel if kernels is not None else selective_scan
        y = scan(
            x.to(dtype), dt.to(dtype), A, B.to(dtype), C.to(dtype), self.D.to(dtype),
            z=z.to(dtype), delta_bias=self.dt_proj.bias.to(dtype), delta_softplus=True,
            lengths=lengths,
        )  # (B, L, Din)
        return self.out_proj(y.to(hidden_states.dtype))

    def _forward_cuda(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """mamba_simple.py's forward (training path), verbatim in effect."""
        fns, _ = _mamba_ssm()
        assert fns is not None
        batch, seqlen, dim = hidden_states.shape
        # (2Din, B·L) -> (B, 2Din, L): the layout the kernels expect, as mamba_ssm builds it
        xz = (self.in_proj.weight @ hidden_states.reshape(batch * seqlen, dim).t())
        xz = xz.view(-1, batch, seqlen).permute(1, 0, 2)
        if self.in_proj.bias is not None:
            xz = xz + self.in_proj.bias.to(dtype=xz.dtype)[:, None]
        A = -torch.exp(self.A_log.float())  # (Din, N)
        if self.use_fast_path and fns["causal_conv1d_fn"] is not None:
            return fns["mamba_inner_fn"](
                xz, self.conv1d.weight, self.conv1d.bias, self.x_proj.weight,
                self.dt_proj.weight, self.out_proj.weight, self.out_proj.bias, A,
                None, None, self.D.float(),
                delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
            )
        x, z = xz.chunk(2, dim=1)  # (B, Din, L) each
        if fns["causal_conv1d_fn"] is None:
            x = F.silu(self.conv1d(x)[..., :seqlen])
        else:
            x = fns["causal_conv1d_fn"](
                x=x, weight=self.conv1d.weight.squeeze(1), bias=self.conv1d.bias,
                activation="silu",
            )
        x_dbl = self.x_proj(x.transpose(1, 2).reshape(batch * seqlen, -1))  # (B·L, R+2N)
        dt, B, C = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (self.dt_proj.weight @ dt.t()).view(-1, batch, seqlen).permute(1, 0, 2)
        B = B.view(batch, seqlen, -1).transpose(1, 2).contiguous()  # (B, N, L)
        C = C.view(batch, seqlen, -1).transpose(1, 2).contiguous()  # (B, N, L)
        y = fns["selective_scan_fn"](
            x, dt, A, B, C, self.D.float(), z=z,
            delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
        )  # (B, Din, L)
        return self.out_proj(y.transpose(1, 2))
