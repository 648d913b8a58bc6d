"""NextItNet (protocol §10), RecBole 1.2.1 `nextitnet.py` with its parameter names.

    E[seq] -> 10 residual blocks "b" (dilations [1, 4] x 5) -> hidden at slot L-1 -> Linear

Each block: causal left padding, Conv2d (1, k) dilation d -> LN(eps 1e-8) -> ReLU -> Conv2d
dilation 2d -> LN -> ReLU, plus the block input. The convolutions only look left, so `encode` is
causal, but the model reads out at the LAST ARRAY SLOT L-1, not at len-1.

Quirk (faithful default, `readout="last_slot"`): with right padding, slot L-1 is a pad position for
every history shorter than L, so the prediction is made from the pads that follow the history.
This is a plain bug of the port (the original NextItNet left-pads), so `readout="len"` reads at
len-1 instead. Loss: CE + reg_weight·(‖E‖₂ + ‖W_final‖₂ + Σ‖w‖₂ over residual-block "*weight"
parameters), plain not squared L2 norms, as RecBole's RegLoss and `reg_loss_rb`.
Init: E ~ U(±√(1/n_items)) (padding row too), Linear xavier_normal with bias 0.1, Conv2d default.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from matrrec_cli.errors import MatrrecError
from matrrec_cli.models.base import SeqBatch, SequentialRecommender, gather_last


@dataclasses.dataclass
class NextItNetConfig:
    """RecBole 1.2.1 `properties/model/NextItNet.yaml` (the released yaml overrides nothing)."""

    embedding_size: int = 64  # item embedding width = residual channels
    kernel_size: int = 3  # conv width
    block_num: int = 5  # the dilation list is repeated this many times
    dilations: tuple[int, ...] = (1, 4)  # so 10 residual blocks with dilations 1, 4, 1, 4, ...
    reg_weight: float = 1e-5  # weight of the plain L2 norms added to the CE loss
    readout: Literal["last_slot", "len"] = "last_slot"  # last_slot: RecBole's quirk; len: fixed

    def __post_init__(self) -> None:
        if self.readout not in ("last_slot", "len"):
            raise MatrrecError(f"nextitnet readout must be last_slot or len, not {self.readout!r}")


class ResidualBlock_b(nn.Module):
    """Two dilated causal convolutions with LayerNorm and ReLU, plus the input."""

    def __init__(self, channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=(1, kernel_size), dilation=dilation)
        self.ln1 = nn.LayerNorm(channels, eps=1e-8)
        self.conv2 = nn.Conv2d(
            channels, channels, kernel_size=(1, kernel_size), dilation=dilation * 2
        )
        self.ln2 = nn.LayerNorm(channels, eps=1e-8)
        self.dilation = dilation
        self.kernel_size = kernel_size

    def _conv(self, conv: nn.Conv2d, x: torch.Tensor, dilation: int) -> torch.Tensor:
        x = x.transpose(1, 2).unsqueeze(2)  # (B, C, 1, L)
        x = F.pad(x, ((self.kernel_size - 1) * dilation, 0))  # left pad only: causal
        return conv(x).squeeze(2).transpose(1, 2)  # (B, L, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.ln1(self._conv(self.conv1, x, self.dilation)))
        out2 = F.relu(self.ln2(self._conv(self.conv2, out, self.dilation * 2)))
        return out2 + x


class NextItNet(SequentialRecommender):
    """NextItNet with CE over all items against the tied item embedding."""

    Config = NextItNetConfig
    causal = True  # encode() is causal; the faithful read-out still sits at slot L-1
    supports_all_objective = False  # RecBole trains the single read-out slot only
    right_padding_invariant = False  # slot L-1 moves with the array length (the quirk)

    def __init__(self, *, n_items: int, max_len: int, config: NextItNetConfig) -> None:
        super().__init__(n_items=n_items, max_len=max_len, config=config)
        cfg = config
        C = cfg.embedding_size
        self.item_embedding = nn.Embedding(n_items, C, padding_idx=0)
        self.residual_blocks = nn.Sequential(
            *[ResidualBlock_b(C, cfg.kernel_size, d) for d in list(cfg.dilations) * cfg.block_num]
        )
        self.final_layer = nn.Linear(C, C)
        with torch.no_grad():  # RecBole's _init_weights, in `self.apply` order
            stdv = math.sqrt(1.0 / n_items)
            self.item_embedding.weight.uniform_(-stdv, stdv)
            nn.init.xavier_normal_(self.final_layer.weight)
            self.final_layer.bias.fill_(0.1)

    def encode(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """final_layer applied at every position (B, L, D); causal."""
        return self.final_layer(self.residual_blocks(self.item_embedding(item_seq)))

    def seq_repr(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.residual_blocks(self.item_embedding(item_seq))  # (B, L, C)
        if self.config.readout == "len":
            return self.final_layer(gather_last(h, lengths))
        return self.final_layer(h[:, -1])  # slot L-1, a pad for short histories (the quirk)

    def calculate_loss(self, batch: SeqBatch) -> torch.Tensor:
        assert batch.target is not None, "NextItNet trains on objective 'prefix' only"
        logits = self.item_scores(self.seq_repr(batch.item_seq, batch.lengths))  # (B, n_items)
        loss = F.cross_entropy(logits, batch.target)
        w = self.config.reg_weight
        if w > 0.0:
            reg = self.item_embedding.weight.norm(2) + self.final_layer.weight.norm(2)
            reg_rb = sum(
                p.norm(2) for n, p in self.residual_blocks.named_parameters()
                if n.endswith("weight")
            )
            loss = loss + w * reg + w * reg_rb
        return loss
