"""RecBole 1.2.1's transformer layers (`recbole/model/layers.py`), parameter names included.

Shared by MaTrRec, SASRec, BERT4Rec and CORE. The faithful path is the explicit formula
softmax(q·kᵀ/√d + mask) with RecBole's additive −10000 mask (protocol §6, §9); everything else
(no residual, SDPA) is a named constructor argument whose default is the faithful behaviour.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from matrrec_cli.errors import MatrrecError
from matrrec_cli.models.draws import Dropout

AttnImpl = Literal["explicit", "sdpa"]


@dataclasses.dataclass
class TransformerConfig:
    """RecBole's transformer keys (SASRec.yaml defaults), shared by the transformer baselines."""

    n_layers: int = 2  # transformer layers; the paper preset sets 1
    n_heads: int = 2  # attention heads; the paper preset sets 1
    hidden_size: int = 64  # embedding and model width
    inner_size: int = 256  # FFN width
    hidden_dropout_prob: float = 0.5  # embeddings, attention output, FFN output
    attn_dropout_prob: float = 0.5  # on the attention probabilities
    layer_norm_eps: float = 1e-12  # every LayerNorm
    initializer_range: float = 0.02  # std of the normal init
    # speed option, not RecBole's: "sdpa" runs torch's fused attention (equal up to rounding,
    # a different dropout RNG stream); the faithful default is the explicit softmax
    attn_impl: AttnImpl = "explicit"

    def __post_init__(self) -> None:
        if self.attn_impl not in ("explicit", "sdpa"):
            raise MatrrecError(f"attn_impl must be explicit or sdpa, not {self.attn_impl!r}")


