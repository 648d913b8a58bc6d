"""The model contract (base.py), checked for every name in the registry.

A model added to MODEL_PATHS is picked up here with no edit: it must build from its Config with the
paper preset, score all items, give a finite differentiable loss, initialise deterministically
from the seed, round-trip its state_dict, and (where its class flags say so) be causal and ignore
extra right padding.
"""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys

import pytest
import torch

from matrrec_cli.errors import MatrrecError
from matrrec_cli.models import MODEL_PATHS, build_model, get_model_class, make_config
from matrrec_cli.models.base import SeqBatch, SequentialRecommender

N_ITEMS = 23  # ids 1..22 plus padding 0
MAX_LEN = 8
B = 5
NAMES = list(MODEL_PATHS)
# count models (pop, markov) have no loss, encoder or random init: tests/test_count_models.py
TRAINABLE = [n for n in NAMES if get_model_class(n).trainable]


def build(name: str, seed: int = 0, max_len: int = MAX_LEN) -> SequentialRecommender:
    """The model with the paper preset and every dropout off, so eval outputs are exact."""
    cls = get_model_class(name)
    overrides = {**cls.paper_overrides(dropout=0.1), **cls.dropout_overrides(0.0)}
    torch.manual_seed(seed)
    return build_model(name, n_items=N_ITEMS, max_len=max_len, overrides=overrides)


