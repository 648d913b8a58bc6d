"""The eight Table 2 baselines (protocol §8, §10): training runs, the loss falls, a deterministic
pattern is learnt, causality where claimed, and each documented quirk behaves as RecBole's.

The synthetic task: a fixed random permutation pi of the items 1..30; a history is a chain
s, pi(s), pi(pi(s)), ... of length n, and its next item is pi(last). Every (s, n) pair with
n <= L is a sample; a fixed fifth of them is held out for testing, so a model only passes by
learning the transition, not by remembering the held-out rows.
"""

from __future__ import annotations

import math

import pytest
import torch

from matrrec_cli.errors import MatrrecError
from matrrec_cli.models import build_model, get_model_class
from matrrec_cli.models.base import SeqBatch, SequentialRecommender

NAMES = ["gru4rec", "narm", "sasrec", "nextitnet", "bert4rec", "sine", "core", "mamba4rec"]
N_ITEMS = 31  # ids 1..30 plus padding 0
L = 8


def build(name: str, seed: int = 0, n_items: int = N_ITEMS, max_len: int = L,
          **extra: object) -> SequentialRecommender:
    """The paper preset with the dataset dropout off (the tiny task has nothing to regularise)."""
    cls = get_model_class(name)
    overrides = {**cls.paper_overrides(dropout=0.0), **cls.dropout_overrides(0.0), **extra}
    torch.manual_seed(seed)
    return build_model(name, n_items=n_items, max_len=max_len, overrides=overrides)


