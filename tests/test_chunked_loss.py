"""The chunked cross-entropy: the unchunked loss and gradients to float rounding, while no chunk
holds more logits than its budget; below the budget the unchunked path itself (same bits)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from matrrec_cli.models import chunked_loss
from matrrec_cli.models.base import SeqBatch


def _grads(loss_fn, h, w, b):
    h, w = h.clone().requires_grad_(), w.clone().requires_grad_()
    b = None if b is None else b.clone().requires_grad_()
    loss = loss_fn(h, w, b)
    loss.backward()
    return loss.detach(), h.grad, w.grad, None if b is None else b.grad


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_chunks_give_the_unchunked_loss_and_gradients(bias: bool, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    n, v, d = 37, 53, 8
    h = torch.randn(n, d, generator=g, dtype=dtype)
    w = torch.randn(v, d, generator=g, dtype=dtype)
    b = torch.randn(v, generator=g, dtype=dtype) if bias else None
    y = torch.randint(0, v, (n,), generator=g)

    def full(h, w, b):
        logits = h @ w.T
        return F.cross_entropy(logits if b is None else logits + b, y)

    def chunked(h, w, b):  # a budget of 5 rows' logits: 8 chunks, the last one short
        return chunked_loss.cross_entropy(h, w, y, b, budget=5 * v * h.element_size())

    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for a, c in zip(_grads(full, h, w, b), _grads(chunked, h, w, b), strict=True):
        if a is not None:
            torch.testing.assert_close(c, a, rtol=tol, atol=tol)


def test_below_the_budget_it_is_f_cross_entropy_bit_for_bit() -> None:
    h, w = torch.randn(6, 4), torch.randn(9, 4)
    y = torch.tensor([0, 1, 2, 3, 4, 8])
    assert torch.equal(chunked_loss.cross_entropy(h, w, y), F.cross_entropy(h @ w.T, y))


@pytest.mark.parametrize("objective", ["prefix", "all"])
def test_a_model_trains_the_same_in_chunks(objective: str, monkeypatch) -> None:
    """SASRec's loss and every parameter's gradient, both objectives, chunked vs not."""
    from matrrec_cli.models import build_model

    torch.manual_seed(0)
    model = build_model("sasrec", n_items=40, max_len=6,
                        overrides={"hidden_size": 8, "inner_size": 16,
                                   "hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0})
    seq = torch.randint(1, 40, (5, 6))
    lengths = torch.tensor([6, 4, 3, 6, 1])
    seq[torch.arange(6)[None, :] >= lengths[:, None]] = 0
    batch = SeqBatch(item_seq=seq, lengths=lengths)
    if objective == "all":
        batch.targets = torch.where(seq > 0, torch.randint(1, 40, (5, 6)), 0)
    else:
        batch.target = torch.randint(1, 40, (5,))

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        loss = model.calculate_loss(batch)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    whole, whole_grads = run()
    monkeypatch.setattr(chunked_loss, "LOGITS_BUDGET", 2 * 40 * 4)  # two rows per chunk
    calls = []
    apply = chunked_loss._ChunkedCE.apply
    monkeypatch.setattr(chunked_loss._ChunkedCE, "apply",
                        lambda *a: calls.append(a[-1]) or apply(*a))
    part, part_grads = run()
    assert calls == [2]  # it did run in chunks of two rows
    torch.testing.assert_close(part, whole, rtol=1e-5, atol=1e-6)
    for a, c in zip(whole_grads, part_grads, strict=True):
        torch.testing.assert_close(c, a, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("model_name", ["sasrec", "markov"])
def test_evaluation_batches_shrink_to_the_score_budget_without_moving_a_rank(
        model_name: str, monkeypatch) -> None:
    """Users are scored in batches whose users x items block fits SCORES_BUDGET; the ranks are
    the same at any batch size (a trained model and a count model)."""
    import numpy as np
    from helpers import synthetic_interactions

    from matrrec_cli.data.split import build_sequences, split
    from matrrec_cli.models import build_model
    from matrrec_cli.train import evaluate as ev

    data = split(build_sequences(synthetic_interactions(n_users=25, max_len=12)), max_len=8,
                 objective="prefix")
    torch.manual_seed(0)
    model = build_model(model_name, n_items=data.seqs.n_items, max_len=8,
                        overrides={"hidden_size": 8, "inner_size": 16}
                        if model_name == "sasrec" else None)
    ev.fit_known(model, data, "test")
    whole = ev.evaluate(model, data, split="test")
    seen = []
    scores = model.full_sort_scores
    monkeypatch.setattr(model, "full_sort_scores",
                        lambda seq, lengths: seen.append(len(seq)) or scores(seq, lengths))
    monkeypatch.setattr(ev, "SCORES_BUDGET", 4 * data.seqs.n_items * 3)  # three users a batch
    small = ev.evaluate(model, data, split="test")
    assert max(seen) == 3
    assert np.array_equal(small.ranks, whole.ranks)