def attention_mask(
    item_seq: torch.Tensor, bidirectional: bool = False, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """RecBole's `get_attention_mask` (protocol §9): (B, 1, L, L) additive mask, 0.0 where query i
    may attend key j (key is a real item, and j <= i unless bidirectional), −10000.0 elsewhere."""
    L = item_seq.size(1)
    allowed = (item_seq != 0)[:, None, None, :]  # (B, 1, 1, L): key is a real item
    if not bidirectional:
        allowed = torch.tril(allowed.expand(-1, 1, L, -1))  # (B, 1, L, L): and j <= i
    zero = torch.zeros((), dtype=dtype, device=item_seq.device)
    neg = torch.full((), -10000.0, dtype=dtype, device=item_seq.device)  # not -inf: RecBole's value
    # bidirectional rows are all equal: a broadcast view, no (B, L, L) memory
    return torch.where(allowed, zero, neg).expand(-1, 1, L, -1)


@torch.no_grad()
def init_normal_(
    module: nn.Module, std: float = 0.02, skip: tuple[type[nn.Module], ...] = ()
) -> None:
    """RecBole's `_init_weights` applied to every submodule: Linear/Embedding weight ~ N(0, std)
    (the padding row of an Embedding included), Linear bias 0, LayerNorm weight 1 / bias 0.
    Other modules (Conv1d, bare Parameters such as Mamba's A_log and D) are left untouched, and so
    is every module of a type in `skip`, with everything inside it. Children are visited before
    their parent, as `nn.Module.apply` does, so the random stream matches RecBole's order."""

    def _init(m: nn.Module) -> None:
        if isinstance(m, skip):
            return
        for child in m.children():
            _init(child)
        if isinstance(m, (nn.Linear, nn.Embedding)):
            m.weight.normal_(mean=0.0, std=std)
        elif isinstance(m, nn.LayerNorm):
            m.weight.fill_(1.0)
            m.bias.zero_()
        if isinstance(m, nn.Linear) and m.bias is not None:
            m.bias.zero_()

    _init(module)


class MultiHeadAttention(nn.Module):
    """Post-LN self-attention block: LN(Dropout(dense(Attn(x))) + x)."""

    def __init__(
        self,
        n_heads: int,
        hidden_size: int,
        hidden_dropout_prob: float,
        attn_dropout_prob: float,
        layer_norm_eps: float,
        residual: bool = True,  # False: LN(Dropout(dense(Attn(x)))), the "remove RC" ablation
        attn_impl: AttnImpl = "explicit",  # "sdpa": torch's fused kernel, equal up to rounding
    ) -> None:
        super().__init__()
        if attn_impl not in ("explicit", "sdpa"):
            raise ValueError(f"attn_impl must be 'explicit' or 'sdpa', not {attn_impl!r}")
        if hidden_size % n_heads != 0:
            raise ValueError(f"hidden size {hidden_size} is not a multiple of n_heads {n_heads}")
        self.num_attention_heads = n_heads
        self.attention_head_size = hidden_size // n_heads
        self.all_head_size = hidden_size
        self.sqrt_attention_head_size = math.sqrt(self.attention_head_size)
        self.residual = residual
        self.attn_impl = attn_impl

        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.attn_dropout = Dropout(attn_dropout_prob)
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.out_dropout = Dropout(hidden_dropout_prob)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        x = x.view(B, L, self.num_attention_heads, self.attention_head_size)  # (B, L, H, hs)
        return x.transpose(1, 2)  # (B, H, L, hs)

    def forward(self, input_tensor: torch.Tensor, attention_mask: torch.Tensor,
                query_idx: torch.Tensor | None = None) -> torch.Tensor:
        """input_tensor (B, L, D), attention_mask additive (B, 1, L, L) -> (B, L, D).
        With `query_idx` (B,), only that position of each row is a query: -> (B, 1, D), the
        same values as the full output there (keys and values still span all L positions)."""
        B, _, D = input_tensor.shape
        if query_idx is not None:
            k = self._heads(self.key(input_tensor))
            v = self._heads(self.value(input_tensor))
            rows = torch.arange(B, device=input_tensor.device)
            input_tensor = input_tensor[rows, query_idx][:, None]  # (B, 1, D)
            attention_mask = attention_mask[rows, :, query_idx][:, :, None]  # (B, 1, 1, L)
            q = self._heads(self.query(input_tensor))  # (B, H, 1, hs)
        else:
            q = self._heads(self.query(input_tensor))  # (B, H, L, hs)
            k = self._heads(self.key(input_tensor))
            v = self._heads(self.value(input_tensor))
        Lq = input_tensor.shape[1]
        if self.attn_impl == "sdpa":
            p = self.attn_dropout.p if self.training else 0.0
            mask = attention_mask.to(q.dtype)
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        else:
            scores = q @ k.transpose(-1, -2) / self.sqrt_attention_head_size  # (B, H, Lq, L)
            probs = torch.softmax(scores + attention_mask, dim=-1)
            ctx = self.attn_dropout(probs) @ v  # (B, H, Lq, hs)
        ctx = ctx.transpose(1, 2).reshape(B, Lq, D)  # (B, Lq, D)
        h = self.out_dropout(self.dense(ctx))
        return self.LayerNorm(h + input_tensor if self.residual else h)


class FeedForward(nn.Module):
    """Position-wise FFN: LN(Dropout(dense_2(GELU(dense_1(x)))) + x). GELU is the exact erf form,
    as RecBole's `gelu` (protocol §6)."""

    def __init__(
        self,
        hidden_size: int,
        inner_size: int,
        hidden_dropout_prob: float,
        layer_norm_eps: float,
        residual: bool = True,  # False: the "remove RC" ablation
    ) -> None:
        super().__init__()
        self.residual = residual
        self.dense_1 = nn.Linear(hidden_size, inner_size)
        self.dense_2 = nn.Linear(inner_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = Dropout(hidden_dropout_prob)

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.dense_2(F.gelu(self.dense_1(input_tensor))))  # (B, L, D)
        return self.LayerNorm(h + input_tensor if self.residual else h)


class TransformerLayer(nn.Module):
    """RecBole's TransformerLayer: multi-head attention then the feed-forward block."""

    def __init__(
        self,
        n_heads: int,
        hidden_size: int,
        intermediate_size: int,
        hidden_dropout_prob: float,
        attn_dropout_prob: float,
        layer_norm_eps: float,
        residual: bool = True,  # False removes both residuals (attention and FFN)
        ffn: bool = True,  # False drops the feed-forward block and its parameters ("remove FFN")
        attn_impl: AttnImpl = "explicit",
    ) -> None:
        super().__init__()
        self.multi_head_attention = MultiHeadAttention(
            n_heads=n_heads,
            hidden_size=hidden_size,
            hidden_dropout_prob=hidden_dropout_prob,
            attn_dropout_prob=attn_dropout_prob,
            layer_norm_eps=layer_norm_eps,
            residual=residual,
            attn_impl=attn_impl,
        )
        self.feed_forward = (
            FeedForward(
                hidden_size=hidden_size,
                inner_size=intermediate_size,
                hidden_dropout_prob=hidden_dropout_prob,
                layer_norm_eps=layer_norm_eps,
                residual=residual,
            )
            if ffn
            else None
        )

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor,
                query_idx: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, D) -> (B, L, D), or (B, 1, D) at `query_idx` (see MultiHeadAttention)."""
        h = self.multi_head_attention(hidden_states, attention_mask, query_idx)
        return h if self.feed_forward is None else self.feed_forward(h)


class TransformerEncoder(nn.Module):
    """`n_layers` TransformerLayers in `self.layer` (RecBole's name, so keys read `layer.{i}.…`).
    Returns the last layer's output (B, L, D), i.e. RecBole's `output_all_encoded_layers=False`."""

    def __init__(
        self,
        n_layers: int = 2,
        n_heads: int = 2,
        hidden_size: int = 64,
        inner_size: int = 256,
        hidden_dropout_prob: float = 0.5,
        attn_dropout_prob: float = 0.5,
        layer_norm_eps: float = 1e-12,
        residual: bool = True,
        ffn: bool = True,
        attn_impl: AttnImpl = "explicit",
    ) -> None:
        super().__init__()
        layer = TransformerLayer(
            n_heads=n_heads,
            hidden_size=hidden_size,
            intermediate_size=inner_size,
            hidden_dropout_prob=hidden_dropout_prob,
            attn_dropout_prob=attn_dropout_prob,
            layer_norm_eps=layer_norm_eps,
            residual=residual,
            ffn=ffn,
            attn_impl=attn_impl,
        )
        # deepcopy as RecBole: every layer starts equal; models re-initialise with init_normal_.
        self.layer = nn.ModuleList([copy.deepcopy(layer) for _ in range(n_layers)])

    @classmethod
    def from_config(cls, cfg: TransformerConfig) -> TransformerEncoder:
        """The encoder of SASRec and BERT4Rec: every transformer key of their shared config."""
        return cls(n_layers=cfg.n_layers, n_heads=cfg.n_heads, hidden_size=cfg.hidden_size,
                   inner_size=cfg.inner_size, hidden_dropout_prob=cfg.hidden_dropout_prob,
                   attn_dropout_prob=cfg.attn_dropout_prob, layer_norm_eps=cfg.layer_norm_eps,
                   attn_impl=cfg.attn_impl)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor,
                query_idx: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, D) -> (B, L, D); with `query_idx` (B,) the last layer computes only that
        position of each row -> (B, D) (the layers below still need every position)."""
        last = len(self.layer) - 1
        for i, layer_module in enumerate(self.layer):
            hidden_states = layer_module(hidden_states, attention_mask,
                                         query_idx if i == last else None)
        return hidden_states if query_idx is None else hidden_states[:, 0]
