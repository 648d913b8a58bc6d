"""The Mamba block's selective scan (and its conv + SiLU) as numba loops for CPUs.

    h_t = exp(Δ_t A) ⊙ h_{t-1} + (Δ_t u_t) B_t,   y_t = (h_t · C_t + D u_t) · SiLU(z_t)
    Δ_t = softplus(delta_t + delta_bias)             per channel d: h_t (N,); B_t, C_t (N,)

Why: the eager scan of scan.py makes ~20 passes over B·L·D·N elements that PyTorch cannot fuse
(bench/bench_mamba.py: its block costs 14-20x an attention block of the same width). Here one
loop walks each row's recurrence with the state in a small local array and exp(Δ·A) made on the
fly: memory traffic is the (B, L, D) and (B, L, N) tensors, never a (B, L, D, N) one.

* Layout: vectors run over the channels d, contiguous in (B, L, D); A is passed as (N, D). So
  y's sum over n is a plain per-channel sum, no sum across vector lanes.
* Forward: `prange` over (row, channel group) pairs; one group per row once the batch has
  MIN_PAIRS rows. It stores the state entering every CHUNK-th step, (B, L/CHUNK, N, D), and the
  output before the gate, (B, L, D), for backward.
* Backward: per pair, chunks newest first: recompute the chunk's states from its entry state,
  then the adjoint recurrence g_t = C_t gy_t + exp(Δ_{t+1} A) ⊙ g_{t+1} in reverse. dB and dC
  sum over the channels: each pair writes its own (G, B, L, N) partial (G = 1 for a batch of
  MIN_PAIRS rows or more), so no two threads write one place; dA and dD are per-row partials.
  The partials are summed in PyTorch. Work buffers are allocated once per thread.
* Δ's bias and softplus stay in PyTorch (elementwise, vectorised there; a per-step softplus
  would need a scalar log1p); the D skip and the SiLU(z) gate are fused into the kernel.
* Exact: every decay is exp(Δ·A) <= 1 for A < 0, as in the eager scan (no closed forms);
  fastmath is off, so LLVM does not reorder arithmetic. Sums run in a fixed order that depends
  on the shapes only: results are the same bits run to run and on any thread count, but round
  differently from the eager scan (float32: ~1e-7 relative; tests/test_scan_kernel.py).
* exp: a libm call per element keeps LLVM from vectorising the loop; `_vexp` is a branch-free
  exp (Cody-Waite reduction, Taylor polynomial with explicit FMAs, exponent bits by a bitcast)
  that it vectorises: within 1 ulp of libm's, 0 below FLUSH (subnormal results); the forward
  kernel with math.exp instead takes 4x as long.
* Per-row `lengths` (right-padded rows): steps past a row's length output 0, leave its state
  alone, get zero gradients and cost nothing (the eager scan's skip_padding contract).
* `causal_conv1d_silu`: the block's depthwise causal conv1d and SiLU in (B, L, Din), fused; in
  eager PyTorch those cost about as much as a whole attention block.

numba is optional: this module imports without it, `available()` is then False and `reason()`
says why. Compiled code is cached on disk (`cache=True`), so the compile (about a minute for
float32 and float64 on 2 cores) happens once per machine and version of this file.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from matrrec_cli.errors import UsageError

CHUNK = 16  # steps between stored states: backward recomputes at most CHUNK steps from one
LANES = 8  # one AVX2 vector of float32: the block size of the sums across channels
# `_vexp` returns 0 below these (exp(-86.9) = 1.8e-38, exp(-708) = 3.3e-308): k - 1 stays a
# normal exponent, see there.
FLUSH32, FLUSH64 = -86.9, -708.0
INSTALL_HINT = "pip install 'matrrec[numba]'"

# Importing numba re-initialises OpenMP, which resets torch's intra-op thread count to the
# machine's (measured: torch.set_num_threads(1), import numba, torch.get_num_threads() == 2).
# The thread count is part of a run's identity (it orders float sums), so it is put back.
_TORCH_THREADS = torch.get_num_threads()
try:  # numba is an optional extra; any failure to import it just means "no kernel"
    import numba
    from llvmlite import ir
    from numba import prange, types
    from numba.extending import intrinsic, overload

    _IMPORT_ERROR: str | None = None
except Exception as exc:
    numba = None
    prange = range
    _IMPORT_ERROR = f"numba does not import ({type(exc).__name__}: {exc})"
finally:
    torch.set_num_threads(_TORCH_THREADS)


def available() -> bool:
    """True when numba imports here, so the kernel can run (on CPU tensors)."""
    return numba is not None


def reason() -> str:
    """One line saying why the kernel is or is not available."""
    if numba is None:
        return f"{_IMPORT_ERROR}; install it with {INSTALL_HINT}"
    return f"numba {numba.__version__} imports"


# --- numba pieces -------------------------------------------------------------------------------

if numba is not None:

    @intrinsic
    def _pow2(typingctx: Any, k: Any) -> Any:
        """2.0**k for an integral float k in the normal exponent range: the bits built directly,
        so LLVM can vectorise it (ldexp is a libm call)."""
        if k == types.float64:
            ity, fty, bias, shift = ir.IntType(64), ir.DoubleType(), 1023, 52
        elif k == types.float32:
            ity, fty, bias, shift = ir.IntType(32), ir.FloatType(), 127, 23
        else:
            return None

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            # via int32 (|k| < 2^11): double -> int32 converts in AVX2 vectors, -> int64 does not
            ki = builder.fptosi(args[0], ir.IntType(32))
            if ity.width != 32:
                ki = builder.sext(ki, ity)
            bits = builder.shl(builder.add(ki, ir.Constant(ity, bias)), ir.Constant(ity, shift))
            return builder.bitcast(bits, fty)

        return k(k), codegen


def _vexp(x: float) -> float:
    """exp(x); the numba version below is branch-free so that loops over it vectorise."""
    return math.exp(x)


if numba is not None:

    @intrinsic
    def _fma(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
        """a·b + c rounded once (llvm.fma). Explicit, so fastmath stays off: the exp's Horner
        chain is half as long (latency-bound: 3x faster) and more accurate."""
        if not (a == b == c and a in (types.float32, types.float64)):
            return None

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            return builder.fma(*args)

        return a(a, a, a), codegen

    @overload(_vexp, jit_options={"fastmath": False})
    def _vexp_impl(x):
        # Cody-Waite: x = k ln2 + r, |r| <= ln2/2, ln2 split in a short high part (k·hi exact)
        # and a low part; exp(r) by its Taylor series (13 terms in float64, 7 in float32: the
        # truncation is below half an ulp); then 2^(k-1)·2, so that k = 128 (1024) overflows to
        # inf only where exp does. Results below FLUSH (~1e-38, ~1e-307) are 0, not subnormal:
        # those need a second scaling step (measured: 12% of the forward kernel's time), for
        # decays that no float sum can see.
        if x == types.float64:

            def impl64(x):
                xc = min(max(x, -709.0), 710.0)
                k = np.floor(_fma(xc, 1.4426950408889634, 0.5))
                r = _fma(-k, 6.93147180369123816490e-01, xc)
                r = _fma(-k, 1.90821492927058770002e-10, r)
                p = 1.6059043836821613e-10  # 1/13!
                p = _fma(p, r, 2.08767569878681e-09)
                p = _fma(p, r, 2.505210838544172e-08)
                p = _fma(p, r, 2.755731922398589e-07)
                p = _fma(p, r, 2.7557319223985893e-06)
                p = _fma(p, r, 2.48015873015873e-05)
                p = _fma(p, r, 0.0001984126984126984)
                p = _fma(p, r, 0.001388888888888889)
                p = _fma(p, r, 0.008333333333333333)
                p = _fma(p, r, 0.041666666666666664)
                p = _fma(p, r, 0.16666666666666666)
                p = _fma(p, r, 0.5)
                p = _fma(p, r, 1.0)
                p = _fma(p, r, 1.0)
                out = p * _pow2(k - 1.0) * 2.0
                if x < FLUSH64:
                    out = 0.0
                if x != x:
                    out = x
                return out

            return impl64
        if x == types.float32:
            f = np.float32

            def impl32(x):
                xc = min(max(x, f(-88.0)), f(89.0))
                k = np.floor(_fma(xc, f(1.44269504), f(0.5)))
                r = _fma(-k, f(0.693359375), xc)
                r = _fma(-k, f(-2.12194440e-4), r)
                p = f(1.0 / 5040.0)
                p = _fma(p, r, f(1.0 / 720.0))
                p = _fma(p, r, f(1.0 / 120.0))
                p = _fma(p, r, f(1.0 / 24.0))
                p = _fma(p, r, f(1.0 / 6.0))
                p = _fma(p, r, f(0.5))
                p = _fma(p, r, f(1.0))
                p = _fma(p, r, f(1.0))
                out = p * _pow2(k - f(1.0)) * f(2.0)
                if x < f(FLUSH32):
                    out = f(0.0)
                if x != x:
                    out = x
                return out

            return impl32
        return None


def _jit(fn: Any) -> Any:
    """numba.njit with the kernel's options, or the plain function when numba is absent
    (never called then: `available()` is False)."""
    if numba is None:
        return fn
    return numba.njit(parallel=True, cache=True, fastmath=False)(fn)


def _jit_serial(fn: Any) -> Any:
    """numba.njit for the helpers the kernels call (no parallel loops of their own)."""
    if numba is None:
        return fn
    return numba.njit(cache=True, fastmath=False)(fn)


@_jit_serial
def vexp_array(x: np.ndarray) -> np.ndarray:
    """`_vexp` over an array (for the tests)."""
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = _vexp(x[i])
    return out


@_jit_serial
def _fold_sums(p, q):
    """(p.sum(), q.sum()) in a fixed order with short dependency chains, destroying p and q:
    fold the upper part of whole LANES-blocks onto the lower until one block is left (each fold
    a vector loop of independent adds), then halve that block and add the rest in order. Runs
    B·L·N times in backward, so latency matters more than the adds."""
    n = p.size
    while n > LANES:
        h = (n // LANES + 1) // 2 * LANES
        for j in range(n - h):
            p[j] += p[h + j]
            q[j] += q[h + j]
        n = h
    if n == LANES:
        for j in range(LANES // 2):
            p[j] += p[j + LANES // 2]
            q[j] += q[j + LANES // 2]
        n = LANES // 2
    sp = p[0]
    sq = q[0]
    for j in range(1, n):
        sp += p[j]
        sq += q[j]
    return sp, sq


@_jit_serial
def _scratch3(buf, w):
    """The first w columns of a (K, N, w_max) scratch buffer as a C-contiguous (K, N, w)."""
    return buf.ravel()[: buf.shape[0] * buf.shape[1] * w].reshape(buf.shape[0], buf.shape[1], w)


@_jit_serial
def _scratch2(buf, w):
    """The first w columns of a (K, w_max) scratch buffer as a C-contiguous (K, w)."""
    return buf.ravel()[: buf.shape[0] * w].reshape(buf.shape[0], w)


@_jit_serial
def _copy2(src, dst):
    """dst[...] = src for 2-D arrays, row by row (a slice assignment may allocate a temporary)."""
    for r in range(src.shape[0]):
        s_r = src[r]
        d_r = dst[r]
        for j in range(s_r.size):
            d_r[j] = s_r[j]


def _group_bounds(grp: int, n_groups: int, n_d: int) -> tuple[int, int]:
    """Channels [lo, hi) of group `grp`: whole LANES-wide blocks, so each vector loop is full."""
    n_blk = (n_d + LANES - 1) // LANES
    lo = grp * n_blk // n_groups * LANES
    hi = min(n_d, (grp + 1) * n_blk // n_groups * LANES)
    return lo, hi


_group_bounds_jit = _jit_serial(_group_bounds)

# Loops below index channel slices [lo:hi] from 0 (`for j in range(w)`): an index numba cannot
# prove non-negative gets a wraparound select, and LLVM then does not vectorise the loop.


@_jit
def _forward_kernel(u, dt, At, Bm, Cm, Dv, z, lengths, has_d, has_z, chunk, n_groups, out,
                    ys, states, keep):
    """out = (y + D u) · SiLU(z), y[b, t, d] = h_t[:, d] · C[b, t], h_t = exp(dt A) h_{t-1} +
    dt u B[b, t]; 0 at padded steps.

    u, dt, z, out, ys: (B, L, D); At: (N, D) (A transposed); Bm, Cm: (B, L, N); Dv: (D,);
    lengths: (B,). When keep: states (B, L/chunk, N, D) gets the state entering each chunk, and
    ys the output before the gate (for z's gradient). z, ys are dummies without has_z, Dv
    without has_d. Vectors run over the channels d (contiguous in every array here), so there
    is no sum across vector lanes: y's sum over n is the plain sequential one, per channel."""
    n_b, L, n_d = u.shape
    N = At.shape[0]
    one = u.dtype.type(1.0)
    for i in prange(n_b * n_groups):  # (row, channel group): every write is its own
        b = i // n_groups
        lo, hi = _group_bounds_jit(i - b * n_groups, n_groups, n_d)
        w = hi - lo
        a_g = At[:, lo:hi].copy()  # C-contiguous rows: a strided view would not vectorise
        d_g = Dv[lo:hi] if has_d else Dv[:0]
        h = np.zeros((N, w), dtype=u.dtype)  # the group's state, (N, w)
        du = np.empty(w, dtype=u.dtype)
        acc = np.empty(w, dtype=u.dtype)
        n_t = lengths[b]
        for t in range(n_t):
            if keep and t % chunk == 0:
                _copy2(h, states[b, t // chunk, :, lo:hi])
            dt_t = dt[b, t, lo:hi]
            u_t = u[b, t, lo:hi]
            for j in range(w):
                du[j] = dt_t[j] * u_t[j]
                acc[j] = 0.0
            for n in range(N):
                bn = Bm[b, t, n]
                cn = Cm[b, t, n]
                a_n = a_g[n]
                h_n = h[n]
                for j in range(w):  # the vector loop: exp, update, dot product
                    hv = _vexp(dt_t[j] * a_n[j]) * h_n[j] + du[j] * bn
                    h_n[j] = hv
                    acc[j] += hv * cn
            if has_d:
                for j in range(w):
                    acc[j] += d_g[j] * u_t[j]
            out_t = out[b, t, lo:hi]
            if has_z:
                z_t = z[b, t, lo:hi]
                if keep:
                    ys_t = ys[b, t, lo:hi]
                    for j in range(w):
                        ys_t[j] = acc[j]
                for j in range(w):  # SiLU(z) = z / (1 + exp(-z)), as torch computes it
                    out_t[j] = acc[j] * (z_t[j] / (one + _vexp(-z_t[j])))
            else:
                for j in range(w):
                    out_t[j] = acc[j]
        for t in range(n_t, L):
            out[b, t, lo:hi] = 0.0


@_jit
def _backward_kernel(u, dt, At, Bm, Cm, Dv, z, lengths, has_d, has_z, chunk, n_groups, states,
                     ys, g_out, g_u, g_dt, g_z, g_A, g_D, g_B, g_C, n_workers):
    """Gradients of `_forward_kernel`'s out for g_out (B, L, D): writes g_u, g_dt, g_z
    (B, L, D) (0 at padded steps), the per-row partials g_A (B, N, D) and g_D (B, D), and the
    per-group partials g_B, g_C (G, B, L, N), which the caller passes zeroed."""
    n_b, _, n_d = u.shape
    N = At.shape[0]
    one = u.dtype.type(1.0)
    n_pairs = n_b * n_groups
    n_workers = min(n_pairs, n_workers)  # the threads (numba.get_num_threads would not cache)
    n_blk = (n_d + LANES - 1) // LANES
    w_max = min(n_d, (n_blk + n_groups - 1) // n_groups * LANES)  # the widest group
    for wk in prange(n_workers):
        # scratch once per worker, not per pair: hs and decay are ~0.5 MB, and a fresh block
        # that size is a fresh mmap whose page faults serialise the threads
        hs_w = np.empty((chunk + 1, N, w_max), dtype=u.dtype)
        decay_w = np.empty((chunk, N, w_max), dtype=u.dtype)
        du_w = np.empty((chunk, w_max), dtype=u.dtype)
        carry_w = np.empty((N, w_max), dtype=u.dtype)
        g_a_w = np.empty((N, w_max), dtype=u.dtype)
        vec_w = np.empty((7, w_max), dtype=u.dtype)
        for i in range(wk, n_pairs, n_workers):  # pairs dealt round-robin
            _backward_pair(u, dt, At, Bm, Cm, Dv, z, lengths, has_d, has_z, chunk, n_groups,
                           states, ys, g_out, g_u, g_dt, g_z, g_A, g_D, g_B, g_C, i, one,
                           hs_w, decay_w, du_w, carry_w, g_a_w, vec_w)


@_jit_serial
def _backward_pair(u, dt, At, Bm, Cm, Dv, z, lengths, has_d, has_z, chunk, n_groups, states,
                   ys, g_out, g_u, g_dt, g_z, g_A, g_D, g_B, g_C, i, one, hs_w, decay_w, du_w,
                   carry_w, g_a_w, vec_w):
    """`_backward_kernel` for one (row, channel group) pair, in the worker's scratch."""
    L = u.shape[1]
    n_d = u.shape[2]
    N = At.shape[0]
    b = i // n_groups
    grp = i - b * n_groups
    lo, hi = _group_bounds_jit(grp, n_groups, n_d)
    w = hi - lo
    a_g = At[:, lo:hi].copy()  # C-contiguous rows: a strided view would not vectorise
    d_g = Dv[lo:hi] if has_d else Dv[:0]
    hs = _scratch3(hs_w, w)  # hs[k + 1] = h at step t0 + k
    decay = _scratch3(decay_w, w)  # exp(dt A) at step t0 + k
    du = _scratch2(du_w, w)  # dt u
    carry = _scratch2(carry_w, w)  # exp(dt_{t+1} A) ⊙ g_{t+1}
    g_a = _scratch2(g_a_w, w)
    carry[:] = 0.0
    g_a[:] = 0.0
    g_d = vec_w[0, :w]
    g_d[:] = 0.0
    gy = vec_w[1, :w]  # dL/dy_t (y before the D skip and the gate)
    g_du = vec_w[2, :w]
    g_dd = vec_w[3, :w]
    pb = vec_w[4, :w]
    pc = vec_w[5, :w]
    n_t = lengths[b]
    for c in range((n_t + chunk - 1) // chunk - 1, -1, -1):  # chunks, newest first
        t0 = c * chunk
        kc = min(chunk, n_t - t0)
        _copy2(states[b, c, :, lo:hi], hs[0])
        for k in range(kc):  # recompute the chunk's states from its entry state
            dt_t = dt[b, t0 + k, lo:hi]
            u_t = u[b, t0 + k, lo:hi]
            du_k = du[k]
            for j in range(w):
                du_k[j] = dt_t[j] * u_t[j]
            for n in range(N):
                bn = Bm[b, t0 + k, n]
                a_n = a_g[n]
                h0 = hs[k, n]
                h1 = hs[k + 1, n]
                e_n = decay[k, n]
                for j in range(w):
                    e = _vexp(dt_t[j] * a_n[j])
                    e_n[j] = e
                    h1[j] = e * h0[j] + du_k[j] * bn
        for k in range(kc - 1, -1, -1):  # the adjoint recurrence, newest step first
            t = t0 + k
            dt_t = dt[b, t, lo:hi]
            u_t = u[b, t, lo:hi]
            go_t = g_out[b, t, lo:hi]
            if has_z:  # through the gate: torch's silu_backward
                z_t = z[b, t, lo:hi]
                ys_t = ys[b, t, lo:hi]
                g_z_t = g_z[b, t, lo:hi]
                for j in range(w):
                    sg = one / (one + _vexp(-z_t[j]))
                    g_z_t[j] = go_t[j] * ys_t[j] * (sg * (one + z_t[j] * (one - sg)))
                    gy[j] = go_t[j] * (z_t[j] * sg)
            else:
                for j in range(w):
                    gy[j] = go_t[j]
            du_k = du[k]
            for j in range(w):
                g_du[j] = 0.0
                g_dd[j] = 0.0
            for n in range(N):
                bn = Bm[b, t, n]
                cn = Cm[b, t, n]
                a_n = a_g[n]
                h0 = hs[k, n]
                h1 = hs[k + 1, n]
                e_n = decay[k, n]
                carry_n = carry[n]
                g_a_n = g_a[n]
                for j in range(w):
                    gh = carry_n[j] + gy[j] * cn  # dL/dh_t
                    pc[j] = gy[j] * h1[j]  # -> dL/dC_t[n]
                    pb[j] = gh * du_k[j]  # -> dL/dB_t[n]
                    g_du[j] += gh * bn
                    q = gh * h0[j] * e_n[j]  # dL/d(dt A[n])
                    g_a_n[j] += q * dt_t[j]
                    g_dd[j] += q * a_n[j]
                    carry_n[j] = gh * e_n[j]
                g_C[grp, b, t, n], g_B[grp, b, t, n] = _fold_sums(pc, pb)
            g_u_t = g_u[b, t, lo:hi]
            g_dt_t = g_dt[b, t, lo:hi]
            for j in range(w):
                g_u_t[j] = g_du[j] * dt_t[j]
                g_dt_t[j] = g_dd[j] + g_du[j] * u_t[j]
            if has_d:  # the D skip
                for j in range(w):
                    g_u_t[j] += gy[j] * d_g[j]
                    g_d[j] += gy[j] * u_t[j]
    for t in range(n_t, L):
        g_u[b, t, lo:hi] = 0.0
        g_dt[b, t, lo:hi] = 0.0
        if has_z:
            g_z[b, t, lo:hi] = 0.0
    _copy2(g_a, g_A[b, :, lo:hi])
    if has_d:
        g_D_b = g_D[b, lo:hi]
        for j in range(w):
            g_D_b[j] = g_d[j]


@_jit_serial
def _conv_pre(x, wT, bias, b, t, acc):
    """acc[d] = bias[d] + Σ_j wT[j, d] x[b, t - k + 1 + j, d]: row b's pre-activation at step
    t, which the forward computes once and the backward again (it keeps no (L, Din) buffer)."""
    n_d = acc.shape[0]
    k = wT.shape[0]
    for d in range(n_d):
        acc[d] = bias[d]
    for j in range(max(0, k - 1 - t), k):
        x_s = x[b, t - k + 1 + j, :n_d]
        w_j = wT[j]
        for d in range(n_d):
            acc[d] += w_j[d] * x_s[d]


@_jit
def _conv_forward_kernel(x, wT, bias, out):
    """out[b, t, d] = SiLU(bias[d] + Σ_j wT[j, d] x[b, t - k + 1 + j, d]): the block's causal
    depthwise conv1d and its SiLU. x, out: (B, L, Din); wT: (k, Din); bias: (Din,)."""
    n_b, L, n_d = out.shape
    one = out.dtype.type(1.0)
    for b in prange(n_b):
        acc = np.empty(n_d, dtype=out.dtype)
        for t in range(L):
            _conv_pre(x, wT, bias, b, t, acc)
            out_t = out[b, t]
            for d in range(n_d):
                out_t[d] = acc[d] / (one + _vexp(-acc[d]))


@_jit
def _conv_backward_kernel(x, wT, bias, g_out, g_x, g_w, g_bias):
    """Gradients of `_conv_forward_kernel`: g_x (B, L, Din), and per-row partials g_w
    (B, k, Din), g_bias (B, Din). Steps newest first, the pre-activation recomputed, each step's
    gradient spread over the k inputs it read: no (L, Din) buffer."""
    n_b, L, n_d = g_out.shape
    k = wT.shape[0]
    one = g_out.dtype.type(1.0)
    for b in prange(n_b):
        acc = np.empty(n_d, dtype=g_out.dtype)
        gp = np.empty(n_d, dtype=g_out.dtype)  # dL/d(pre-activation) at step t
        g_w_b = g_w[b]
        g_b_b = g_bias[b]
        for j in range(k):
            for d in range(n_d):
                g_w_b[j, d] = 0.0
        for d in range(n_d):
            g_b_b[d] = 0.0
        for t in range(L):
            g_x_t = g_x[b, t]
            for d in range(n_d):
                g_x_t[d] = 0.0
        for t in range(L - 1, -1, -1):
            _conv_pre(x, wT, bias, b, t, acc)
            g_t = g_out[b, t]
            for d in range(n_d):  # torch's silu_backward
                sg = one / (one + _vexp(-acc[d]))
                gp[d] = g_t[d] * (sg * (one + acc[d] * (one - sg)))
                g_b_b[d] += gp[d]
            for j in range(max(0, k - 1 - t), k):
                x_s = x[b, t - k + 1 + j, :n_d]
                g_x_s = g_x[b, t - k + 1 + j, :n_d]
                w_j = wT[j]
                g_w_j = g_w_b[j]
                for d in range(n_d):
                    g_w_j[d] += gp[d] * x_s[d]
                    g_x_s[d] += w_j[d] * gp[d]


# --- the autograd Function ----------------------------------------------------------------------


def _np(t: torch.Tensor) -> np.ndarray:
    """A NumPy view of a CPU tensor (shared memory, no copy)."""
    return t.detach().numpy()


def _set_threads() -> int:
    """Run numba's loops on as many threads as torch uses (OMP_NUM_THREADS, set_num_threads).
    numba's OpenMP layer shares torch's libgomp (one thread pool, no second pool spinning
    against it) but sets the OpenMP thread count when it starts its threads, which is torch's
    count too: put torch's back."""
    n_torch = torch.get_num_threads()
    n = max(1, min(n_torch, numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)
    if torch.get_num_threads() != n_torch:
        torch.set_num_threads(n_torch)
    return n


MIN_PAIRS = 16  # split rows into channel groups until there are this many (row, group) pairs


def _groups(n_b: int, n_d: int) -> int:
    """Channel groups per row: 1 for a batch of MIN_PAIRS rows or more. A function of the shape
    only, not of the thread count, so that results do not depend on the threads."""
    return max(1, min(-(-n_d // LANES), -(-MIN_PAIRS // n_b)))


class ScanKernel(torch.autograd.Function):
    """out = (scan(u, dt, A, B, C) + D u) · SiLU(z) with per-row lengths (0 at padded steps);
    D and z optional. Δ's bias and softplus stay in PyTorch: a per-step softplus would need a
    scalar log1p, where torch's is vectorised. See the module docstring."""

    @staticmethod
    def forward(ctx, u, dt, A, B, C, D, z, chunk, lengths):
        n_b, L, n_d = u.shape
        u, dt, B, C = (x.contiguous() for x in (u, dt, B, C))
        At = A.t().contiguous()  # (N, D): channels contiguous, the kernels' vector axis
        has_d, has_z = D is not None, z is not None
        D_c = D.contiguous() if has_d else u.new_zeros(1)
        z_c = z.contiguous() if has_z else u.new_zeros(1, 1, 1)
        groups = _groups(n_b, n_d)
        keep = any(ctx.needs_input_grad[:7])  # no states when nothing needs a gradient
        n_states = -(-L // chunk)
        states = u.new_empty((n_b, n_states, A.shape[1], n_d) if keep else (1, 1, 1, 1))
        ys = torch.empty_like(u) if keep and has_z else u.new_empty(1, 1, 1)
        out = torch.empty_like(u)
        _set_threads()
        _forward_kernel(_np(u), _np(dt), _np(At), _np(B), _np(C), _np(D_c), _np(z_c),
                        _np(lengths), has_d, has_z, chunk, groups, _np(out), _np(ys),
                        _np(states), keep)
        if keep:
            ctx.save_for_backward(u, dt, At, B, C, D_c, z_c, lengths, states, ys)
            ctx.chunk, ctx.groups, ctx.has_d, ctx.has_z = chunk, groups, has_d, has_z
        return out

    @staticmethod
    def backward(ctx, g_out):
        u, dt, At, B, C, D_c, z_c, lengths, states, ys = ctx.saved_tensors
        n_b, L, n_d = u.shape
        n = At.shape[0]
        groups = ctx.groups
        g_u, g_dt = torch.empty_like(u), torch.empty_like(u)
        g_z = torch.empty_like(u) if ctx.has_z else u.new_empty(1, 1, 1)
        g_A = u.new_empty(n_b, n, n_d)  # per row; summed below
        g_D = u.new_empty(n_b, n_d) if ctx.has_d else u.new_empty(1, 1)
        g_B, g_C = u.new_zeros(groups, n_b, L, n), u.new_zeros(groups, n_b, L, n)
        threads = _set_threads()
        _backward_kernel(_np(u), _np(dt), _np(At), _np(B), _np(C), _np(D_c), _np(z_c),
                         _np(lengths), ctx.has_d, ctx.has_z, ctx.chunk, groups, _np(states),
                         _np(ys), _np(g_out.contiguous()), _np(g_u), _np(g_dt), _np(g_z),
                         _np(g_A), _np(g_D), _np(g_B), _np(g_C), threads)
        g_B = g_B[0] if groups == 1 else g_B.sum(0)
        g_C = g_C[0] if groups == 1 else g_C.sum(0)
        return (g_u, g_dt, g_A.sum(0).t(), g_B, g_C, g_D.sum(0) if ctx.has_d else None,
                g_z if ctx.has_z else None, None, None)


def selective_scan_kernel(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    chunk: int | None = None,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """`scan.selective_scan`'s contract, the recurrence computed by the numba kernels (CPU
    tensors, float32 or float64). Shapes: u, delta, z (B, L, D); A (D, N); B, C (B, L, N);
    D, delta_bias (D,); lengths (B,): steps at or past a row's length output 0 and do not touch
    its state."""
    from matrrec_cli.models.scan import _effective_delta

    if not available():
        raise UsageError(f"the numba scan kernel cannot run: {reason()}")
    if u.device.type != "cpu":
        raise UsageError(f"the numba scan kernel runs on CPU tensors, not {u.device.type}")
    if u.dtype not in (torch.float32, torch.float64):
        raise UsageError(f"the numba scan kernel runs in float32 or float64, not {u.dtype}")
    n_b, L, _ = u.shape
    dt = _effective_delta(delta, delta_bias, delta_softplus).to(u.dtype)
    lens = (torch.full((n_b,), L, dtype=torch.int64) if lengths is None
            else lengths.to(device="cpu", dtype=torch.int64).clamp(0, L).contiguous())
    D, z = (None if x is None else x.to(u.dtype) for x in (D, z))
    return ScanKernel.apply(u, dt, A.to(u.dtype), B.to(u.dtype), C.to(u.dtype), D, z,
                            chunk or CHUNK, lens)


class CausalConvSiLU(torch.autograd.Function):
    """SiLU(causal depthwise conv1d(x)) in the (B, L, Din) layout, fused: see
    `causal_conv1d_silu`."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        x = x.contiguous()
        wT = weight[:, 0, :].t().contiguous()  # (k, Din): channels contiguous
        out = torch.empty_like(x)
        _set_threads()
        _conv_forward_kernel(_np(x), _np(wT), _np(bias), _np(out))
        ctx.save_for_backward(x, wT, bias)
        return out

    @staticmethod
    def backward(ctx, g_out):
        x, wT, bias = ctx.saved_tensors
        n_b = x.shape[0]
        g_x = torch.empty_like(x)
        g_w = x.new_empty(n_b, *wT.shape)  # per row; summed below
        g_bias = x.new_empty(n_b, wT.shape[1])
        _set_threads()
        _conv_backward_kernel(_np(x), _np(wT), _np(bias), _np(g_out.contiguous()), _np(g_x),
                              _np(g_w), _np(g_bias))
        return g_x, g_w.sum(0).t()[:, None, :], g_bias.sum(0)


def causal_conv1d_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
                       ) -> torch.Tensor:
    """F.silu(F.conv1d(x.transpose(1, 2), weight, bias, padding=k - 1, groups=Din)[..., :L])
    .transpose(1, 2) in one numba loop each way: x (B, L, Din) -> (B, L, Din), weight
    (Din, 1, k), bias (Din,). The block's depthwise conv and SiLU cost as much as an attention
    block in eager PyTorch on a CPU (mkldnn's depthwise backward, and silu_backward on the
    transposed layout); here they are a few passes over (B, L, Din)."""
    dtype = x.dtype
    return CausalConvSiLU.apply(x, weight.to(dtype), bias.to(dtype))