def batch(L: int = MAX_LEN, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([L, 1, 2, L - 1, L // 2])[:B]
    seq = torch.randint(1, N_ITEMS, (B, L), generator=g)
    seq[torch.arange(L)[None, :] >= lengths[:, None]] = 0  # right padding (base.py conventions)
    return seq, lengths


def test_registry_is_listed_without_importing_torch() -> None:
    code = (
        "import sys; from matrrec_cli.models import model_names; "
        "names = model_names(); assert 'torch' not in sys.modules, 'torch imported'; print(names)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(NAMES)


def test_unknown_model_is_a_one_line_error() -> None:
    with pytest.raises(MatrrecError, match="unknown model 'nope'"):
        get_model_class("nope")


@pytest.mark.parametrize("name", NAMES)
def test_config_presets_and_typos(name: str) -> None:
    cls = get_model_class(name)
    assert issubclass(cls, SequentialRecommender)
    assert dataclasses.is_dataclass(cls.Config)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    assert set(cls.paper_overrides(dropout=0.3)) <= fields
    assert set(cls.dropout_overrides(0.3)) <= fields
    cfg = make_config(name, cls.dropout_overrides(0.3))
    assert all(getattr(cfg, k) == v for k, v in cls.dropout_overrides(0.3).items())
    with pytest.raises(MatrrecError, match="not_a_setting"):
        make_config(name, {"not_a_setting": 1})


@pytest.mark.parametrize("name", TRAINABLE)
def test_full_sort_scores_shape_and_determinism(name: str) -> None:
    model = build(name).eval()
    seq, lengths = batch()
    with torch.no_grad():
        scores = model.full_sort_scores(seq, lengths)
        assert scores.shape == (B, N_ITEMS)
        assert scores.dtype == torch.float32
        assert torch.isfinite(scores).all()
        torch.testing.assert_close(model.full_sort_scores(seq, lengths), scores, rtol=0, atol=0)
        assert model.seq_repr(seq, lengths).shape[0] == B


def objectives(name: str) -> list[str]:
    return ["prefix", "all"] if get_model_class(name).supports_all_objective else ["prefix"]


@pytest.mark.parametrize(
    ("name", "objective"), [(n, o) for n in TRAINABLE for o in objectives(n)]
)
def test_loss_is_finite_and_reaches_every_parameter(name: str, objective: str) -> None:
    model = build(name).train()
    seq, lengths = batch()
    if objective == "prefix":
        target = torch.randint(1, N_ITEMS, (B,), generator=torch.Generator().manual_seed(3))
        sb = SeqBatch(item_seq=seq, lengths=lengths, target=target)
    else:
        targets = torch.where(seq > 0, torch.roll(seq, -1, dims=1), 0)
        targets[torch.arange(B), lengths - 1] = 7  # the held-out next item
        sb = SeqBatch(item_seq=seq, lengths=lengths, targets=targets)
    loss = model.calculate_loss(sb)
    assert loss.dim() == 0
    assert torch.isfinite(loss)
    loss.backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{pname} gets no gradient"
            assert torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", [n for n in TRAINABLE if get_model_class(n).causal])
def test_causal_models_encode_sees_only_the_past(name: str) -> None:
    model = build(name).eval()
    seq = torch.randint(1, N_ITEMS, (B, MAX_LEN), generator=torch.Generator().manual_seed(4))
    lengths = torch.full((B,), MAX_LEN)
    with torch.no_grad():
        h = model.encode(seq, lengths)
        assert h.shape[:2] == (B, MAX_LEN)
        for t in (0, MAX_LEN // 2):
            changed = seq.clone()
            changed[:, t + 1:] = (changed[:, t + 1:] % (N_ITEMS - 1)) + 1  # other real items
            changed[0, t + 1:] = 0  # one row becomes padding after t
            h2 = model.encode(changed, lengths)
            torch.testing.assert_close(h2[:, : t + 1], h[:, : t + 1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", [n for n in TRAINABLE
                                  if get_model_class(n).right_padding_invariant])
def test_full_sort_scores_ignore_extra_right_padding(name: str) -> None:
    model = build(name, max_len=MAX_LEN + 4).eval()
    seq, lengths = batch()
    longer = torch.nn.functional.pad(seq, (0, 4))  # (B, MAX_LEN + 4)
    with torch.no_grad():
        torch.testing.assert_close(
            model.full_sort_scores(longer, lengths), model.full_sort_scores(seq, lengths),
            atol=1e-5, rtol=1e-5,
        )


@pytest.mark.parametrize("name", [n for n in TRAINABLE
                                  if get_model_class(n).right_padding_invariant])
def test_scores_and_loss_equal_at_trimmed_width(name: str) -> None:
    """bucket_by_length trims a batch to its longest history + 1 (samples.trimmed_width)."""
    model = build(name).eval()
    seq, lengths = batch()
    rows = torch.tensor([1, 2, 4])  # histories 1, 2 and L/2: padding to trim
    seq, lengths = seq[rows], lengths[rows]
    narrow = seq[:, : int(lengths.max()) + 1]
    assert narrow.shape[1] < seq.shape[1]
    with torch.no_grad():
        torch.testing.assert_close(model.full_sort_scores(narrow, lengths),
                                   model.full_sort_scores(seq, lengths), atol=1e-5, rtol=1e-5)
        if name != "bert4rec":  # its loss draws masks over the array's width
            target = torch.arange(len(lengths)) + 1
            wide = model.calculate_loss(SeqBatch(item_seq=seq, lengths=lengths, target=target))
            trim = model.calculate_loss(SeqBatch(item_seq=narrow, lengths=lengths, target=target))
            torch.testing.assert_close(trim, wide, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", TRAINABLE)
def test_same_seed_same_init_and_state_dict_round_trip(name: str) -> None:
    a, a2, b = build(name, seed=0), build(name, seed=0), build(name, seed=1)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(a2.state_dict())
    assert all(torch.equal(v, a2.state_dict()[k]) for k, v in sa.items())
    assert any(not torch.equal(v, sb[k]) for k, v in sa.items())  # the seed matters
    buf = io.BytesIO()
    torch.save(sa, buf)
    buf.seek(0)
    b.load_state_dict(torch.load(buf, weights_only=True), strict=True)
    seq, lengths = batch()
    a.eval()
    b.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            b.full_sort_scores(seq, lengths), a.full_sort_scores(seq, lengths), rtol=0, atol=0
        )


SPEED_OPTIONS = [("matrrec", "skip_padding", 1), ("mamba4rec", "skip_padding", 2),
                 ("sasrec", "readout_only", 1), ("sasrec", "readout_only", 2),
                 ("matrrec", "readout_only", 2)]


@pytest.mark.parametrize(("name", "option", "n_layers"), SPEED_OPTIONS)
def test_speed_options_change_no_score_loss_or_gradient(name: str, option: str,
                                                        n_layers: int) -> None:
    """Speed options compute the same function: scores, the prefix loss and every gradient
    equal the default path's (dropout off, so no random stream is involved)."""
    cls = get_model_class(name)
    overrides = {**cls.paper_overrides(dropout=0.1), **cls.dropout_overrides(0.0),
                 "n_layers": n_layers}
    models = []
    for on in (False, True):
        torch.manual_seed(0)
        models.append(build_model(name, n_items=N_ITEMS, max_len=MAX_LEN,
                                  overrides={**overrides, option: on}))
    seq, lengths = batch()
    target = torch.randint(1, N_ITEMS, (B,), generator=torch.Generator().manual_seed(3))
    losses, grads = [], []
    for model in models:
        with torch.no_grad():
            scores = model.eval().full_sort_scores(seq, lengths)
        loss = model.train().calculate_loss(SeqBatch(item_seq=seq, lengths=lengths, target=target))
        loss.backward()
        losses.append((scores, loss.detach()))
        grads.append({k: p.grad for k, p in model.named_parameters()})
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], rtol=1e-4, atol=1e-6, msg=k)
