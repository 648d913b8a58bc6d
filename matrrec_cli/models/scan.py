"""The selective scan of Mamba (protocol §7, step 6) in plain PyTorch, fast and memory-bounded.

    h_t = exp(Δ_t A) ⊙ h_{t-1} + (Δ_t u_t) B_tᵀ,   y_t = h_t C_t          h: (B, D, N) per step

`selective_scan` is a custom autograd Function built for CPUs (measured in
docs/measurements.md and bench/bench_mamba.py):
* exact and stable: a plain sequential recurrence, every decay factor exp(Δ·A) ≤ 1, never the
  closed form with exp(+|A|·ΣΔ) (protocol §7 porting notes);
* vectorised: for a chunk of T steps, the decays exp(Δ_t A) and the inputs Δ_t u_t B_t are made in
  one op each, so the only sequential work is one in-place `addcmul_` per step on (B, D, N);
* bounded: the (B, L, D, N) states are never kept. Forward keeps the state at chunk boundaries
  only; backward recomputes a chunk from its boundary and runs the adjoint recurrence
    g_t = C_t ⊗ gy_t + exp(Δ_{t+1} A) ⊙ g_{t+1}
  in reverse, reading the gradients of Δ, A, u, B, C off per-chunk tensors. Peak extra memory is
  (L/T)·B·D·N for the boundaries plus a few T·b·D·N buffers (b = batch slice).

Cost on a 2-core CPU (bench/bench_mamba.py): the scan is ~80% of the block's forward+backward, about
20 passes over B·L·D·N elements that eager PyTorch cannot fuse; exp(Δ_t A) alone is B·L·D·N
exponentials. A torch.compile'd chunk forward was 3x faster but its compiled backward was 10x
slower than this one, so nothing here is compiled.

`selective_scan_ref` is the plain per-step autograd loop, kept as the reference for tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CHUNK = 16  # steps per chunk: boundary states cost L/CHUNK copies of (B, D, N)
SLICE_ELEMS = 1 << 22  # max elements of one (T, b, D, N) work buffer (16 MB fp32): bounds memory
SLICE_ELEMS_CUDA = 1 << 26  # on a GPU fewer, larger slices: kernel launches cost more than memory


def _effective_delta(delta: torch.Tensor, delta_bias: torch.Tensor | None,
                     softplus: bool) -> torch.Tensor:
    """Δ as the scan uses it: + dt bias, then softplus (mamba_ssm's delta_bias/delta_softplus)."""
    if delta_bias is not None:
        delta = delta + delta_bias
    return F.softplus(delta) if softplus else delta


def _skip_and_gate(y: torch.Tensor, u: torch.Tensor, D: torch.Tensor | None,
                   z: torch.Tensor | None) -> torch.Tensor:
    """The D skip (y + u·D) and the SiLU(z) gate, when given."""
    if D is not None:
        y = y + u * D
    return y * F.silu(z) if z is not None else y


def selective_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
) -> torch.Tensor:
    """Plain per-step scan with autograd through the loop (slow, for tests).

    Shapes (batch-major, as our block uses them): u, delta, z (B, L, D); A (D, N); B, C (B, L, N);
    D, delta_bias (D,). Returns y (B, L, D), with the D skip and the SiLU(z) gate when given.
    """
    delta = _effective_delta(delta, delta_bias, delta_softplus)
    h = u.new_zeros(u.shape[0], u.shape[2], A.shape[1])  # (B, D, N)
    ys = []
    # unbind, not x[:, t]: indexing makes autograd zero-fill a full tensor per step (O(L²)).
    steps = zip(u.unbind(1), delta.unbind(1), B.unbind(1), C.unbind(1), strict=True)
    for u_t, d_t, b_t, c_t in steps:
        h = torch.exp(d_t[:, :, None] * A) * h + (d_t * u_t)[:, :, None] * b_t[:, None, :]
        ys.append(torch.einsum("bdn,bn->bd", h, c_t))
    y = torch.stack(ys, dim=1)  # (B, L, D)
    return _skip_and_gate(y, u, D, z)


