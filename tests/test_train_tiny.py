"""The tiny model of tests/helpers.py honours the contract the trainer uses."""

from __future__ import annotations

import torch
from helpers import TinyConfig, TinyGRU

from matrrec_cli.models.base import SeqBatch


def test_tiny_model_is_causal() -> None:
    torch.manual_seed(0)
    model = TinyGRU(n_items=11, max_len=6, config=TinyConfig()).eval()
    seq = torch.tensor([[3, 4, 5, 6, 0, 0]])
    changed = seq.clone()
    changed[0, 3] = 9
    h1, h2 = model.encode(seq, torch.tensor([4])), model.encode(changed, torch.tensor([4]))
    assert torch.equal(h1[:, :3], h2[:, :3])
    assert not torch.equal(h1[:, 3], h2[:, 3])


def test_tiny_model_losses_agree_on_one_pair() -> None:
    """With a single position the two objectives are the same cross-entropy."""
    torch.manual_seed(0)
    model = TinyGRU(n_items=11, max_len=4, config=TinyConfig(dropout_prob=0.0))
    seq = torch.tensor([[3, 0, 0, 0]])
    prefix = model.calculate_loss(SeqBatch(seq, torch.tensor([1]), target=torch.tensor([7])))
    targets = torch.tensor([[7, 0, 0, 0]])
    every = model.calculate_loss(SeqBatch(seq, torch.tensor([1]), targets=targets))
    assert torch.allclose(prefix, every)
