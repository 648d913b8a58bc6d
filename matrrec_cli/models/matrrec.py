"""MaTrRec: a Mamba block followed by a post-LN transformer layer (protocol §6).

    E[item_seq] -> LayerNorm -> Dropout
    -> n_layers x [ LN(Dropout(Mamba(x)) + x) -> TransformerLayer ]
    -> read out at len-1 -> scores against the tied item embedding

Module and parameter names follow the reference `matrrec.py`, so its state_dict keys are ours
(`mambatr_layers.{i}.mamba.mamba.*`, `mambatr_layers.{i}.trm_encoder.*`). The paper's Table 3
ablations are Config switches (`use_position_embedding`, `use_ffn`, `use_residual`,
`use_dropout`, `n_heads`, `n_layers`); with the defaults every one of them is off.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch
from torch import nn

from matrrec_cli.errors import MatrrecError
from matrrec_cli.models.base import SequentialRecommender
from matrrec_cli.models.draws import Dropout
from matrrec_cli.models.layers import AttnImpl, TransformerLayer, attention_mask, init_normal_
from matrrec_cli.models.mamba import Mamba, ScanImpl, check_scan_impl


@dataclasses.dataclass
class MaTrRecConfig:
    """MaTrRec hyperparameters. Defaults: the released amazon.yaml (protocol §5)."""

    hidden_size: int = 64  # amazon.yaml and ml.yaml
    n_layers: int = 1  # one Mamba + transformer pair; Table 3 "2 layers" sets 2
    n_heads: int = 1  # Table 3 "2 heads" sets 2
    inner_size: int = 256  # FFN width, 4 x hidden (RecBole's default)
    d_state: int = 32  # Mamba state size per channel
    d_conv: int = 4  # Mamba causal conv width
    expand: int = 2  # Mamba inner width = expand x hidden
    dropout_prob: float = 0.4  # after the embedding LN and after Mamba; ml.yaml uses 0.2
    hidden_dropout_prob: float = 0.4  # after attention's dense and after the FFN
    attn_dropout_prob: float = 0.4  # on the attention probabilities
    layer_norm_eps: float = 1e-12  # RecBole's value, for every LayerNorm
    initializer_range: float = 0.02  # std of the normal init of Linear and Embedding weights
    init: Literal["faithful", "mamba"] = "faithful"  # faithful: RecBole init overwrites Mamba's
    mamba_backend: Literal["auto", "torch", "cuda"] = "auto"  # auto: fused kernels on CUDA if any
    attn_impl: AttnImpl = "explicit"  # "sdpa": torch's fused attention, equal up to rounding
    # Speed, not model: the CPU scan skips each row's padded steps. Real positions are computed
    # exactly, but A's gradient sums fewer terms in another order (float rounding), so off by
    # default (faithful runs stay bit-identical); measured in docs/measurements.md.
    skip_padding: bool = False
    # Speed, not model: the Mamba block on a CPU. "kernel": numba loops for the scan and the
    # conv (scan_kernel.py, needs numba), "torch": eager PyTorch, "auto": the kernel when numba
    # imports. Same math, other float rounding (sums in another order); CUDA runs ignore it.
    scan_impl: ScanImpl = "auto"
    # Speed, not model: the read-out (prefix loss, evaluation) runs the transformer layer of the
    # last block for position len-1 only. Same values up to rounding, but fewer dropout draws,
    # so training follows another random stream: off by default (see SASRecConfig).
    readout_only: bool = False
    # --- Table 3 ablations (paper defaults: PE off, FFN on, residuals on, dropout on) ----------
    use_position_embedding: bool = False  # "Add PE": learned table of max_len rows, as SASRec
    use_ffn: bool = True  # False: "Remove FFN", the transformer layer is attention only
    use_residual: bool = True  # False: "Remove RC", drops the Mamba, attention and FFN residuals
    use_dropout: bool = True  # False: "Remove Dropout", every dropout of the model becomes p = 0

    def __post_init__(self) -> None:
        choices = {"init": ("faithful", "mamba"), "mamba_backend": ("auto", "torch", "cuda"),
                   "attn_impl": ("explicit", "sdpa")}
        for key, allowed in choices.items():
            value = getattr(self, key)
            if value not in allowed:
                raise MatrrecError(
                    f"matrrec setting {key}={value!r} is not one of {', '.join(allowed)}"
                )
        check_scan_impl(self.scan_impl)
        if self.n_heads < 1 or self.hidden_size % self.n_heads != 0:
            raise MatrrecError(
                f"matrrec hidden_size {self.hidden_size} must be a multiple of "
                f"n_heads {self.n_heads}"
            )
        if self.n_layers < 1:
            raise MatrrecError(f"matrrec n_layers must be at least 1, not {self.n_layers}")


class MambaLayer(nn.Module):
    """The Mamba sub-block: LN(Dropout(Mamba(x)) + x). The residual is there even with one layer
    (protocol §6.5a; Mamba4Rec drops it then)."""

    def __init__(self, cfg: MaTrRecConfig, dropout_prob: float) -> None:
        super().__init__()
        self.residual = cfg.use_residual
        self.mamba = Mamba(
            d_model=cfg.hidden_size,
            d_state=cfg.d_state,
            d_conv=cfg.d_conv,
            expand=cfg.expand,
            backend=cfg.mamba_backend,
            scan_impl=cfg.scan_impl,
        )
        self.dropout = Dropout(dropout_prob)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        # only with skip_padding: a plain call keeps mamba_ssm.Mamba's signature usable here
        h = self.mamba(x) if lengths is None else self.mamba(x, lengths=lengths)
        h = self.dropout(h)  # (B, L, D)
        return self.LayerNorm(h + x if self.residual else h)


class MambaTrLayer(nn.Module):
    """One MaTrRec layer: the Mamba sub-block, then RecBole's TransformerLayer with the mask."""

    def __init__(self, cfg: MaTrRecConfig, dropout_prob: float, hidden_dropout_prob: float,
                 attn_dropout_prob: float) -> None:
        super().__init__()
        self.mamba = MambaLayer(cfg, dropout_prob)
        self.trm_encoder = TransformerLayer(
            n_heads=cfg.n_heads,
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.inner_size,
            hidden_dropout_prob=hidden_dropout_prob,
            attn_dropout_prob=attn_dropout_prob,
            layer_norm_eps=cfg.layer_norm_eps,
            residual=cfg.use_residual,
            ffn=cfg.use_ffn,
            attn_impl=cfg.attn_impl,
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor | None = None,
                query_idx: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, D) -> (B, L, D), or (B, 1, D) at `query_idx` (B,)."""
        return self.trm_encoder(self.mamba(x, lengths), mask, query_idx)


class MaTrRec(SequentialRecommender):
    """MaTrRec (protocol §6). Causal: the output at t sees items at positions <= t only."""

    Config = MaTrRecConfig
    causal = True
    supports_all_objective = True

    def __init__(self, *, n_items: int, max_len: int, config: MaTrRecConfig) -> None:
        super().__init__(n_items=n_items, max_len=max_len, config=config)
        cfg = config
        keep = 1.0 if cfg.use_dropout else 0.0  # "Remove Dropout": p = 0 makes Dropout the identity
        p, p_hidden, p_attn = (keep * cfg.dropout_prob, keep * cfg.hidden_dropout_prob,
                               keep * cfg.attn_dropout_prob)

        self.item_embedding = nn.Embedding(n_items, cfg.hidden_size, padding_idx=0)
        # "Add PE": SASRec's learned absolute positions; absent (no parameters) by default.
        self.position_embedding = (
            nn.Embedding(max_len, cfg.hidden_size) if cfg.use_position_embedding else None
        )
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(p)
        self.mambatr_layers = nn.ModuleList(
            [MambaTrLayer(cfg, p, p_hidden, p_attn) for _ in range(cfg.n_layers)]
        )
        # Faithful: RecBole's _init_weights over everything, Mamba's Linears included, so
        # dt_proj.bias becomes 0 (protocol §6, §11.8). "mamba": leave Mamba's own init alone.
        skip = (Mamba,) if cfg.init == "mamba" else ()
        init_normal_(self, std=cfg.initializer_range, skip=skip)

    def encode(self, item_seq: torch.Tensor, lengths: torch.Tensor,
               query_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Per-position outputs (B, L, D), or (B, D) at `query_idx` (B,). The mask comes from
        the pads; `lengths` is used only by `skip_padding` (a padded position's output is then
        not the dense one's)."""
        x = self.item_embedding(item_seq)  # (B, L, D)
        if self.position_embedding is not None:
            pos = torch.arange(item_seq.size(1), device=item_seq.device)
            x = x + self.position_embedding(pos)[None]  # (B, L, D)
        x = self.dropout(self.LayerNorm(x))  # LN then dropout, unlike Mamba4Rec (protocol §6.3)
        mask = attention_mask(item_seq)  # (B, 1, L, L) causal + padding, computed once
        skip = lengths if self.config.skip_padding else None
        last = len(self.mambatr_layers) - 1
        for i, layer in enumerate(self.mambatr_layers):
            x = layer(x, mask, skip, query_idx if i == last else None)
        return x if query_idx is None else x[:, 0]

    def seq_repr(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not self.config.readout_only:
            return super().seq_repr(item_seq, lengths)
        return self.encode(item_seq, lengths, query_idx=(lengths - 1).clamp(min=0))  # (B, D)

    @classmethod
    def paper_overrides(cls, *, dropout: float) -> dict[str, Any]:
        return {"hidden_size": 64, "n_layers": 1, "n_heads": 1, "inner_size": 256,
                "d_state": 32, "d_conv": 4, "expand": 2, **cls.dropout_overrides(dropout)}

    @classmethod
    def dropout_overrides(cls, p: float) -> dict[str, Any]:
        return {"dropout_prob": p, "hidden_dropout_prob": p, "attn_dropout_prob": p}