def perm_data(seed: int = 0) -> tuple[SeqBatch, SeqBatch]:
    """(train, test) prefix batches of the permutation task."""
    g = torch.Generator().manual_seed(seed)
    pi = torch.randperm(N_ITEMS - 1, generator=g) + 1  # pi[i - 1] = the item after i
    seqs, lens, targets = [], [], []
    for s in range(1, N_ITEMS):
        chain = [s]
        for _ in range(L):
            chain.append(int(pi[chain[-1] - 1]))
        for n in range(1, L + 1):
            seqs.append(chain[:n] + [0] * (L - n))
            lens.append(n)
            targets.append(chain[n])
    seq, length, target = torch.tensor(seqs), torch.tensor(lens), torch.tensor(targets)
    test = torch.zeros(len(seqs), dtype=torch.bool)
    test[torch.randperm(len(seqs), generator=g)[: len(seqs) // 5]] = True

    def part(m: torch.Tensor) -> SeqBatch:
        return SeqBatch(item_seq=seq[m], lengths=length[m], target=target[m])

    return part(~test), part(test)


def fit(model: SequentialRecommender, data: SeqBatch, steps: int, lr: float = 5e-3,
        batch_size: int = 64) -> list[float]:
    """Adam on shuffled minibatches; returns the mean loss of each pass over the data."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(1)
    n = data.item_seq.size(0)
    model.train()
    losses, done = [], 0
    while done < steps:
        order, total = torch.randperm(n, generator=g), 0.0
        for i in range(0, n, batch_size):
            idx = order[i: i + batch_size]
            loss = model.calculate_loss(
                SeqBatch(item_seq=data.item_seq[idx], lengths=data.lengths[idx],
                         target=data.target[idx])
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * idx.numel()
            done += 1
        losses.append(total / n)
    return losses


@torch.no_grad()
def recall_at_10(model: SequentialRecommender, data: SeqBatch) -> float:
    model.eval()
    scores = model.full_sort_scores(data.item_seq, data.lengths)  # (B, n_items)
    scores[:, 0] = -math.inf  # as the evaluator (protocol §4)
    target = scores.gather(1, data.target[:, None])  # (B, 1)
    rank = 1 + (scores > target).sum(dim=1)
    return (rank <= 10).float().mean().item()


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: these tiny models run several times faster on a shared 2-core box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# Adam schedule and pass marks per model: (steps, lr, batch size, max loss ratio, min Recall@10);
# the test asks losses[-1] < max_ratio * losses[0] and Recall@10 >= min_recall on the 48 held-out
# rows (one row = 0.021). NextItNet (faithful read-out at slot L-1, i.e. from the pads after short
# histories) and SINE (no order information but what leaks through the unmasked pads) need more
# steps to generalise, and BERT4Rec's masked loss needs more than 40 to halve.
# The marks come from the worst of 16 draws per model: init seeds 0..7 (build(name, seed=s)) x
# torch threads 1 and 2, schedules as below (another CPU is like another draw: an AMD EPYC gave
# SINE seed 0 a ratio of 0.5006 where this Xeon gives 0.4901). Margin kept: max_ratio >= 1.2x the
# worst ratio, min_recall >= 3 rows below the worst recall. A model that learns nothing (lr=0)
# has a ratio of 0.98..1.03 and Recall@10 <= 0.52 (seeds 0..7), so every mark fails it:
# test_the_marks_fail_a_model_that_learns_nothing.
#               worst ratio  worst Recall@10   (measured on an Intel Xeon, torch 2.13.0+cpu)
#   gru4rec        0.0001      1.000
#   narm           0.0156      1.000
#   sasrec         0.0019      1.000
#   nextitnet      0.0418      0.812   (9 of 16 draws were under the old 0.9)
#   bert4rec       0.3453      0.917   (40 steps: 0.4818 at seed 0, 4 % under the 0.5 mark)
#   sine           0.5634      0.896   (9 of 16 draws failed the old 0.5 / 0.9; 150 steps
#                                       gave 0.5303 / 0.896: not worth 1.5x the time)
#   core           0.2390      1.000
#   mamba4rec      0.0026      1.000   (20 steps; 40 gave 0.0003 in twice the time)
SCHEDULE: dict[str, tuple[int, float, int, float, float]] = {
    "gru4rec": (40, 1e-2, 256, 0.5, 0.9),
    "narm": (40, 1e-2, 256, 0.5, 0.9),
    "sasrec": (40, 1e-2, 256, 0.5, 0.9),
    "nextitnet": (100, 5e-3, 64, 0.5, 0.7),
    "bert4rec": (80, 1e-2, 256, 0.5, 0.85),
    "sine": (100, 1e-2, 256, 0.7, 0.8),
    "core": (40, 1e-2, 256, 0.5, 0.9),
    "mamba4rec": (20, 1e-2, 256, 0.5, 0.9),
}


# --- every model ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_registered_and_one_training_step_changes_the_parameters(name: str) -> None:
    model = build(name).train()
    train, _ = perm_data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = model.calculate_loss(SeqBatch(item_seq=train.item_seq[:16], lengths=train.lengths[:16],
                                         target=train.target[:16]))
    assert loss.dim() == 0
    assert torch.isfinite(loss)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss.backward()
    opt.step()
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert "item_embedding.weight" in changed


@pytest.mark.parametrize("name", NAMES)
def test_learns_a_deterministic_pattern(name: str) -> None:
    """Loss falls over the passes, and held-out (history -> next) rows reach the model's Recall@10
    mark (SCHEDULE)."""
    model = build(name)
    train, test = perm_data()
    before = recall_at_10(model, test)
    steps, lr, batch_size, max_ratio, min_recall = SCHEDULE[name]
    losses = fit(model, train, steps=steps, lr=lr, batch_size=batch_size)
    assert losses[-1] < max_ratio * losses[0], losses
    after = recall_at_10(model, test)
    assert after >= min_recall, (before, after)


@pytest.mark.parametrize("name", NAMES)
def test_the_marks_fail_a_model_that_learns_nothing(name: str) -> None:
    """Two passes at lr=0 (the parameters never move) miss both marks."""
    model = build(name)
    train, test = perm_data()
    _, _, batch_size, max_ratio, min_recall = SCHEDULE[name]
    losses = fit(model, train, steps=2 * math.ceil(train.item_seq.size(0) / batch_size), lr=0.0,
                 batch_size=batch_size)
    assert len(losses) == 2
    assert not losses[-1] < max_ratio * losses[0], losses
    assert recall_at_10(model, test) < min_recall


@pytest.mark.parametrize("name", ["gru4rec", "sasrec", "mamba4rec", "nextitnet"])
def test_causal_models_scores_ignore_items_after_the_history(name: str) -> None:
    """Putting real items after len-1 (instead of pads) leaves encode at t < len unchanged, and
    (with the len-1 read-out) the scores too."""
    extra = {"readout": "len"} if name == "nextitnet" else {}
    model = build(name, **extra).eval()
    assert model.causal
    _, test = perm_data()
    seq, lengths = test.item_seq, test.lengths
    filled = torch.where(seq > 0, seq, torch.randint_like(seq, 1, N_ITEMS))
    with torch.no_grad():
        h, h2 = model.encode(seq, lengths), model.encode(filled, lengths)
        valid = seq > 0
        torch.testing.assert_close(h2[valid], h[valid], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.full_sort_scores(filled, lengths),
                                   model.full_sort_scores(seq, lengths), atol=1e-5, rtol=1e-5)


def test_presets_follow_protocol_10() -> None:
    ov = {n: get_model_class(n).paper_overrides(dropout=0.4) for n in NAMES}
    assert ov["nextitnet"] == {}
    assert ov["sine"] == {}
    assert ov["narm"] == {"hidden_size": 64}  # its dropout_probs are not the yaml's keys
    assert ov["gru4rec"] == {"hidden_size": 64, "dropout_prob": 0.4}
    for n in ("sasrec", "bert4rec"):
        assert ov[n] == {"hidden_size": 64, "n_layers": 1, "n_heads": 1,
                         "hidden_dropout_prob": 0.4, "attn_dropout_prob": 0.4}
    assert ov["core"] == {"n_layers": 1, "n_heads": 1, "hidden_dropout_prob": 0.4,
                          "attn_dropout_prob": 0.4}
    assert ov["mamba4rec"]["dropout_prob"] == 0.4
    assert ov["mamba4rec"]["n_layers"] == 1
    recbole = {n: get_model_class(n).Config() for n in NAMES}
    assert (recbole["sasrec"].n_layers, recbole["sasrec"].hidden_dropout_prob) == (2, 0.5)
    assert (recbole["gru4rec"].hidden_size, recbole["gru4rec"].dropout_prob) == (128, 0.3)
    assert recbole["narm"].dropout_probs == (0.25, 0.5)
    assert (recbole["bert4rec"].mask_ratio, recbole["bert4rec"].ft_ratio) == (0.2, 0.5)
    assert recbole["core"].temperature == 0.07


# --- quirks -----------------------------------------------------------------------------------
def test_nextitnet_reads_the_last_array_slot() -> None:
    model = build("nextitnet").eval()
    seq = torch.tensor([[3, 4, 5, 0, 0, 0, 0, 0]])
    lengths = torch.tensor([3])
    with torch.no_grad():
        h = model.residual_blocks(model.item_embedding(seq))  # (1, L, D)
        torch.testing.assert_close(model.seq_repr(seq, lengths), model.final_layer(h[:, -1]))
        # more pads after the same history move slot L-1 further away: the output changes
        longer = torch.nn.functional.pad(seq, (0, 3))
        assert not torch.allclose(model.seq_repr(longer, lengths), model.seq_repr(seq, lengths))
    fixed = build("nextitnet", readout="len").eval()
    with torch.no_grad():
        h = fixed.residual_blocks(fixed.item_embedding(seq))
        torch.testing.assert_close(fixed.seq_repr(seq, lengths), fixed.final_layer(h[:, 2]))


def test_nextitnet_loss_adds_plain_l2_norms() -> None:
    model = build("nextitnet")
    _, test = perm_data()
    with torch.no_grad():
        loss = model.calculate_loss(test)
        ce = torch.nn.functional.cross_entropy(
            model.full_sort_scores(test.item_seq, test.lengths), test.target)
        norms = [model.item_embedding.weight, model.final_layer.weight] + [
            p for n, p in model.residual_blocks.named_parameters() if n.endswith("weight")]
        assert len(norms) == 2 + 10 * 4  # 10 blocks x (conv1, ln1, conv2, ln2)
        reg = sum(torch.sqrt((p ** 2).sum()) for p in norms)  # not squared
    torch.testing.assert_close(loss, ce + 1e-5 * reg)


def test_bert4rec_eval_drops_the_oldest_item() -> None:
    model = build("bert4rec").eval()
    M = model.mask_token
    seq = torch.tensor([[5, 6, 7, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6, 7, 8]])
    lengths = torch.tensor([3, 8])
    with torch.no_grad():
        scores = model.full_sort_scores(seq, lengths)
        assert scores.shape == (2, N_ITEMS)  # the MASK column is not an item
        expect_in = torch.tensor([[6, 7, M, 0, 0, 0, 0, 0], [2, 3, 4, 5, 6, 7, 8, M]])
        h = model.forward(expect_in)
        expect = torch.stack([h[0, 2], h[1, 7]]) @ model.item_embedding.weight[:N_ITEMS].T
        torch.testing.assert_close(scores, expect + model.output_bias)
        other = seq.clone()
        other[:, 0] = 9  # the oldest item never reaches the encoder
        torch.testing.assert_close(model.full_sort_scores(other, lengths), scores)
        fixed = build("bert4rec", eval_input="keep_oldest").eval()
        a, b = fixed.full_sort_scores(seq, lengths), fixed.full_sort_scores(other, lengths)
        assert not torch.allclose(a[0], b[0])  # a short history keeps its oldest item
        torch.testing.assert_close(a[1], b[1])  # a full one still drops it


def test_bert4rec_masking_scheme() -> None:
    """Per-batch coin, i.i.d. 0.2 masks on real items only, at most int(0.2 L) trained slots,
    the last ones, never position 0; the loss ignores the sample's target."""
    model = build("bert4rec", max_len=20)
    seq = torch.randint(1, N_ITEMS, (400, 20))
    lengths = torch.randint(1, 21, (400,))
    seq[torch.arange(20)[None] >= lengths[:, None]] = 0
    torch.manual_seed(0)
    last_only, masked_frac = 0, []
    for _ in range(60):
        out, trained = model.mask_items(seq, lengths)
        masked = out == model.mask_token
        assert not (masked & (seq == 0)).any()
        assert not trained[:, 0].any()
        assert not (trained & ~masked).any()
        assert (trained.sum(1) <= 4).all()  # int(0.2 * 20)
        n_after = masked.flip(1).cumsum(1).flip(1) - masked.long()  # masks strictly after j
        assert not (masked & ~trained & (n_after < 4) & (torch.arange(20) > 0)).any()
        if torch.equal(masked, torch.arange(20)[None] == (lengths - 1)[:, None]):
            last_only += 1
        else:
            masked_frac.append(masked.sum().item() / (seq > 0).sum().item())
    assert 15 <= last_only <= 45  # ft_ratio 0.5 per batch
    assert abs(sum(masked_frac) / len(masked_frac) - 0.2) < 0.02
    train, _ = perm_data()
    torch.manual_seed(5)
    a = model.calculate_loss(train)
    torch.manual_seed(5)
    b = model.calculate_loss(SeqBatch(item_seq=train.item_seq, lengths=train.lengths,
                                      target=torch.ones_like(train.target)))
    assert torch.equal(a, b)


def test_core_uniform_init_of_every_parameter() -> None:
    model = build("core")
    bound = 1 / math.sqrt(64)
    for name, p in model.named_parameters():
        assert p.abs().max() <= bound, name
        if p.numel() >= 64:
            assert p.abs().max() > 0.9 * bound, name  # uniform over the whole range
    assert model.item_embedding.weight[0].abs().sum() > 0  # the pad row too
    assert model.net.trm_encoder.layer[0].feed_forward.LayerNorm.weight.std() > 0.01


def test_core_scores_are_cosines_over_temperature() -> None:
    model = build("core").eval()
    _, test = perm_data()
    with torch.no_grad():
        scores = model.full_sort_scores(test.item_seq, test.lengths)
    assert scores.abs().max() <= 1 / 0.07 + 1e-4


def test_sine_has_no_padding_mask() -> None:
    model = build("sine").eval()
    seq = torch.tensor([[3, 4, 5, 0, 0, 0, 0, 0]])
    lengths = torch.tensor([3])
    with torch.no_grad():
        before = model.full_sort_scores(seq, lengths)
        model.item_embedding.weight[0] += 1.0  # only the pad row changes
        after = model.full_sort_scores(seq, lengths)
    assert not torch.allclose(before[:, 1:], after[:, 1:])


def test_mamba4rec_has_no_residual_with_one_layer() -> None:
    """With Mamba's output forced to 0, one layer forgets the input (LN(Dropout(0)) only);
    two layers keep it through the residual."""
    seq = torch.tensor([[3, 4, 5, 0, 0, 0, 0, 0], [7, 8, 9, 0, 0, 0, 0, 0]])
    lengths = torch.tensor([3, 3])
    for n_layers, forgets in ((1, True), (2, False)):
        model = build("mamba4rec", n_layers=n_layers).eval()
        for layer in model.mamba_layers:
            layer.mamba.forward = lambda x: torch.zeros_like(x)  # type: ignore[method-assign]
        with torch.no_grad():
            r = model.seq_repr(seq, lengths)
        assert torch.allclose(r[0], r[1]) == forgets


def test_mamba4rec_dropout_comes_before_the_embedding_layernorm() -> None:
    """In training, the LN output is normalised after dropout: every row has mean 0."""
    model = build("mamba4rec", dropout_prob=0.5).train()
    seen = {}
    model.LayerNorm.register_forward_hook(lambda m, i, o: seen.update(out=o))
    torch.manual_seed(0)
    model.seq_repr(torch.tensor([[3, 4, 5, 6, 0, 0, 0, 0]]), torch.tensor([4]))
    torch.testing.assert_close(seen["out"].mean(-1), torch.zeros(1, L), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["sasrec", "bert4rec"])
def test_sdpa_attention_equals_explicit_in_eval(name: str) -> None:
    a, b = build(name), build(name, attn_impl="sdpa")
    b.load_state_dict(a.state_dict())
    seq = torch.tensor([[3, 4, 5, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6, 7, 8]])
    lengths = torch.tensor([3, 8])
    with torch.no_grad():
        torch.testing.assert_close(b.eval().full_sort_scores(seq, lengths),
                                   a.eval().full_sort_scores(seq, lengths), atol=1e-5, rtol=1e-5)
    with pytest.raises(MatrrecError, match="attn_impl"):
        build(name, attn_impl="flash")
