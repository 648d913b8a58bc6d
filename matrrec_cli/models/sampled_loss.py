"""Sampled softmax with the logQ correction (`--set loss=sampled`), for catalogs where the full
cross-entropy is the cost of an epoch.

Per batch, `negatives` items are drawn once from q (uniform over the items, or their training
popularity) and shared by every row, as gSASRec and eSASRec do. Each row's logits are its
target's and the negatives', each minus log(negatives * q(item)) (Bengio & Senecal; Yi et al.
2019), so the sampled loss estimates the full softmax's; a negative that is the row's own target
is masked out (an accidental hit). Evaluation stays full-ranking: only the training loss
changes. The draw uses the global torch generator, so on several ranks every rank draws the
same negatives (distributed.sync_random_state) and the loss is the one-process loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class SampledSoftmax:
    """The sampled loss of a model whose output layer is its tied item embedding."""

    def __init__(self, q: torch.Tensor, negatives: int) -> None:
        """q: (n_items,) sampling probabilities, 0 for padding; negatives: items per batch."""
        self.q, self.negatives = q / q.sum(), int(negatives)

    @classmethod
    def build(cls, n_items: int, negatives: int, sampler: str,
              counts: torch.Tensor | None = None) -> SampledSoftmax:
        """`uniform` over items 1..n_items-1, or `popularity` by the training counts."""
        if sampler == "popularity" and counts is not None:
            q = counts.double().clamp(min=0)
        else:
            q = torch.ones(n_items, dtype=torch.float64)
        q[0] = 0.0  # padding is never a negative
        return cls(q, negatives)

    def loss(self, h: torch.Tensor, weight: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean sampled CE of rows h (N, D) with targets y (N,) against items weight (V, D)."""
        q = self.q.to(h.device)
        neg = torch.multinomial(q, self.negatives, replacement=True)  # (K,)
        log_nq = torch.log(self.negatives * q).to(h.dtype)  # (V,)
        pos = (h * weight[y]).sum(-1) - log_nq[y]  # (N,)
        negs = h @ weight[neg].T - log_nq[neg]  # (N, K)
        negs = negs.masked_fill(neg[None, :] == y[:, None], float("-inf"))  # accidental hits
        logits = torch.cat([pos[:, None], negs], dim=1)  # the target is class 0
        return F.cross_entropy(logits, torch.zeros_like(y))
