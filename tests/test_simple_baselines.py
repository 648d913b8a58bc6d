"""sr, itemknn, sknn, vsknn, ease: scores against brute force written from each definition, the
held-out targets never counted, the popularity tie-break, state_dict round trips, the registry,
choosing on validation, and `matrrec train` / `matrrec evaluate` end to end."""

from __future__ import annotations

import io
import itertools
import json
import math
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from matrrec_cli.cli import main
from matrrec_cli.errors import MatrrecError
from matrrec_cli.models import MODEL_PATHS, build_model, get_model_class, make_config
from matrrec_cli.models.ease import MAX_ITEMS
from matrrec_cli.models.sr import popularity_tie_break

NEW = ["sr", "itemknn", "sknn", "vsknn", "ease"]
N_ITEMS = 9  # ids 1..8 plus padding
MAX_LEN = 4  # shorter than most known parts: the query is the last 4 items
# users' chronological items, with repeats; the last user is too short to split (left out)
SEQS = [[1, 2, 3, 2, 4, 5, 1], [2, 3, 1, 2, 6], [3, 2, 3, 5, 1, 7, 8, 2, 4],
        [5, 6, 7, 5, 6, 8], [1, 4, 2, 8, 3], [6, 1, 6, 2, 5, 3, 7, 1], [4, 7]]
EXTRA = [[8], [3, 3, 1], [5, 2, 7, 1]]  # histories of nobody in particular
# (model, overrides) cases: defaults, and settings that make the options matter on tiny data
CASES = [("sr", {}), ("sr", {"window": 2, "weighting": "linear"}),
         ("sr", {"window": 3, "weighting": "quadratic"}), ("sr", {"window": 4, "weighting": "log"}),
         ("sr", {"window": 2, "weighting": "same"}),
         ("itemknn", {}), ("itemknn", {"neighbors": 2}),
         ("sknn", {}), ("sknn", {"k": 2}),
         ("vsknn", {}), ("vsknn", {"k": 2}), ("vsknn", {"weighting": "div", "k": 3}),
         ("ease", {}), ("ease", {"l2": 1.0})]


