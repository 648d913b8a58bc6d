"""The numba selective scan (issue 22): exact against the float64 recurrence, and a drop-in for
the eager scan in the Mamba block.

The first run on a machine compiles the kernels (float32 and float64, ~1 min on 2 cores); numba
caches them on disk (`cache=True`), so later runs take seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("numba")

from helpers import scan_inputs

from matrrec_cli.errors import UsageError
from matrrec_cli.models import make_config
from matrrec_cli.models import mamba as mamba_mod
from matrrec_cli.models import scan_kernel as sk
from matrrec_cli.models.mamba import Mamba, check_scan_impl, resolved_scan_impl
from matrrec_cli.models.scan import selective_scan_ref
from matrrec_cli.models.scan_kernel import selective_scan_kernel

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def inputs(n_b: int, L: int, d: int, n: int, dtype: torch.dtype, dt_shift: float = 0.0,
           seed: int = 1) -> dict[str, torch.Tensor]:
    return scan_inputs(n_b, L, d, n, dtype, dt_shift, seed=seed, delta_bias=True)


def reference(inp: dict[str, torch.Tensor], softplus: bool, lengths: torch.Tensor | None
              ) -> torch.Tensor:
    """The per-step float64 recurrence (autograd through the loop); 0 at padded steps."""
    y = selective_scan_ref(**inp, delta_softplus=softplus)
    if lengths is None:
        return y
    real = torch.arange(y.shape[1])[None, :] < lengths[:, None]
    return y * real[..., None]


def max_errors(inp: dict[str, torch.Tensor], softplus: bool, lengths: torch.Tensor | None,
               chunk: int | None = None) -> dict[str, float]:
    """Largest |kernel - reference| of y and of every gradient, each relative to max(1, the
    reference's largest magnitude): float32 keeps ~7 significant digits whatever the scale."""
    leaves = {k: v.clone().requires_grad_() for k, v in inp.items()}
    ref_leaves = {k: v.detach().double().requires_grad_() for k, v in inp.items()}
    y = selective_scan_kernel(**leaves, delta_softplus=softplus, lengths=lengths, chunk=chunk)
    y_ref = reference(ref_leaves, softplus, lengths)
    w = torch.randn(y_ref.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    got = torch.autograd.grad((y.double() * w).sum(), list(leaves.values()))
    want = torch.autograd.grad((y_ref * w).sum(), list(ref_leaves.values()))
    errors = {"y": (y.double() - y_ref).abs().max().item() / max(1.0, y_ref.abs().max().item())}
    for name, a, b in zip(leaves, got, want, strict=True):
        assert torch.isfinite(a).all(), name
        errors[name] = (a.double() - b).abs().max().item() / max(1.0, b.abs().max().item())
    return errors


# --- exactness -----------------------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("dt_shift", [0.0, 35.0])  # +35: Δ ~ 20-50, Δ·|A| up to ~10³ per step
@pytest.mark.parametrize("with_lengths", [False, True])
def test_matches_float64_recurrence(dtype: torch.dtype, tol: float, dt_shift: float,
                                    with_lengths: bool) -> None:
    # D 20: three 8-channel blocks, and with 3 rows several channel groups per row;
    # N 6: padded up to the kernel's lane width inside; L 37: the last chunk is partial.
    inp = inputs(3, 37, 20, 6, dtype, dt_shift)
    lengths = torch.tensor([37, 16, 1]) if with_lengths else None
    errors = max_errors(inp, softplus=True, lengths=lengths)
    assert max(errors.values()) <= tol, errors


@pytest.mark.parametrize("drop", ["D", "z", "delta_bias", "D,z,delta_bias"])
@pytest.mark.parametrize("softplus", [True, False])
def test_optional_inputs(drop: str, softplus: bool) -> None:
    inp = inputs(2, 19, 9, 8, torch.float64, 0.0 if softplus else 2.0)
    for name in drop.split(","):
        del inp[name]
    if not softplus:  # Δ must stay positive without softplus
        inp["delta"] = inp["delta"].abs() + 0.1
    errors = max_errors(inp, softplus=softplus, lengths=torch.tensor([19, 7]))
    assert max(errors.values()) <= 1e-10, errors


@pytest.mark.parametrize("chunk", [1, 5, 64])  # 5 does not divide L 23; 64 > L
def test_chunk_sizes(chunk: int) -> None:
    inp = inputs(17, 23, 8, 8, torch.float64, 1.0)  # 17 rows: one channel group per row
    lengths = torch.randint(0, 24, (17,), generator=torch.Generator().manual_seed(3))
    errors = max_errors(inp, softplus=True, lengths=lengths, chunk=chunk)
    assert max(errors.values()) <= 1e-10, errors


@pytest.mark.parametrize(("n_b", "d"), [(6, 32), (1, 20)])
def test_uneven_channel_groups(n_b: int, d: int) -> None:
    """6 rows x 4 blocks of 8 channels: 3 groups of 1, 1 and 2 blocks; 1 row: a partial block."""
    inp = inputs(n_b, 21, d, 5, torch.float64, 0.5)
    lengths = torch.arange(n_b) * 4 + 1
    errors = max_errors(inp, softplus=True, lengths=lengths)
    assert max(errors.values()) <= 1e-10, errors


def test_gradcheck() -> None:
    inp = {k: v.requires_grad_() for k, v in inputs(2, 7, 3, 4, torch.float64).items()}
    lengths = torch.tensor([7, 4])

    def f(*args: torch.Tensor) -> torch.Tensor:
        return selective_scan_kernel(*args, delta_softplus=True, chunk=3, lengths=lengths)

    assert torch.autograd.gradcheck(f, tuple(inp[k] for k in NAMES))


def test_padded_steps_are_zero_and_inert() -> None:
    """Past a row's length: output exactly 0, and whatever is there changes nothing."""
    inp = inputs(2, 12, 8, 8, torch.float32, 1.0)
    lengths = torch.tensor([12, 5])
    y = selective_scan_kernel(**inp, delta_softplus=True, lengths=lengths)
    assert (y[1, 5:] == 0).all()
    noisy = {k: v.clone() for k, v in inp.items()}
    for k in ("u", "delta", "B", "C", "z"):
        noisy[k][1, 5:] = 1e3
    y2 = selective_scan_kernel(**noisy, delta_softplus=True, lengths=lengths)
    assert torch.equal(y, y2)


def test_no_grad_forward_equals_grad_forward() -> None:
    inp = inputs(3, 20, 8, 8, torch.float32)
    with torch.no_grad():  # keeps no chunk states
        a = selective_scan_kernel(**inp, delta_softplus=True)
    leaves = {k: v.clone().requires_grad_() for k, v in inp.items()}
    b = selective_scan_kernel(**leaves, delta_softplus=True)
    assert torch.equal(a, b.detach())


def test_same_bits_on_one_and_two_threads() -> None:
    """Channel groups depend on the shape only, so the thread count changes no bit; and the
    kernel leaves torch's thread count alone (numba's OpenMP layer shares torch's)."""
    inp = {k: v.requires_grad_() for k, v in inputs(3, 30, 20, 8, torch.float32).items()}
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            y = selective_scan_kernel(**inp, delta_softplus=True)
            results.append([y, *torch.autograd.grad(y.square().sum(), list(inp.values()))])
            assert torch.get_num_threads() == n
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_saved_state_is_bounded() -> None:
    """Backward keeps the chunk-entry states only, (B, L/16, N, D), never all states."""
    inp = {k: v.requires_grad_() for k, v in inputs(4, 64, 8, 8, torch.float32).items()}
    y = sk.ScanKernel.apply(inp["u"], inp["delta"].exp(), inp["A"], inp["B"], inp["C"], inp["D"],
                            inp["z"], 16, torch.full((4,), 64))
    saved = sum(t.numel() for t in y.grad_fn.saved_tensors)
    inputs_numel = sum(inp[k].numel() for k in ("u", "delta", "A", "B", "C", "D", "z")) + 4
    pre_gate = 4 * 64 * 8  # the output before the SiLU(z) gate, for z's gradient
    assert saved <= inputs_numel + pre_gate + 4 * 64 * 8 * 8 // 16


def test_vexp_within_one_ulp() -> None:
    """The vectorisable exp agrees with libm's to 1 ulp, with inf and nan intact; below the
    flush point (~1e-38 in float32) it is 0."""
    grid = np.concatenate([np.linspace(-800, 800, 400_001), [-np.inf, np.inf, np.nan, 0.0]])
    for dtype, flush in ((np.float64, sk.FLUSH64), (np.float32, sk.FLUSH32)):
        x = grid.astype(dtype)
        got = sk.vexp_array(x).astype(np.float64)
        with np.errstate(over="ignore"):
            want = np.exp(x.astype(np.float64)).astype(dtype).astype(np.float64)
        assert np.array_equal(np.isnan(got), np.isnan(want))
        assert np.array_equal(np.isinf(got), np.isinf(want))
        assert (got[x < flush] == 0).all()
        ok = np.isfinite(want) & (x >= flush)
        ulp = np.spacing(want[ok].astype(dtype)).astype(np.float64)
        assert (np.abs(got[ok] - want[ok]) <= ulp).all(), dtype


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("L", [2, 9])  # 2 < the conv width: every output sees the zero start
def test_conv_silu_matches_torch(dtype: torch.dtype, tol: float, L: int) -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, L, 10, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(10, 1, 4, generator=g, dtype=dtype, requires_grad=True)
    bias = torch.randn(10, generator=g, dtype=dtype, requires_grad=True)
    want = F.silu(F.conv1d(x.transpose(1, 2), w, bias, padding=3, groups=10)[..., :L])
    want = want.transpose(1, 2)
    got = sk.causal_conv1d_silu(x, w, bias)
    gy = torch.randn(want.shape, generator=g, dtype=dtype)
    pairs = zip((got, *torch.autograd.grad(got, (x, w, bias), gy)),
                (want, *torch.autograd.grad(want, (x, w, bias), gy)), strict=True)
    for a, b in pairs:
        assert (a - b).abs().max().item() <= tol * max(1.0, b.abs().max().item())


def test_conv_silu_gradcheck() -> None:
    g = torch.Generator().manual_seed(5)
    args = (torch.randn(2, 6, 3, generator=g, dtype=torch.float64, requires_grad=True),
            torch.randn(3, 1, 4, generator=g, dtype=torch.float64, requires_grad=True),
            torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(sk.causal_conv1d_silu, args)


# --- the Mamba block with the kernel ---------------------------------------------------------


def block(scan_impl: str, **kw: float) -> Mamba:
    torch.manual_seed(0)
    m = Mamba(d_model=16, d_state=8, backend="torch", scan_impl=scan_impl)  # type: ignore[arg-type]
    with torch.no_grad():
        m.dt_proj.bias += kw.get("dt_bias_shift", 0.0)
        m.A_log += 0.3 * torch.randn_like(m.A_log)
        m.D.normal_()
    return m


@pytest.mark.parametrize("lengths", [None, [23, 9, 1]])
def test_block_kernel_equals_torch_scan(lengths: list[int] | None) -> None:
    u = torch.randn(3, 23, 16, generator=torch.Generator().manual_seed(2))
    lens = None if lengths is None else torch.tensor(lengths)
    results = {}
    for impl in ("kernel", "torch"):
        m = block(impl, dt_bias_shift=2.0)
        x = u.clone().requires_grad_()
        y = m(x, lengths=lens)
        assert m.last_scan_impl == impl
        grads = torch.autograd.grad(y.square().sum(), [x, *m.parameters()])
        results[impl] = (y, *grads)
    for a, b in zip(results["kernel"], results["torch"], strict=True):
        assert (a - b).abs().max().item() <= 1e-5 * max(1.0, b.abs().max().item())


def test_block_kernel_causal() -> None:
    m = block("kernel", dt_bias_shift=1.0)
    u = torch.randn(2, 30, 16)
    v = u.clone()
    v[:, 13:] = torch.randn(2, 17, 16) * 10
    a, b = m(u), m(v)
    assert torch.equal(a[:, :13], b[:, :13])
    assert not torch.allclose(a[:, 13:], b[:, 13:])


def test_block_kernel_right_padding_invariance() -> None:
    m = block("kernel")
    lengths = [9, 20, 1]
    u = torch.randn(3, 20, 16)
    outs = []
    for pad in (torch.zeros(3, 20, 16), torch.randn(3, 20, 16) * 5):
        x = pad.clone()
        for i, n in enumerate(lengths):
            x[i, :n] = u[i, :n]
        outs.append(m(x))
    for i, n in enumerate(lengths):
        assert torch.equal(outs[0][i, :n], outs[1][i, :n])
        alone = m(u[i: i + 1, :n])
        assert torch.allclose(outs[0][i, :n], alone[0], atol=1e-6)


# --- selection -------------------------------------------------------------------------------


def test_resolution() -> None:
    assert resolved_scan_impl("auto", "cpu") == "kernel"
    assert resolved_scan_impl("kernel", torch.device("cpu")) == "kernel"
    assert resolved_scan_impl("torch", "cpu") == "torch"
    assert resolved_scan_impl("auto", "cuda") == "torch"  # CUDA tensors never take the kernel
    assert resolved_scan_impl("kernel", "cuda") == "torch"
    with pytest.raises(UsageError, match=r"--set scan_impl="):
        resolved_scan_impl("fast", "cpu")
    with pytest.raises(UsageError, match=r"--set scan_impl="):
        make_config("matrrec", {"scan_impl": "fast"})
    assert make_config("mamba4rec", {"scan_impl": "kernel"}).scan_impl == "kernel"


def test_without_numba(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sk, "numba", None)
    monkeypatch.setattr(sk, "_IMPORT_ERROR", "numba does not import (ModuleNotFoundError: x)")
    assert not sk.available()
    assert "pip install 'matrrec[numba]'" in sk.reason()
    assert resolved_scan_impl("auto", "cpu") == "torch"
    with pytest.raises(UsageError, match=r"needs numba.*pip install 'matrrec\[numba\]'"):
        check_scan_impl("kernel")
    with pytest.raises(UsageError, match="needs numba"):
        make_config("matrrec", {"scan_impl": "kernel"})
    m = Mamba(d_model=16, scan_impl="auto")
    m(torch.randn(1, 4, 16))
    assert m.last_scan_impl == "torch"
    with pytest.raises(UsageError, match="cannot run"):
        selective_scan_kernel(**inputs(1, 3, 2, 2, torch.float32))


def test_models_pass_scan_impl_down() -> None:
    from matrrec_cli.models import build_model

    for name in ("matrrec", "mamba4rec"):
        model = build_model(name, n_items=20, max_len=8,
                            overrides={"hidden_size": 16, "scan_impl": "torch"})
        blocks = [m for m in model.modules() if isinstance(m, mamba_mod.Mamba)]
        assert blocks
        assert all(b.scan_impl == "torch" for b in blocks)
