"""The native Mamba block and its selective scan (issue 3 items 1-3, protocol §7)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import scan_inputs

from matrrec_cli.errors import MatrrecError, UsageError
from matrrec_cli.models import mamba as mamba_mod
from matrrec_cli.models import scan as scan_mod
from matrrec_cli.models.mamba import Mamba, cuda_backend_available, cuda_backend_reason
from matrrec_cli.models.scan import selective_scan, selective_scan_ref

# mamba_ssm.Mamba(d_model=64, d_state=32, d_conv=4, expand=2) state_dict, from protocol §7.
MAMBA_SSM_SHAPES = {
    "in_proj.weight": (256, 64),
    "conv1d.weight": (128, 1, 4),
    "conv1d.bias": (128,),
    "x_proj.weight": (68, 128),
    "dt_proj.weight": (128, 4),
    "dt_proj.bias": (128,),
    "A_log": (128, 32),
    "D": (128,),
    "out_proj.weight": (64, 128),
}


def reference_block(m: Mamba, u: torch.Tensor) -> torch.Tensor:
    """Protocol §7 steps 1-8 for each sequence, one time step at a time, in float64."""
    p = {k: v.detach().double() for k, v in m.state_dict().items()}
    u = u.double()
    n_b, L, _ = u.shape
    d_in, n, k = m.d_inner, m.d_state, m.d_conv
    A = -torch.exp(p["A_log"])
    out = torch.zeros(n_b, L, m.d_model, dtype=torch.float64)
    for b in range(n_b):
        xz = u[b] @ p["in_proj.weight"].t()
        x, z = xz[:, :d_in], xz[:, d_in:]
        h = torch.zeros(d_in, n, dtype=torch.float64)
        for t in range(L):
            xt = p["conv1d.bias"].clone()
            for j in range(k):  # x̃_t = b + Σ_j w[:, 0, j] x_{t-k+1+j}, zeros before the start
                s = t - k + 1 + j
                if s >= 0:
                    xt = xt + p["conv1d.weight"][:, 0, j] * x[s]
            xc = xt * torch.sigmoid(xt)
            dbc = p["x_proj.weight"] @ xc
            dt_low, Bt, Ct = dbc[: m.dt_rank], dbc[m.dt_rank: m.dt_rank + n], dbc[m.dt_rank + n:]
            delta = F.softplus(p["dt_proj.weight"] @ dt_low + p["dt_proj.bias"])
            h = torch.exp(delta[:, None] * A) * h + (delta * xc)[:, None] * Bt[None, :]
            y = h @ Ct + p["D"] * xc
            y = y * z[t] * torch.sigmoid(z[t])
            out[b, t] = p["out_proj.weight"] @ y
    return out


def small_block(dtype: torch.dtype = torch.float32, dt_bias_shift: float = 0.0, **kw) -> Mamba:
    torch.manual_seed(0)
    m = Mamba(d_model=kw.pop("d_model", 16), d_state=kw.pop("d_state", 8), backend="torch", **kw)
    with torch.no_grad():
        m.dt_proj.bias += dt_bias_shift
        m.A_log += 0.3 * torch.randn_like(m.A_log)  # random A, not only the S4D init
        m.D.normal_()
    return m.to(dtype)


# --- parameters and init --------------------------------------------------------------------


def test_state_dict_matches_mamba_ssm_names_and_shapes() -> None:
    m = Mamba(d_model=64, d_state=32, d_conv=4, expand=2)
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == MAMBA_SSM_SHAPES
    # A mamba_ssm-shaped state_dict loads strictly, and ours loads strictly back into a twin.
    foreign = {k: torch.randn(s) for k, s in MAMBA_SSM_SHAPES.items()}
    m.load_state_dict(foreign, strict=True)
    twin = Mamba(d_model=64, d_state=32)
    twin.load_state_dict(m.state_dict(), strict=True)
    for k, v in foreign.items():
        assert torch.equal(twin.state_dict()[k], v)
    x = torch.randn(2, 7, 64)
    assert torch.equal(m(x), twin(x))


def test_native_init() -> None:
    torch.manual_seed(3)
    m = Mamba(d_model=64, d_state=32, dt_min=0.001, dt_max=0.1)
    assert torch.allclose(m.A_log, torch.log(torch.arange(1.0, 33.0)).expand(128, 32))
    assert m.A_log.dtype == torch.float32
    assert torch.equal(m.D.detach(), torch.ones(128))
    dt = F.softplus(m.dt_proj.bias.detach().double())
    assert dt.min() >= 0.001 * (1 - 1e-5)
    assert dt.max() <= 0.1 * (1 + 1e-5)
    assert dt.std() > 0.01  # spread over the range, not a constant
    assert m.dt_proj.weight.abs().max() <= 0.5  # U(±dt_rank^-0.5), dt_rank = 4
    assert m.dt_rank == 4
    assert m.d_inner == 128
    assert m.in_proj.bias is None
    assert m.out_proj.bias is None
    assert m.x_proj.bias is None


def test_dt_init_constant_and_bad_options() -> None:
    m = Mamba(d_model=32, dt_init="constant", dt_rank=8)
    assert torch.allclose(m.dt_proj.weight, torch.full((64, 8), 8**-0.5))
    with pytest.raises(MatrrecError, match="dt_init"):
        Mamba(d_model=32, dt_init="nope")
    with pytest.raises(MatrrecError, match="backend"):
        Mamba(d_model=32, backend="tpu")  # type: ignore[arg-type]


# --- agreement with the per-step float64 recurrence ------------------------------------------


@pytest.mark.parametrize("dt_bias_shift", [0.0, 5.0])
def test_block_matches_float64_recurrence(dt_bias_shift: float) -> None:
    m = small_block(dt_bias_shift=dt_bias_shift)
    u = torch.randn(3, 23, 16, generator=torch.Generator().manual_seed(2))
    ref = reference_block(m, u)
    assert (m(u).double() - ref).abs().max().item() <= 1e-5
    assert (m.double()(u.double()) - ref).abs().max().item() <= 1e-10


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("dt_shift", [0.0, 5.0])  # +5: Δ·|A| up to ~100 per step
@pytest.mark.parametrize("chunk", [1, 5, 36, 64])  # 5 does not divide L 37; 64 > L
def test_scan_matches_float64_recurrence(
    dtype: torch.dtype, tol: float, dt_shift: float, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    inp = scan_inputs(5, 37, 8, 6, dtype, dt_shift)
    ref = selective_scan_ref(**{k: v.double() for k, v in inp.items()}, delta_softplus=True)
    # a tiny slice budget forces several batch slices
    monkeypatch.setattr(scan_mod, "SLICE_ELEMS", chunk * 2 * 8 * 6)
    out = selective_scan(**inp, delta_softplus=True, chunk=chunk)
    assert torch.isfinite(out).all()
    assert (out.double() - ref).abs().max().item() <= tol


def test_scan_gradients_match_reference() -> None:
    inp = {k: v.requires_grad_() for k, v in scan_inputs(3, 19, 8, 6, torch.float64, 2.0).items()}
    y = selective_scan(**inp, delta_softplus=True, chunk=4)
    y_ref = selective_scan_ref(**inp, delta_softplus=True)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, list(inp.values()), g)
    want = torch.autograd.grad(y_ref, list(inp.values()), g)
    for name, a, b in zip(inp, got, want, strict=True):
        assert torch.isfinite(a).all(), name
        assert (a - b).abs().max().item() <= 1e-10 * max(1.0, b.abs().max().item()), name


def test_gradcheck_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scan_mod, "SLICE_ELEMS", 3 * 3 * 4)  # 2 batch slices
    inp = {k: v.requires_grad_() for k, v in scan_inputs(2, 7, 3, 4, torch.float64).items()}

    def f(*args: torch.Tensor) -> torch.Tensor:
        return selective_scan(*args, delta_softplus=True, chunk=3)

    assert torch.autograd.gradcheck(f, tuple(inp.values()))


def test_gradcheck_block() -> None:
    m = small_block(torch.float64, d_model=4, d_state=3)
    u = torch.randn(1, 5, 4, dtype=torch.float64, requires_grad=True)
    params = tuple(m.parameters())

    def f(x: torch.Tensor, *ps: torch.Tensor) -> torch.Tensor:
        names = [name for name, _ in m.named_parameters()]
        return torch.func.functional_call(m, dict(zip(names, ps, strict=True)), (x,))

    assert torch.autograd.gradcheck(f, (u, *(p.detach().requires_grad_() for p in params)))


def test_large_delta_is_finite() -> None:
    """dt bias +30: Δ·|A| ~ 10³ per step; the closed form exp(+|A|ΣΔ) would overflow."""
    m = small_block(dt_bias_shift=30.0)
    u = torch.randn(2, 50, 16, requires_grad=True)
    out = m(u)
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert torch.isfinite(u.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_saved_state_is_bounded() -> None:
    """Backward keeps chunk-boundary states only, never all (B, L, D, N) states."""
    inp = {k: v.requires_grad_() for k, v in scan_inputs(4, 64, 8, 6, torch.float32).items()}
    y = scan_mod.SelectiveScan.apply(inp["u"], inp["delta"].exp(), inp["A"], inp["B"], inp["C"], 16)
    saved = sum(t.numel() for t in y.grad_fn.saved_tensors)
    all_states = 4 * 64 * 8 * 6
    inputs = sum(inp[k].numel() for k in ("u", "delta", "A", "B", "C"))
    assert saved <= inputs + all_states // 16 + 1


# --- causality and padding ---------------------------------------------------------------------


def test_causal() -> None:
    m = small_block(dt_bias_shift=1.0)
    u = torch.randn(2, 30, 16)
    t = 12
    v = u.clone()
    v[:, t + 1:] = torch.randn(2, 30 - t - 1, 16) * 10
    a, b = m(u), m(v)
    assert torch.equal(a[:, : t + 1], b[:, : t + 1])
    assert not torch.allclose(a[:, t + 1:], b[:, t + 1:])


def test_right_padding_invariance() -> None:
    m = small_block()
    lengths = [9, 20, 1]
    u = torch.randn(3, 20, 16)
    pads = [torch.zeros(3, 20, 16), torch.randn(3, 20, 16) * 5]
    outs = []
    for pad in pads:
        x = pad.clone()
        for i, n in enumerate(lengths):
            x[i, :n] = u[i, :n]
        outs.append(m(x))
    for i, n in enumerate(lengths):
        assert torch.equal(outs[0][i, :n], outs[1][i, :n])
        alone = m(u[i: i + 1, :n])  # the unpadded sequence on its own
        assert torch.allclose(outs[0][i, :n], alone[0], atol=1e-6)


# --- backends ----------------------------------------------------------------------------------


def test_auto_backend_on_cpu_runs_torch() -> None:
    m = Mamba(d_model=16, backend="auto")
    m(torch.randn(1, 4, 16))
    assert m.last_backend == "torch"
    assert isinstance(cuda_backend_reason(), str)
    assert cuda_backend_reason()


@pytest.mark.skipif(cuda_backend_available(), reason="mamba_ssm imports here")
def test_cuda_backend_without_mamba_ssm_is_a_clear_error() -> None:
    assert not cuda_backend_available()
    with pytest.raises(MatrrecError, match=r"mamba_ssm.*pip install"):
        Mamba(d_model=16, backend="cuda")


def test_cuda_backend_on_cpu_tensor_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ({"mamba_inner_fn": None, "selective_scan_fn": None, "causal_conv1d_fn": None}, "ok")
    monkeypatch.setattr(mamba_mod, "_mamba_ssm", lambda: fake)
    m = Mamba(d_model=16, backend="cuda")
    with pytest.raises(MatrrecError, match="CUDA device"):
        m(torch.randn(1, 4, 16))


def test_import_failures_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """mamba_ssm fails in several ways (ImportError, OSError from a CUDA library, ...)."""
    import builtins

    real_import = builtins.__import__

    def broken(name: str, *args, **kwargs):
        if name.startswith("mamba_ssm"):
            raise OSError("libcudart.so.12: cannot open shared object file")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", broken)
    mamba_mod._mamba_ssm.cache_clear()
    try:
        assert not cuda_backend_available()
        assert "OSError" in cuda_backend_reason()
    finally:
        monkeypatch.undo()
        mamba_mod._mamba_ssm.cache_clear()


def test_bf16_input_runs_scan_in_fp32() -> None:
    m = small_block()
    u = torch.randn(2, 10, 16)
    want = m(u)
    got = m.to(torch.bfloat16)(u.to(torch.bfloat16))
    assert got.dtype == torch.bfloat16
    assert math.isclose(float((got.float() - want).abs().max().detach()), 0.0, abs_tol=0.1)


# --- skip_padding: the scan with per-row lengths -------------------------------------------


@pytest.mark.parametrize("chunk", [1, 3, 16])
def test_scan_with_lengths_equals_dense_on_real_steps(monkeypatch: pytest.MonkeyPatch,
                                                      chunk: int) -> None:
    # several batch slices, so sorting rows across slices and per-slice chunk bounds both count
    monkeypatch.setattr(scan_mod, "SLICE_ELEMS", 4 * 16 * 8 * 6)
    inp = {k: v.requires_grad_() for k, v in scan_inputs(23, 19, 8, 6, torch.float64, 1.0).items()}
    g = torch.Generator().manual_seed(5)
    lengths = torch.randint(1, 20, (23,), generator=g)
    lengths[:3] = torch.tensor([19, 1, 2])
    real = (torch.arange(19)[None, :] < lengths[:, None])[..., None]  # (B, L, 1)
    y = selective_scan(**inp, delta_softplus=True, chunk=chunk, lengths=lengths)
    y_ref = selective_scan_ref(**inp, delta_softplus=True)
    assert (y[~real.expand_as(y)] == 0).all()  # padded steps: exactly 0
    assert (y - y_ref * real).abs().max().item() <= 1e-10
    # a loss that reads real steps only (as a right-padding-invariant model does)
    w = torch.randn(y.shape, generator=g, dtype=y.dtype) * real
    got = torch.autograd.grad((y * w).sum(), list(inp.values()))
    want = torch.autograd.grad((y_ref * w).sum(), list(inp.values()))
    for name, a, b in zip(inp, got, want, strict=True):
        assert (a - b).abs().max().item() <= 1e-10 * max(1.0, b.abs().max().item()), name


def test_scan_with_full_lengths_equals_dense() -> None:
    inp = scan_inputs(4, 11, 8, 6, torch.float32)
    full = torch.full((4,), 11)
    torch.testing.assert_close(selective_scan(**inp, lengths=full), selective_scan(**inp),
                               rtol=0, atol=1e-6)


# --- scan_impl (the numba kernels themselves: tests/test_scan_kernel.py) -------------------------


def test_scan_impl_torch_and_bad_values() -> None:
    m = small_block()
    m.scan_impl = "torch"
    m(torch.randn(1, 4, 16))
    assert m.last_scan_impl == "torch"
    with pytest.raises(UsageError, match=r"--set scan_impl="):
        Mamba(d_model=16, scan_impl="fast")  # type: ignore[arg-type]
    assert mamba_mod.resolved_scan_impl("torch", "cpu") == "torch"
    assert mamba_mod.resolved_scan_impl("auto", "cuda") == "torch"