def csr(seqs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    items = np.array([i for s in seqs for i in s], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    return items, offsets


def known_parts(split_name: str, seqs: list[list[int]] = SEQS) -> list[list[int]]:
    """What is known before the split's targets (test: also the valid item)."""
    drop = 1 if split_name == "test" else 2
    return [s[:-drop] if len(s) >= 3 else [] for s in seqs]


def histories(split_name: str) -> list[list[int]]:
    """The histories the evaluator scores (each user's known part, last MAX_LEN), and EXTRA."""
    return [k[-MAX_LEN:] for k in known_parts(split_name) if k] + EXTRA


def batch(hists: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    seq = torch.zeros(len(hists), MAX_LEN + 2, dtype=torch.int64)  # extra right padding
    for r, h in enumerate(hists):
        seq[r, :len(h)] = torch.tensor(h)
    return seq, torch.tensor([len(h) for h in hists])


# --- brute force, straight from the definitions (module docstrings) -------------------------
def ref_pop(known: list[list[int]]) -> np.ndarray:
    pop = np.zeros(N_ITEMS)
    for s in known:
        for i in s:
            pop[i] += 1
    return pop


WEIGHT = {"div": lambda d: 1 / d, "same": lambda d: 1.0, "linear": lambda d: max(1 - 0.1 * d, 0),
          "quadratic": lambda d: 1 / d**2, "log": lambda d: 1 / math.log10(d + 1.7)}


def ref_sr(known, hist, window=10, weighting="div") -> np.ndarray:
    rules: dict[tuple[int, int], float] = defaultdict(float)
    for s in known:
        for j in range(len(s)):
            for d in range(1, window + 1):
                if j - d >= 0:
                    rules[s[j - d], s[j]] += WEIGHT[weighting](d)
    return np.array([rules.get((hist[-1], b), 0.0) for b in range(N_ITEMS)])


def ref_itemknn(known, hist, neighbors=100) -> np.ndarray:
    users = {a: {u for u, s in enumerate(known) if a in s} for a in range(N_ITEMS)}
    a = hist[-1]
    sims = []
    for b in range(N_ITEMS):
        common = len(users[a] & users[b])
        if b != a and common:
            sims.append((-common / math.sqrt(len(users[a]) * len(users[b])), b))
    out = np.zeros(N_ITEMS)
    for neg, b in sorted(sims)[:neighbors]:
        out[b] = -neg
    return out


def ref_knn(known, hist, k=100, weighting=None) -> np.ndarray:
    """SKNN (weighting None) or V-SKNN. Neighbours are ordered by exact similarity (Fractions;
    the cosine by its square), ties to the lower user index."""
    q = set(hist)
    if weighting is not None:  # each item weighted by its latest position
        n = len(hist)
        w = {}
        for t, i in enumerate(hist):
            d = n - 1 - t
            w[i] = Fraction(max(10 - d, 0), 10) if weighting == "linear" else Fraction(n - d, n)
    cands = []
    for u, s in enumerate(known):
        nset = set(s)
        common = q & nset
        if not common:
            continue
        if weighting is None:
            key, sim = (Fraction(len(common) ** 2, len(q) * len(nset)),
                        len(common) / math.sqrt(len(q) * len(nset)))
        else:
            key = sum(w[i] for i in common)
            sim = float(key)
        if key > 0:
            cands.append((-key, u, sim))
    out = np.zeros(N_ITEMS)
    for _, u, sim in sorted(cands)[:k]:
        for b in set(known[u]):
            out[b] += sim
    return out


def ref_ease(known, hist, l2=500.0) -> np.ndarray:
    x = np.zeros((len(known), N_ITEMS))
    for u, s in enumerate(known):
        for i in s:
            x[u, i] = 1
    p = np.linalg.inv(x.T @ x + l2 * np.eye(N_ITEMS))
    b = np.eye(N_ITEMS) - p @ np.diag(1 / np.diag(p))
    q = np.zeros(N_ITEMS)
    q[list(set(hist))] = 1
    return q @ b


def reference(name: str, overrides: dict, known, hist) -> np.ndarray:
    if name == "sr":
        return ref_sr(known, hist, **overrides)
    if name == "itemknn":
        return ref_itemknn(known, hist, **overrides)
    if name == "sknn":
        return ref_knn(known, hist, **overrides)
    if name == "vsknn":
        return ref_knn(known, hist, **{"weighting": "linear", **overrides})
    return ref_ease(known, hist, **overrides)


def fitted(name: str, split_name: str, overrides: dict | None = None, seqs=SEQS):
    model = build_model(name, n_items=N_ITEMS, max_len=MAX_LEN, overrides=overrides)
    model.fit_data(*csr(seqs), split=split_name)
    return model


def assert_lexicographic(scores: torch.Tensor, primary: np.ndarray, pop: np.ndarray) -> None:
    """Every pair of real items (column 0 is padding) is ordered by (primary, pop), and equal
    pairs stay tied."""
    key = np.round(primary[:, 1:], 9)  # (B, n-1)
    s = scores[:, 1:].numpy()
    for r in range(len(s)):
        want = np.sign(np.where(key[r][:, None] != key[r][None, :],
                                key[r][:, None] - key[r][None, :],
                                pop[1:][:, None] - pop[1:][None, :]))
        np.testing.assert_array_equal(np.sign(s[r][:, None] - s[r][None, :]), want)


# --- scores ---------------------------------------------------------------------------------
@pytest.mark.parametrize("split_name", ["valid", "test"])
@pytest.mark.parametrize(("name", "overrides"), CASES)
def test_scores_equal_brute_force(name: str, overrides: dict, split_name: str) -> None:
    model = fitted(name, split_name, overrides)
    known, hists = known_parts(split_name), histories(split_name)
    seq, lengths = batch(hists)
    want = np.stack([reference(name, overrides, known, h) for h in hists])  # (B, n)
    got = model.seq_repr(seq, lengths)
    tol = 1e-5 if name == "ease" else 1e-12  # ease's B is stored in float32
    torch.testing.assert_close(got, torch.from_numpy(want), rtol=tol, atol=tol)
    scores = model.full_sort_scores(seq, lengths)
    assert scores.shape == (len(hists), N_ITEMS)
    assert scores.dtype == torch.float32
    pop = ref_pop(known)
    np.testing.assert_array_equal(model.popularity.numpy(), pop)
    if name != "ease":  # float32 B: near-ties are not exact; the tie-break is tested below
        assert_lexicographic(scores, want, pop)


def test_ties_at_the_cut_keep_the_lower_id() -> None:
    """Items 2 and 3 are equally similar to 1, users 0 and 1 equally similar to the history [1]:
    one neighbour keeps item 2, resp. user 0 (whose own item is 4, user 1's is 5)."""
    seqs = [[1, 2, 4, 6, 6], [1, 3, 5, 6, 6]]  # valid and test items held out: 6, 6
    seq, lengths = batch([[1]])
    itemknn = fitted("itemknn", "valid", {"neighbors": 1}, seqs=seqs)
    assert itemknn.seq_repr(seq, lengths)[0, 1:].nonzero().flatten().tolist() == [1]  # item 2
    sknn = fitted("sknn", "valid", {"k": 1}, seqs=seqs)
    assert sknn.seq_repr(seq, lengths)[0, 1:].nonzero().flatten().tolist() == [0, 1, 3]  # 1 2 4


def test_sr_window_1_ranks_like_markov() -> None:
    for split_name in ("valid", "test"):
        sr, markov = fitted("sr", split_name, {"window": 1}), fitted("markov", split_name)
        seq, lengths = batch(histories(split_name))
        a, b = sr.full_sort_scores(seq, lengths), markov.full_sort_scores(seq, lengths)
        ranks = [(s[:, None, :] > s[:, :, None]).sum(-1) for s in (a, b)]  # (B, n) per target
        torch.testing.assert_close(ranks[0], ranks[1], rtol=0, atol=0)


def test_popularity_tie_break_is_lexicographic() -> None:
    g = torch.Generator().manual_seed(0)
    primary = torch.randint(0, 4, (6, 40), generator=g).double() / 3  # many ties
    primary[0] += 1e-13 * torch.rand(40, generator=g, dtype=torch.float64)  # rounding noise
    pop = torch.randint(0, 5, (40,), generator=g).float()
    sparse = primary * (torch.rand(6, 40, generator=g) < 0.2)  # mostly 0: the sparse path
    for p in (sparse, primary, primary - 0.5):  # and dense, any sign: sorts of whole rows
        scores = popularity_tie_break(p, pop)
        assert scores.dtype == torch.float32
        assert_lexicographic(torch.cat([torch.zeros(6, 1), scores], 1),
                             np.concatenate([np.zeros((6, 1)), p.numpy()], 1),
                             np.concatenate([[0.0], pop.numpy()]))


@pytest.mark.parametrize("split_name", ["valid", "test"])
@pytest.mark.parametrize("name", NEW)
def test_held_out_targets_are_never_counted(name: str, split_name: str) -> None:
    changed = [list(s) for s in SEQS]
    drop = 1 if split_name == "test" else 2  # valid: neither the valid nor the test item
    for s in changed:
        if len(s) >= 3:
            for t in range(1, drop + 1):
                s[-t] = s[-t] % (N_ITEMS - 1) + 1  # another real item
    assert changed != SEQS
    seq, lengths = batch(histories(split_name))
    a = fitted(name, split_name).full_sort_scores(seq, lengths)
    b = fitted(name, split_name, seqs=changed).full_sort_scores(seq, lengths)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    if split_name == "test":  # the test state does count the valid item
        other = [list(s) for s in SEQS]
        for s in other:
            if len(s) >= 3:
                s[-2] = s[-2] % (N_ITEMS - 1) + 1
        c = fitted(name, split_name, seqs=other).full_sort_scores(seq, lengths)
        assert not torch.equal(a, c)


# --- contract -------------------------------------------------------------------------------
def test_registry_and_flags() -> None:
    names = list(MODEL_PATHS)
    at = names.index("markov")
    assert names[at + 1:at + 1 + len(NEW)] == NEW
    for name in NEW:
        cls = get_model_class(name)
        assert cls.trainable is False
        assert cls.supports_all_objective is False
        assert cls.grid
        keys = list(cls.grid)  # every grid point is a valid configuration
        for values in itertools.product(*cls.grid.values()):
            make_config(name, dict(zip(keys, values, strict=True)))


@pytest.mark.parametrize("name", NEW)
def test_state_dict_round_trip_reproduces_scores(name: str) -> None:
    a = fitted(name, "test")
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = build_model(name, n_items=N_ITEMS, max_len=MAX_LEN)  # unfitted: tables of size 0
    b.load_state_dict(torch.load(buf, weights_only=True), strict=True)
    seq, lengths = batch(histories("test"))
    torch.testing.assert_close(b.full_sort_scores(seq, lengths), a.full_sort_scores(seq, lengths),
                               rtol=0, atol=0)
    c = fitted(name, "valid")  # a fitted model of other table sizes takes the state too
    c.load_state_dict(a.state_dict(), strict=True)
    torch.testing.assert_close(c.full_sort_scores(seq, lengths), a.full_sort_scores(seq, lengths),
                               rtol=0, atol=0)


@pytest.mark.parametrize("name", NEW)
def test_unfitted_scores_are_finite_and_padding_ignored(name: str) -> None:
    model = build_model(name, n_items=N_ITEMS, max_len=MAX_LEN)
    seq, lengths = batch(EXTRA)
    assert torch.isfinite(model.full_sort_scores(seq, lengths)).all()
    model = fitted(name, "test")
    garbage = seq.clone()
    garbage[seq == 0] = 5  # what lies past len-1 must not matter
    torch.testing.assert_close(model.full_sort_scores(garbage, lengths),
                               model.full_sort_scores(seq, lengths), rtol=0, atol=0)


def test_bad_settings_are_errors() -> None:
    with pytest.raises(MatrrecError, match="weighting"):
        build_model("sr", n_items=N_ITEMS, max_len=MAX_LEN, overrides={"weighting": "nope"})
    with pytest.raises(MatrrecError, match="weighting"):
        build_model("vsknn", n_items=N_ITEMS, max_len=MAX_LEN, overrides={"weighting": "div2"})
    with pytest.raises(MatrrecError, match=f"at most {MAX_ITEMS}"):
        build_model("ease", n_items=MAX_ITEMS + 2, max_len=MAX_LEN)
    build_model("ease", n_items=MAX_ITEMS + 1, max_len=MAX_LEN)  # allocates nothing unfitted


# --- choosing on validation (matrrec tune, Optuna's grid), and the CLI ---------------------
def test_tune_searches_a_count_models_own_grid_on_validation(fake_data, capsys,
                                                              tmp_path: Path) -> None:
    """`matrrec tune --model sr` searches sr's grid (every point once, the default first) and
    keeps the point with the best valid NDCG@10."""
    import pandas as pd

    pytest.importorskip("optuna")
    with pytest.raises(SystemExit) as e:
        main(["tune", "--dataset", "synthetic", "--model", "sr", "--device", "cpu",
              "--results-dir", str(tmp_path)])
    assert e.value.code in (0, None)
    df = pd.read_csv(tmp_path / "tune_synthetic_sr.csv")
    assert sorted(df["window"]) == sorted(get_model_class("sr").grid["window"])
    assert df["faithful"].iloc[0]
    assert df["window"].iloc[0] == 10  # the default, trial 0
    best = df.loc[df["best"]].iloc[0]
    assert best["valid_ndcg@10"] == df["valid_ndcg@10"].max()
    out = capsys.readouterr().out
    if best["faithful"]:
        assert "tag=tuned" not in out
    else:
        assert f"--set window={best['window']} --set tag=tuned" in out


@pytest.mark.parametrize("name", NEW)
def test_train_and_evaluate_end_to_end(name: str, fake_data, capsys, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as e:
        main(["train", "--dataset", "synthetic", "--model", name, "--device", "cpu",
              "--results-dir", str(tmp_path), "--json"])
    assert e.value.code in (0, None)
    res = json.loads(capsys.readouterr().out)
    assert res["best_epoch"] == 0
    for split_name in ("test", "valid"):
        with pytest.raises(SystemExit) as e:
            main(["evaluate", res["run_dir"], "--split", split_name, "--json", "--device", "cpu"])
        assert e.value.code in (0, None)
        out = json.loads(capsys.readouterr().out)
        assert out["matches_stored"] is True
        assert out["metrics"] == res[split_name]
    assert 0 <= res["test"]["ndcg@10"] <= 1
