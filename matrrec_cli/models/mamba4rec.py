"""Mamba4Rec (protocol §8), `mamba4rec.py` of the MaTrRec repo (key `n_layers`; the original
repo reads `num_layers`), parameter names included.

    E[seq] -> Dropout -> LayerNorm -> n x [ LN(Dropout(Mamba(x)) (+ x if n_layers > 1))
    -> FFN: LN(Dropout(W2 Dropout(GELU(W1 h))) + h) ] -> read out at len-1 -> dot with tied E

Faithful quirks: Dropout BEFORE the embedding LayerNorm (MaTrRec does LN then dropout); no
residual around Mamba when there is a single layer; the FFN has an extra dropout after GELU
(RecBole's FeedForward has none). Init: N(0, 0.02) over every Linear and Embedding, Mamba's
included, so Mamba's dt_proj.bias becomes 0 (protocol §11.8); `init="mamba"` keeps Mamba's own.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from matrrec_cli.errors import MatrrecError
from matrrec_cli.models.base import SequentialRecommender
from matrrec_cli.models.draws import Dropout
from matrrec_cli.models.layers import init_normal_
from matrrec_cli.models.mamba import Mamba, ScanImpl, check_scan_impl


@dataclasses.dataclass
class Mamba4RecConfig:
    """Mamba4Rec's own config.yaml (Mamba4Rec is not part of RecBole 1.2.1)."""

    hidden_size: int = 64  # model width
    n_layers: int = 1  # Mamba layers; with 1 there is no residual around Mamba (quirk)
    dropout_prob: float = 0.2  # every dropout of the model (config.yaml, ML-1M)
    d_state: int = 32  # Mamba state size per channel
    d_conv: int = 4  # Mamba causal conv width
    expand: int = 2  # Mamba inner width = expand x hidden
    init: Literal["faithful", "mamba"] = "faithful"  # faithful: N(0, 0.02) overwrites Mamba's
    mamba_backend: Literal["auto", "torch", "cuda"] = "auto"  # auto: fused kernels on CUDA if any
    skip_padding: bool = False  # speed only: the CPU scan skips padded steps (see MaTrRecConfig)
    scan_impl: ScanImpl = "auto"  # speed only: numba "kernel" or eager "torch" (see MaTrRec)

    def __post_init__(self) -> None:
        check_scan_impl(self.scan_impl)
        if self.init not in ("faithful", "mamba"):
            raise MatrrecError(f"mamba4rec init must be faithful or mamba, not {self.init!r}")
        if self.n_layers < 1:
            raise MatrrecError(f"mamba4rec n_layers must be at least 1, not {self.n_layers}")


class FeedForward(nn.Module):
    """Mamba4Rec's FFN: LN(Dropout(w_2(Dropout(GELU(w_1 x)))) + x), with the extra dropout."""

    def __init__(self, d_model: int, inner_size: int, dropout: float) -> None:
        super().__init__()
        self.w_1 = nn.Linear(d_model, inner_size)
        self.w_2 = nn.Linear(inner_size, d_model)
        self.dropout = Dropout(dropout)
        self.LayerNorm = nn.LayerNorm(d_model, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(F.gelu(self.w_1(x)))  # (B, L, 4D), the extra dropout
        return self.LayerNorm(self.dropout(self.w_2(h)) + x)


class MambaLayer(nn.Module):
    """Mamba -> Dropout -> LN, residual only when the model has more than one layer."""

    def __init__(self, cfg: Mamba4RecConfig) -> None:
        super().__init__()
        self.num_layers = cfg.n_layers
        self.mamba = Mamba(
            d_model=cfg.hidden_size,
            d_state=cfg.d_state,
            d_conv=cfg.d_conv,
            expand=cfg.expand,
            backend=cfg.mamba_backend,
            scan_impl=cfg.scan_impl,
        )
        self.dropout = Dropout(cfg.dropout_prob)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=1e-12)
        self.ffn = FeedForward(cfg.hidden_size, cfg.hidden_size * 4, cfg.dropout_prob)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        # only with skip_padding: a plain call keeps mamba_ssm.Mamba's signature usable here
        h = self.mamba(x) if lengths is None else self.mamba(x, lengths=lengths)
        h = self.dropout(h)  # (B, L, D)
        h = self.LayerNorm(h if self.num_layers == 1 else h + x)  # no residual with 1 layer
        return self.ffn(h)


class Mamba4Rec(SequentialRecommender):
    """Mamba4Rec with CE over all items. Causal: trains on "prefix" or "all"."""

    Config = Mamba4RecConfig
    causal = True
    supports_all_objective = True

    def __init__(self, *, n_items: int, max_len: int, config: Mamba4RecConfig) -> None:
        super().__init__(n_items=n_items, max_len=max_len, config=config)
        cfg = config
        self.item_embedding = nn.Embedding(n_items, cfg.hidden_size, padding_idx=0)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=1e-12)
        self.dropout = Dropout(cfg.dropout_prob)
        self.mamba_layers = nn.ModuleList([MambaLayer(cfg) for _ in range(cfg.n_layers)])
        init_normal_(self, std=0.02, skip=(Mamba,) if cfg.init == "mamba" else ())

    def encode(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.LayerNorm(self.dropout(self.item_embedding(item_seq)))  # dropout THEN LN (quirk)
        skip = lengths if self.config.skip_padding else None
        for layer in self.mamba_layers:
            x = layer(x, skip)  # (B, L, D)
        return x

    @classmethod
    def paper_overrides(cls, *, dropout: float) -> dict[str, Any]:
        return {"hidden_size": 64, "n_layers": 1, "d_state": 32, "d_conv": 4, "expand": 2,
                **cls.dropout_overrides(dropout)}

    @classmethod
    def dropout_overrides(cls, p: float) -> dict[str, Any]:
        return {"dropout_prob": p}
