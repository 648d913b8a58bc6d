"""Our Mamba block against mamba_ssm's fused CUDA kernels (issue 3 item 3).

Skipped without CUDA or without importable mamba_ssm kernels. Run: pytest tests/gpu -m gpu
"""

from __future__ import annotations

import pytest
import torch

from matrrec_cli.models.mamba import Mamba, cuda_backend_available, cuda_backend_reason


def _skip_reason() -> str | None:
    if not torch.cuda.is_available():
        return "needs CUDA"
    if not cuda_backend_available():
        return f"needs mamba_ssm kernels: {cuda_backend_reason()}"
    return None


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason())),
]

RTOL = 1e-4  # fp32 kernels vs our fp32 scan: ~1e-5 relative expected (protocol §7)


def _faithful(m: torch.nn.Module) -> None:
    for mod in m.modules():
        if isinstance(mod, torch.nn.Linear):
            torch.nn.init.normal_(mod.weight, std=0.02)
            if mod.bias is not None:
                torch.nn.init.zeros_(mod.bias)


def _run(m: torch.nn.Module, x: torch.Tensor, g: torch.Tensor):
    x = x.clone().requires_grad_()
    m.zero_grad()
    out = m(x)
    out.backward(g)
    return [out, x.grad, *(p.grad for p in m.parameters())]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize("init", ["native", "faithful"])
@pytest.mark.parametrize("L", [50, 200])
def test_matches_mamba_ssm_fused(init: str, L: int) -> None:
    from mamba_ssm.modules.mamba_simple import Mamba as RefMamba

    torch.manual_seed(0)
    ref = RefMamba(d_model=64, d_state=32, d_conv=4, expand=2).cuda()  # fused fast path
    if init == "faithful":
        _faithful(ref)
    ours = Mamba(d_model=64, d_state=32, d_conv=4, expand=2, backend="torch").cuda()
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(16, L, 64, device="cuda")
    g = torch.randn(16, L, 64, device="cuda")
    want = _run(ref, x, g)
    got = _run(ours, x, g)
    assert ours.last_backend == "torch"
    for a, b in zip(got, want, strict=True):
        assert _rel(a, b) < RTOL


def test_cuda_backend_runs_the_kernels_and_agrees() -> None:
    torch.manual_seed(1)
    fast = Mamba(d_model=64, d_state=32, backend="cuda").cuda()
    slow = Mamba(d_model=64, d_state=32, backend="torch").cuda()
    slow.load_state_dict(fast.state_dict(), strict=True)
    x = torch.randn(8, 200, 64, device="cuda")
    g = torch.randn_like(x)
    got, want = _run(fast, x, g), _run(slow, x, g)
    assert fast.last_backend == "cuda"
    for a, b in zip(got, want, strict=True):
        assert _rel(a, b) < RTOL
    auto = Mamba(d_model=64, d_state=32, backend="auto").cuda()
    auto(x)
    assert auto.last_backend == "cuda"
