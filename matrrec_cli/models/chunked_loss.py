"""Cross-entropy over every item without the full logits matrix.

F.cross_entropy(h @ W.T + b, y) holds N x n_items logits, and autograd keeps them for the
backward pass: with the `all` objective at batch 2048 x L 50 over Electronics' 63k items that is
26 GB, over a 500k-item catalog far past any machine. `cross_entropy` here computes the same
mean loss chunk by chunk of rows, keeping only each row's log-sum-exp, and the backward pass
recomputes each chunk's logits: memory ~ chunk_rows x n_items, whatever N is. The sums run in
another order, so the result equals the unchunked one to float rounding; below the memory
budget the unchunked F.cross_entropy runs, so small catalogs (and the pinned runs) keep their
bits.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

LOGITS_BUDGET = 256 * 2**20  # bytes of logits one chunk may hold


def chunk_rows(n_items: int, *, itemsize: int = 4, budget: int = LOGITS_BUDGET) -> int:
    """How many rows' logits fit the budget (at least one)."""
    return max(1, budget // max(1, n_items * itemsize))


class _ChunkedCE(torch.autograd.Function):
    """Mean CE of rows h (N, D) against items W (V, D) (+ bias b (V,)), targets y (N,)."""

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                y: torch.Tensor, rows: int) -> torch.Tensor:
        lse = torch.empty(h.shape[0], dtype=h.dtype, device=h.device)
        picked = torch.empty_like(lse)
        for lo in range(0, h.shape[0], rows):
            logits = h[lo:lo + rows] @ weight.T  # (c, V)
            if bias is not None:
                logits = logits + bias
            lse[lo:lo + rows] = torch.logsumexp(logits, dim=1)
            picked[lo:lo + rows] = logits.gather(1, y[lo:lo + rows, None]).squeeze(1)
        ctx.save_for_backward(h, weight, bias if bias is not None else torch.empty(0), y, lse)
        ctx.rows, ctx.has_bias = rows, bias is not None
        return (lse - picked).mean()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        h, weight, bias, y, lse = ctx.saved_tensors
        scale = grad / h.shape[0]
        gh = torch.empty_like(h) if ctx.needs_input_grad[0] else None
        gw = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        gb = torch.zeros_like(bias) if ctx.has_bias and ctx.needs_input_grad[2] else None
        for lo in range(0, h.shape[0], ctx.rows):
            hc = h[lo:lo + ctx.rows]
            logits = hc @ weight.T
            if ctx.has_bias:
                logits = logits + bias
            p = torch.exp(logits - lse[lo:lo + ctx.rows, None])  # softmax, (c, V)
            p[torch.arange(len(hc), device=p.device), y[lo:lo + ctx.rows]] -= 1.0
            p = p * scale
            if gh is not None:
                gh[lo:lo + ctx.rows] = p @ weight
            if gw is not None:
                gw += p.T @ hc
            if gb is not None:
                gb += p.sum(0)
        return gh, gw, gb, None, None


def cross_entropy(h: torch.Tensor, weight: torch.Tensor, y: torch.Tensor,
                  bias: torch.Tensor | None = None, *, budget: int | None = None
                  ) -> torch.Tensor:
    """F.cross_entropy(h @ weight.T (+ bias), y), the mean over rows, in chunks of rows when
    the full logits would pass `budget` bytes (LOGITS_BUDGET by default)."""
    rows = chunk_rows(weight.shape[0], itemsize=h.element_size(),
                      budget=LOGITS_BUDGET if budget is None else budget)
    if h.shape[0] <= rows:
        logits = h @ weight.T
        return F.cross_entropy(logits if bias is None else logits + bias, y)
    return _ChunkedCE.apply(h, weight, bias, y, rows)