def _slices(n_batch: int, per_row: int, chunk: int, device: torch.device) -> list[slice]:
    """Batch slices whose (chunk, b, D, N) work buffers stay under SLICE_ELEMS elements."""
    budget = SLICE_ELEMS_CUDA if device.type == "cuda" else SLICE_ELEMS
    rows = max(1, budget // (chunk * per_row))
    return [slice(i, min(i + rows, n_batch)) for i in range(0, n_batch, rows)]


def _chunk_forward(
    h0: torch.Tensor, delta: torch.Tensor, du: torch.Tensor, A: torch.Tensor,
    B: torch.Tensor, dA: torch.Tensor, hs: torch.Tensor, steps: list[int] | None = None,
) -> None:
    """Fill dA = exp(Δ A) and hs = the states of one chunk, in place. Time-major shapes:
    h0 (b, D, N); delta, du (T, b, D); B (T, b, N); dA, hs (T, b, D, N).
    `steps[t]`: rows still inside their history at step t (rows sorted longest first); the
    recurrence skips the others, whose states at those steps are then left unfinished."""
    torch.mul(delta[..., None], A, out=dA)
    dA.exp_()
    torch.mul(du[..., None], B[:, :, None, :], out=hs)
    if steps is None:
        hs[0].addcmul_(dA[0], h0)
        for t in range(1, hs.shape[0]):
            hs[t].addcmul_(dA[t], hs[t - 1])
        return
    m = steps[0]
    hs[0, :m].addcmul_(dA[0, :m], h0[:m])
    for t in range(1, hs.shape[0]):
        m = steps[t]
        if m == 0:
            break
        hs[t, :m].addcmul_(dA[t, :m], hs[t - 1, :m])


def _buffers(n_buf: int, chunk: int, b: int, d: int, n: int, like: torch.Tensor
             ) -> list[torch.Tensor]:
    """Flat (chunk·b·D·N) work buffers; `_view` carves a contiguous (T, a, D, N) from one."""
    return [like.new_empty(chunk * b * d * n) for _ in range(n_buf)]


def _view(buf: torch.Tensor, tc: int, a: int, d: int, n: int) -> torch.Tensor:
    return buf[: tc * a * d * n].view(tc, a, d, n)


def _chunks(L: int, chunk: int, counts: list[int] | None) -> list[tuple[int, int]]:
    """Chunk bounds (t0, t1): every `chunk` steps, or with `counts` also wherever the live rows
    fall below half the chunk's first step, so that no chunk wastes much work on rows whose
    histories have ended (short histories: many short chunks first, then long ones)."""
    bounds = []
    t0 = 0
    while t0 < L:
        t1 = t0 + 1
        while t1 < min(t0 + chunk, L) and (counts is None or 2 * counts[t1] >= counts[t0]):
            t1 += 1
        bounds.append((t0, t1))
        t0 = t1
    return bounds


def _active(counts: list[int] | None, t: int, b: int) -> int:
    """Rows still inside their history at step t (all b rows when lengths are not given)."""
    return b if counts is None else (counts[t] if t < len(counts) else 0)


def _scan_slice(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    chunk: int, counts: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward over one batch slice, time-major: returns y (L, b, D) and the chunk-entry states
    (n_chunks, b, D, N). With `counts` (rows sorted longest first, counts[t] = rows whose
    history reaches step t) each chunk runs on its live rows only; y is 0 past a row's chunk."""
    L, b, d = u.shape
    n = A.shape[1]
    du = delta * u  # (L, b, D)
    y = u.new_empty(L, b, d) if counts is None else u.new_zeros(L, b, d)
    bounds = _chunks(L, chunk, counts)
    h0s = u.new_empty(len(bounds), b, d, n)
    dA_buf, hs_buf = _buffers(2, chunk, b, d, n, u)
    h0s[0].zero_()
    for i, (t0, t1) in enumerate(bounds):
        tc = t1 - t0
        a = _active(counts, t0, b)
        if a == 0:  # sorted rows: no later chunk has live rows either
            break
        dA, hs = _view(dA_buf, tc, a, d, n), _view(hs_buf, tc, a, d, n)
        steps = None if counts is None else counts[t0:t1]
        _chunk_forward(h0s[i, :a], delta[t0:t1, :a], du[t0:t1, :a], A, B[t0:t1, :a], dA, hs,
                       steps)
        # y_t = h_t C_t as one batched mat-vec over the chunk: (T·a, D, N) @ (T·a, N, 1)
        if a == b:
            torch.matmul(hs.view(tc * b, d, n), C[t0:t1].reshape(tc * b, n, 1),
                         out=y[t0:t1].view(tc * b, d, 1))
        else:
            y[t0:t1, :a] = torch.matmul(hs.view(tc * a, d, n),
                                        C[t0:t1, :a].reshape(tc * a, n, 1)).view(tc, a, d)
        if i + 1 < len(bounds):
            a_next = _active(counts, t1, b)
            h0s[i + 1, :a_next] = hs[tc - 1, :a_next]
    return y, h0s


def _scan_slice_backward(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    h0s: torch.Tensor, gy: torch.Tensor, chunk: int, counts: list[int] | None = None,
) -> tuple[torch.Tensor, ...]:
    """Backward over one batch slice, time-major; returns grads of u, delta, A, B, C.
    With `counts` (see `_scan_slice`) gy must be 0 past each row's length; the grads are then
    0 there too and only live rows are computed."""
    L, b, d = u.shape
    n = A.shape[1]
    du = delta * u
    new = torch.empty_like if counts is None else torch.zeros_like
    g_du, g_delta, g_B, g_C = new(u), new(u), new(B), new(C)
    g_A = torch.zeros_like(A)
    dA_buf, hs_buf, gh_buf = _buffers(3, chunk, b, d, n, u)
    carry = None  # exp(Δ A) ⊙ g at the first step of the chunk to the right, its live rows
    for i, (t0, t1) in reversed(list(enumerate(_chunks(L, chunk, counts)))):
        tc = t1 - t0
        a = _active(counts, t0, b)
        if a == 0:
            continue
        dA_c, hs_c, gh_c = (_view(x, tc, a, d, n) for x in (dA_buf, hs_buf, gh_buf))
        delta_c, du_c, B_c, C_c, gy_c = (x[t0:t1, :a] for x in (delta, du, B, C, gy))
        _chunk_forward(h0s[i, :a], delta_c, du_c, A, B_c, dA_c, hs_c,
                       None if counts is None else counts[t0:t1])
        # dL/dC_t = gy_tᵀ h_t: (T·a, 1, D) @ (T·a, D, N)
        if a == b:
            torch.matmul(gy_c.reshape(tc * b, 1, d), hs_c.view(tc * b, d, n),
                         out=g_C[t0:t1].view(tc * b, 1, n))
        else:
            g_C[t0:t1, :a] = torch.matmul(gy_c.reshape(tc * a, 1, d),
                                          hs_c.view(tc * a, d, n)).view(tc, a, n)
        # Adjoint recurrence, newest step first: g_t = C_t gy_t + exp(Δ_{t+1} A) g_{t+1}
        torch.mul(gy_c[..., None], C_c[:, :, None, :], out=gh_c)
        if carry is not None:
            gh_c[tc - 1, : carry.shape[0]] += carry
        for t in range(tc - 2, -1, -1):
            m = _active(counts, t0 + t + 1, a)  # rows whose step t+1 is real: g_{t+1} != 0
            gh_c[t, :m].addcmul_(dA_c[t + 1, :m], gh_c[t + 1, :m])
        carry = dA_c[0] * gh_c[0]
        # Input term (Δu) B: dL/d(Δu) = g B, dL/dB = (Δu)ᵀ g
        g_du_c = torch.matmul(gh_c.view(tc * a, d, n), B_c.reshape(tc * a, n, 1))
        g_B_c = torch.matmul(du_c.reshape(tc * a, 1, d), gh_c.view(tc * a, d, n))
        g_du[t0:t1, :a] = g_du_c.view(tc, a, d)
        g_B[t0:t1, :a] = g_B_c.view(tc, a, n)
        # Decay term: dL/d(ΔA) = g_t ⊙ h_{t-1} ⊙ exp(ΔA), formed in place in gh.
        gh_c[1:].mul_(hs_c[:-1])
        gh_c[0].mul_(h0s[i, :a])
        gh_c.mul_(dA_c)
        # Contract per channel d with strided batched matmuls (no permuted copies):
        # dL/dA[d] = Σ_k Δ[k,d] gX[k,d,:] and dL/dΔ[k,d] = gX[k,d,:]·A[d,:], k = (t, b).
        g_x = gh_c.view(tc * a, d, n).transpose(0, 1)  # (D, T·a, N), strided view
        g_A += torch.bmm(delta_c.reshape(tc * a, d).t()[:, None, :], g_x)[:, 0]
        g_delta[t0:t1, :a] = torch.bmm(g_x, A[:, :, None])[..., 0].t().view(tc, a, d)
    g_delta += g_du * u
    return g_du * delta, g_delta, g_A, g_B, g_C


def _tm(x: torch.Tensor) -> torch.Tensor:
    """(b, L, ...) -> contiguous time-major (L, b, ...)."""
    return x.transpose(0, 1).contiguous()


def _slice_counts(lengths: list[int] | None, sl: slice, L: int) -> list[int] | None:
    """counts[t] = rows of the slice whose history reaches step t (lengths sorted, longest
    first), or None for full rows."""
    if lengths is None:
        return None
    lens = torch.tensor(lengths[sl])
    return (lens[:, None] > torch.arange(L)[None, :]).sum(0).tolist()


class SelectiveScan(torch.autograd.Function):
    """y = scan(u, Δ, A, B, C) without the D skip and the gate; see the module docstring.
    Batch slices are scanned one after another so that work buffers stay bounded.
    `lengths` (rows sorted longest first) makes each slice skip the steps past its rows'
    histories; y is then unspecified there and the caller must mask it (see selective_scan)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, chunk: int = CHUNK, lengths: list[int] | None = None):
        y = torch.empty_like(u)
        h0s = []
        slices = _slices(u.shape[0], A.numel(), chunk, u.device)
        counts = [_slice_counts(lengths, sl, u.shape[1]) for sl in slices]
        for sl, counts_s in zip(slices, counts, strict=True):
            y_s, h0s_s = _scan_slice(_tm(u[sl]), _tm(delta[sl]), A, _tm(B[sl]), _tm(C[sl]), chunk,
                                     counts_s)
            y[sl] = y_s.transpose(0, 1)
            h0s.append(h0s_s)
        ctx.save_for_backward(u, delta, A, B, C, *h0s)
        ctx.chunk = chunk
        ctx.slices, ctx.counts = slices, counts  # backward walks the same slices and chunks
        return y

    @staticmethod
    def backward(ctx, gy):
        u, delta, A, B, C, *h0s = ctx.saved_tensors
        grads = [torch.empty_like(u), torch.empty_like(delta), torch.zeros_like(A),
                 torch.empty_like(B), torch.empty_like(C)]
        for sl, h0s_s, counts_s in zip(ctx.slices, h0s, ctx.counts, strict=True):
            g_u, g_delta, g_A, g_B, g_C = _scan_slice_backward(
                _tm(u[sl]), _tm(delta[sl]), A, _tm(B[sl]), _tm(C[sl]), h0s_s, _tm(gy[sl]),
                ctx.chunk, counts_s)
            grads[0][sl] = g_u.transpose(0, 1)
            grads[1][sl] = g_delta.transpose(0, 1)
            grads[2] += g_A
            grads[3][sl] = g_B.transpose(0, 1)
            grads[4][sl] = g_C.transpose(0, 1)
        return (*grads, None, None)


def selective_scan(
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
    """Same contract as `selective_scan_ref`, computed by `SelectiveScan`.

    `lengths` (B,): rows are right-padded histories of these lengths; the scan then skips the
    padded steps (a live row's steps are computed exactly, padded steps cost nothing) and
    returns 0 at them. Exact for models that never read a padded position's output, which a
    causal, right-padding-invariant model does not; only float rounding of A's gradient (a sum
    over fewer, reordered terms) differs from the dense scan."""
    delta = _effective_delta(delta, delta_bias, delta_softplus)
    if lengths is None:
        y = SelectiveScan.apply(u, delta, A, B, C, chunk or CHUNK)
        return _skip_and_gate(y, u, D, z)
    L = u.shape[1]
    lengths = lengths.clamp(0, L)
    order = torch.argsort(lengths, descending=True, stable=True)
    inverse = torch.argsort(order)
    u_s, delta_s, B_s, C_s = (x.index_select(0, order) for x in (u, delta, B, C))
    y = SelectiveScan.apply(u_s, delta_s, A, B_s, C_s, chunk or CHUNK,
                            lengths[order].tolist()).index_select(0, inverse)
    valid = torch.arange(L, device=u.device)[None, :] < lengths[:, None]  # (B, L)
    return _skip_and_gate(y, u, D, z) * valid[..., None]
