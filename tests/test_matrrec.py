"""MaTrRec (protocol §6), RecBole's transformer layers (§6, §9), Table 3 ablation switches."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from matrrec_cli.errors import MatrrecError
from matrrec_cli.models import build_model, make_config
from matrrec_cli.models.layers import (
    MultiHeadAttention,
    TransformerEncoder,
    TransformerLayer,
    attention_mask,
    init_normal_,
)
from matrrec_cli.models.matrrec import MaTrRec

N_ITEMS = 30
MAX_LEN = 12


def make(seed: int = 0, n_items: int = N_ITEMS, max_len: int = MAX_LEN, **overrides) -> MaTrRec:
    torch.manual_seed(seed)
    model = build_model("matrrec", n_items=n_items, max_len=max_len, overrides=overrides)
    assert isinstance(model, MaTrRec)
    return model.eval()


def random_batch(seed: int = 1, B: int = 4, L: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, L + 1, (B,), generator=g)
    lengths[0] = L  # one full row
    seq = torch.randint(1, N_ITEMS, (B, L), generator=g)
    seq[torch.arange(L)[None, :] >= lengths[:, None]] = 0  # right padding
    return seq, lengths


# --- protocol §6: names, shapes, parameter count -------------------------------------------------

L0 = "mambatr_layers.0"
PROTOCOL_KEYS = {
    "item_embedding.weight": (N_ITEMS, 64),
    "LayerNorm.weight": (64,),
    "LayerNorm.bias": (64,),
    f"{L0}.mamba.mamba.A_log": (128, 32),
    f"{L0}.mamba.mamba.D": (128,),
    f"{L0}.mamba.mamba.in_proj.weight": (256, 64),
    f"{L0}.mamba.mamba.conv1d.weight": (128, 1, 4),
    f"{L0}.mamba.mamba.conv1d.bias": (128,),
    f"{L0}.mamba.mamba.x_proj.weight": (68, 128),
    f"{L0}.mamba.mamba.dt_proj.weight": (128, 4),
    f"{L0}.mamba.mamba.dt_proj.bias": (128,),
    f"{L0}.mamba.mamba.out_proj.weight": (64, 128),
    f"{L0}.mamba.LayerNorm.weight": (64,),
    f"{L0}.mamba.LayerNorm.bias": (64,),
    **{
        f"{L0}.trm_encoder.multi_head_attention.{m}.{p}": (64, 64) if p == "weight" else (64,)
        for m in ("query", "key", "value", "dense")
        for p in ("weight", "bias")
    },
    f"{L0}.trm_encoder.multi_head_attention.LayerNorm.weight": (64,),
    f"{L0}.trm_encoder.multi_head_attention.LayerNorm.bias": (64,),
    f"{L0}.trm_encoder.feed_forward.dense_1.weight": (256, 64),
    f"{L0}.trm_encoder.feed_forward.dense_1.bias": (256,),
    f"{L0}.trm_encoder.feed_forward.dense_2.weight": (64, 256),
    f"{L0}.trm_encoder.feed_forward.dense_2.bias": (64,),
    f"{L0}.trm_encoder.feed_forward.LayerNorm.weight": (64,),
    f"{L0}.trm_encoder.feed_forward.LayerNorm.bias": (64,),
}


def non_embedding_params(model: nn.Module, prefix: str = "") -> int:
    return sum(
        p.numel() for n, p in model.named_parameters()
        if n.startswith(prefix) and not n.endswith("embedding.weight")
    )


def test_paper_config_state_dict_equals_protocol_key_list() -> None:
    model = make(**MaTrRec.paper_overrides(dropout=0.4))
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == PROTOCOL_KEYS


def test_non_embedding_parameter_count_is_89024() -> None:
    model = make()
    assert non_embedding_params(model) == 89_024
    assert non_embedding_params(model, f"{L0}.mamba.mamba.") == 38_784
    assert non_embedding_params(model, f"{L0}.trm_encoder.multi_head_attention.") == 16_768
    assert non_embedding_params(model, f"{L0}.trm_encoder.feed_forward.") == 33_216


def test_defaults_are_amazon_yaml_and_presets_set_every_dropout() -> None:
    cfg = make_config("matrrec")
    assert (cfg.hidden_size, cfg.n_layers, cfg.n_heads, cfg.d_state, cfg.d_conv, cfg.expand) == (
        64, 1, 1, 32, 4, 2)
    assert cfg.dropout_prob == cfg.hidden_dropout_prob == cfg.attn_dropout_prob == 0.4
    ml = make_config("matrrec", MaTrRec.paper_overrides(dropout=0.2))
    assert ml.dropout_prob == ml.hidden_dropout_prob == ml.attn_dropout_prob == 0.2
    model = make(**MaTrRec.dropout_overrides(0.3))
    ps = {m.p for m in model.modules() if isinstance(m, nn.Dropout)}
    assert ps == {0.3}


def test_build_model_rejects_a_typo_in_overrides() -> None:
    with pytest.raises(MatrrecError, match="hidden_sise"):
        build_model("matrrec", n_items=N_ITEMS, max_len=MAX_LEN, overrides={"hidden_sise": 32})
    for bad in ({"init": "xavier"}, {"mamba_backend": "gpu"}, {"attn_impl": "flash"},
                {"n_heads": 3}, {"n_layers": 0}):
        with pytest.raises(MatrrecError, match=next(iter(bad))):
            make(**bad)


# --- forward: causality, padding, readout --------------------------------------------------------


def test_encode_is_causal() -> None:
    model = make()
    seq, lengths = random_batch(L=10)
    seq[:] = torch.randint(1, N_ITEMS, seq.shape)  # all real items, so every position matters
    lengths[:] = 10
    h = model.encode(seq, lengths)
    for t in (0, 3, 8):
        changed = seq.clone()
        changed[:, t + 1:] = torch.randint(1, N_ITEMS, changed[:, t + 1:].shape)
        changed[1, t + 1:] = 0  # a row that turns into padding after t
        h2 = model.encode(changed, lengths)
        torch.testing.assert_close(h2[:, : t + 1], h[:, : t + 1], atol=1e-6, rtol=0)
        assert not torch.allclose(h2[:, t + 1:], h[:, t + 1:])  # later positions do see it


def test_full_sort_scores_ignore_extra_right_padding_and_read_len_minus_1() -> None:
    model = make()
    seq, lengths = random_batch(L=8)
    padded = F.pad(seq, (0, 4))  # (B, 12): four more pads
    scores = model.full_sort_scores(seq, lengths)
    assert scores.shape == (seq.size(0), N_ITEMS)
    torch.testing.assert_close(model.full_sort_scores(padded, lengths), scores, atol=1e-5, rtol=0)
    h = model.encode(seq, lengths)  # (B, L, D)
    last = h[torch.arange(seq.size(0)), lengths - 1]  # (B, D)
    torch.testing.assert_close(scores, last @ model.item_embedding.weight.T)


# --- initialisation (protocol §6) ---------------------------------------------------------------


def test_faithful_init_overwrites_mamba_linears_and_zeroes_dt_bias() -> None:
    model = make()
    mamba = model.mambatr_layers[0].mamba.mamba
    for w in (mamba.in_proj.weight, mamba.x_proj.weight, mamba.out_proj.weight,
              model.mambatr_layers[0].trm_encoder.feed_forward.dense_1.weight):
        assert abs(w.std().item() - 0.02) < 0.0015
        assert abs(w.mean().item()) < 0.002
    assert torch.all(mamba.dt_proj.bias == 0)
    assert mamba.dt_proj.weight.std().item() == pytest.approx(0.02, abs=0.005)
    assert model.item_embedding.weight[0].abs().sum() > 0  # PAD row is N(0, 0.02) too
    # untouched: conv1d keeps kaiming-uniform, bound 1/sqrt(fan_in=4) = 0.5; A_log, D native
    conv = mamba.conv1d.weight
    assert conv.abs().max() <= 0.5
    assert conv.std().item() > 0.2
    torch.testing.assert_close(mamba.A_log, torch.log(torch.arange(1, 33.0)).expand(128, 32))
    assert torch.all(mamba.D == 1)
    for ln in (model.LayerNorm, model.mambatr_layers[0].mamba.LayerNorm):
        assert torch.all(ln.weight == 1)
        assert torch.all(ln.bias == 0)
    assert torch.all(model.mambatr_layers[0].trm_encoder.multi_head_attention.query.bias == 0)


def test_mamba_init_keeps_mambas_own_dt_init_and_renormalises_the_rest() -> None:
    model = make(init="mamba")
    mamba = model.mambatr_layers[0].mamba.mamba
    dt = F.softplus(mamba.dt_proj.bias)
    assert torch.all(mamba.dt_proj.bias != 0)
    assert dt.min() >= 1e-4 - 1e-7
    assert dt.max() <= 0.1 + 1e-6
    assert mamba.dt_proj.weight.abs().max() <= 0.5
    assert mamba.dt_proj.weight.std() > 0.2
    q = model.mambatr_layers[0].trm_encoder.multi_head_attention.query.weight
    assert abs(q.std().item() - 0.02) < 0.002


def test_same_seed_same_weights_and_outputs() -> None:
    a, b, c = make(seed=5), make(seed=5), make(seed=6)
    for (ka, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(va, vb), ka
    seq, lengths = random_batch()
    assert torch.equal(a.full_sort_scores(seq, lengths), b.full_sort_scores(seq, lengths))
    assert not torch.equal(a.item_embedding.weight, c.item_embedding.weight)


# --- RecBole layers -------------------------------------------------------------------------------


def test_attention_mask_is_recbole_causal_and_bidirectional() -> None:
    seq = torch.tensor([[5, 6, 7, 0], [1, 2, 3, 4]])
    m = attention_mask(seq)
    assert m.shape == (2, 1, 4, 4)
    assert m.dtype == torch.float32
    for b in range(2):
        for i in range(4):
            for j in range(4):
                allowed = seq[b, j] != 0 and j <= i
                assert m[b, 0, i, j].item() == (0.0 if allowed else -10000.0)
    bi = attention_mask(seq, bidirectional=True)
    assert bi.shape == (2, 1, 4, 4)
    assert torch.equal(bi[0, 0], torch.tensor([[0.0, 0.0, 0.0, -10000.0]]).expand(4, 4))
    assert torch.all(bi[1] == 0)


def brute_force_mha(mha: MultiHeadAttention, x: torch.Tensor, mask: torch.Tensor,
                    residual: bool = True) -> torch.Tensor:
    """Per-head loop in float64: softmax(q kᵀ/√hs + mask) v, then dense, LN(· + x)."""
    x64 = x.double()
    H, hs = mha.num_attention_heads, mha.attention_head_size

    def lin(m: nn.Linear, t: torch.Tensor) -> torch.Tensor:
        return t @ m.weight.double().T + m.bias.double()

    q, k, v = lin(mha.query, x64), lin(mha.key, x64), lin(mha.value, x64)
    heads = []
    for h in range(H):
        sl = slice(h * hs, (h + 1) * hs)
        s = q[..., sl] @ k[..., sl].transpose(-1, -2) / math.sqrt(hs) + mask[:, 0].double()
        heads.append(torch.softmax(s, dim=-1) @ v[..., sl])
    out = lin(mha.dense, torch.cat(heads, dim=-1))
    ln = mha.LayerNorm
    return F.layer_norm(out + x64 if residual else out, (x.size(-1),), ln.weight.double(),
                        ln.bias.double(), ln.eps).float()


@pytest.mark.parametrize("n_heads", [1, 2, 4])
def test_multi_head_attention_matches_per_head_reference(n_heads: int) -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(n_heads, 16, 0.0, 0.0, 1e-12)
    init_normal_(mha, std=0.3)  # large weights, so a wrong head split shows
    seq, _ = random_batch(L=6)
    x = torch.randn(seq.size(0), 6, 16)
    mask = attention_mask(seq)
    torch.testing.assert_close(mha(x, mask), brute_force_mha(mha, x, mask), atol=1e-5, rtol=1e-5)
    mha.attn_impl = "sdpa"  # fused path: same numbers up to rounding
    torch.testing.assert_close(mha(x, mask), brute_force_mha(mha, x, mask), atol=1e-5, rtol=1e-5)


def test_encoder_stacks_layers_with_recbole_names_and_init_skips() -> None:
    torch.manual_seed(0)
    enc = TransformerEncoder(n_layers=3, n_heads=2, hidden_size=16, inner_size=32,
                             hidden_dropout_prob=0.0, attn_dropout_prob=0.0)
    init_normal_(enc, skip=(TransformerLayer,))  # skipping everything leaves deepcopied equals
    w0, w2 = enc.layer[0].feed_forward.dense_1.weight, enc.layer[2].feed_forward.dense_1.weight
    assert torch.equal(w0, w2)
    init_normal_(enc)
    assert not torch.equal(enc.layer[0].feed_forward.dense_1.weight,
                           enc.layer[2].feed_forward.dense_1.weight)
    assert "layer.2.feed_forward.LayerNorm.bias" in enc.state_dict()
    x, mask = torch.randn(2, 5, 16), attention_mask(torch.ones(2, 5, dtype=torch.long))
    h = x
    for layer in enc.layer:
        h = layer.feed_forward(layer.multi_head_attention(h, mask))
    torch.testing.assert_close(enc(x, mask), h)


# --- Table 3 ablations ---------------------------------------------------------------------------


def test_ablation_add_position_embedding() -> None:
    base, pe = make(seed=0), make(seed=0, use_position_embedding=True)
    assert not hasattr(base, "position_embedding") or base.position_embedding is None
    assert pe.state_dict()["position_embedding.weight"].shape == (MAX_LEN, 64)
    missing = pe.load_state_dict(base.state_dict(), strict=False).missing_keys
    assert missing == ["position_embedding.weight"]
    seq, lengths = random_batch()
    with torch.no_grad():
        pe.position_embedding.weight.zero_()  # a zero table is exactly the model without PE
        torch.testing.assert_close(pe.encode(seq, lengths), base.encode(seq, lengths))
        pe.position_embedding.weight.normal_(std=0.02)
        assert not torch.allclose(pe.encode(seq, lengths), base.encode(seq, lengths), atol=1e-4)


def test_ablation_remove_ffn() -> None:
    full, no_ffn = make(seed=0), make(seed=0, use_ffn=False)
    keys = set(no_ffn.state_dict())
    assert not any(".feed_forward." in k for k in keys)
    assert keys == {k for k in full.state_dict() if ".feed_forward." not in k}
    assert non_embedding_params(no_ffn) == 89_024 - 33_216
    layer = no_ffn.mambatr_layers[0]
    x, (seq, _) = torch.randn(4, 8, 64), random_batch()
    mask = attention_mask(seq)
    expected = layer.trm_encoder.multi_head_attention(layer.mamba(x), mask)
    torch.testing.assert_close(layer(x, mask), expected)


def test_ablation_remove_residual_connections_everywhere() -> None:
    for residual in (True, False):
        model = make(seed=0, use_residual=residual)
        layer = model.mambatr_layers[0]
        trm, mb = layer.trm_encoder, layer.mamba
        seq, _ = random_batch()
        x, mask = torch.randn(seq.size(0), seq.size(1), 64), attention_mask(seq)
        # by hand: LN(f(x) [+ x]) for the Mamba block, attention and FFN
        h = mb.mamba(x)
        ln = mb.LayerNorm
        h = F.layer_norm(h + x if residual else h, (64,), ln.weight, ln.bias, 1e-12)
        a = brute_force_mha(trm.multi_head_attention, h, mask, residual=residual)
        ff = trm.feed_forward
        f = ff.dense_2(F.gelu(ff.dense_1(a)))
        ln = ff.LayerNorm
        out = F.layer_norm(f + a if residual else f, (64,), ln.weight, ln.bias, 1e-12)
        torch.testing.assert_close(layer(x, mask), out, atol=1e-5, rtol=1e-5)
    with_rc, without = make(seed=0), make(seed=0, use_residual=False)
    assert set(with_rc.state_dict()) == set(without.state_dict())  # no parameter changes
    seq, lengths = random_batch()
    assert not torch.allclose(with_rc.encode(seq, lengths), without.encode(seq, lengths))


def test_ablation_remove_dropout_makes_training_mode_deterministic() -> None:
    seq, lengths = random_batch()
    on = make(seed=0).train()
    assert not torch.equal(on.encode(seq, lengths), on.encode(seq, lengths))
    off = make(seed=0, use_dropout=False).train()
    drops = [m for m in off.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 5
    assert all(m.p == 0.0 for m in drops)
    first = off.encode(seq, lengths)
    assert torch.equal(off.encode(seq, lengths), first)
    torch.testing.assert_close(off.eval().encode(seq, lengths), first)
    torch.testing.assert_close(on.eval().encode(seq, lengths), first)  # same weights, eval mode


def test_ablation_two_heads() -> None:
    one, two = make(seed=0), make(seed=0, n_heads=2)
    mha = two.mambatr_layers[0].trm_encoder.multi_head_attention
    assert (mha.num_attention_heads, mha.attention_head_size) == (2, 32)
    two.load_state_dict(one.state_dict(), strict=True)  # same parameters, different split
    seq, lengths = random_batch()
    assert not torch.allclose(one.encode(seq, lengths), two.encode(seq, lengths), atol=1e-4)
    x = torch.randn(4, 8, 64)
    torch.testing.assert_close(mha(x, attention_mask(seq)),
                               brute_force_mha(mha, x, attention_mask(seq)), atol=1e-5, rtol=1e-5)


def test_ablation_two_layers() -> None:
    model = make(seed=0, n_layers=2)
    keys = set(model.state_dict())
    assert {k.replace("mambatr_layers.1.", L0 + ".") for k in keys if "mambatr_layers.1." in k} == {
        k for k in PROTOCOL_KEYS if k.startswith(L0 + ".")}
    assert non_embedding_params(model) == 89_024 + 89_024 - 128  # one embedding LN, not two
    seq, lengths = random_batch()
    x = model.dropout(model.LayerNorm(model.item_embedding(seq)))
    mask = attention_mask(seq)
    expected = model.mambatr_layers[1](model.mambatr_layers[0](x, mask), mask)
    torch.testing.assert_close(model.encode(seq, lengths), expected)


def test_loss_all_objective_equals_per_position_cross_entropy() -> None:
    from matrrec_cli.models.base import SeqBatch

    model = make()
    seq, lengths = random_batch()
    targets = torch.where(seq > 0, torch.roll(seq, -1, dims=1), 0)
    targets[:, -1] = 0
    loss = model.calculate_loss(SeqBatch(item_seq=seq, lengths=lengths, targets=targets))
    logits = model.encode(seq, lengths) @ model.item_embedding.weight.T  # (B, L, n_items)
    keep = targets > 0
    torch.testing.assert_close(loss, F.cross_entropy(logits[keep], targets[keep]))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_embedding_layernorm_comes_before_dropout() -> None:
    """Protocol §6.3: LN then dropout (Mamba4Rec does the reverse); checked on the live graph."""
    model = make(seed=0).train()
    seen: dict[str, torch.Tensor] = {}
    model.dropout.register_forward_hook(lambda m, i, o: seen.update(drop_in=i[0], drop_out=o))
    model.mambatr_layers[0].register_forward_hook(lambda m, i, o: seen.update(layer_in=i[0]))
    seq, lengths = random_batch()
    model.encode(seq, lengths)
    torch.testing.assert_close(seen["drop_in"], model.LayerNorm(model.item_embedding(seq)))
    assert torch.equal(seen["layer_in"], seen["drop_out"])
    assert (seen["drop_out"] == 0).float().mean() > 0.2  # p = 0.4 is active in training
