"""pop and markov: brute-force scores on a tiny split, and the reference points of
../shared/data/README.md reproduced exactly on the real data."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from matrrec_cli.cli import main
from matrrec_cli.models import build_model

# users' chronological items (ids 1..5); valid target = second to last, test target = last
SEQS = [[1, 2, 3, 2, 4], [2, 3, 1, 2], [3, 2, 3, 5, 1]]


def _csr() -> tuple[np.ndarray, np.ndarray]:
    items = np.array([i for s in SEQS for i in s], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in SEQS])]).astype(np.int64)
    return items, offsets


def _brute(split: str, with_valid: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Popularity and transition counts over what is known before the split's target."""
    drop = 1 if split == "test" and with_valid else 2
    pop, trans = np.zeros(6), np.zeros((6, 6))
    for s in SEQS:
        known = s[:-drop]
        for i in known:
            pop[i] += 1
        for a, b in itertools.pairwise(known):
            trans[a, b] += 1
    return pop, trans


@pytest.mark.parametrize("split", ["valid", "test"])
@pytest.mark.parametrize("with_valid", [True, False])
def test_scores_equal_brute_force_counts(split: str, with_valid: bool) -> None:
    items, offsets = _csr()
    pop_model = build_model("pop", n_items=6, max_len=4,
                            overrides={"test_counts_valid_item": with_valid})
    markov = build_model("markov", n_items=6, max_len=4,
                         overrides={"test_counts_valid_item": with_valid})
    for m in (pop_model, markov):
        m.fit_data(items, offsets, split=split)
    pop, trans = _brute(split, with_valid)
    seq = torch.tensor([[1, 2, 0, 0], [3, 5, 1, 2]])  # padding past lengths is ignored
    lengths = torch.tensor([2, 3])
    torch.testing.assert_close(pop_model.full_sort_scores(seq, lengths),
                               torch.tensor(pop, dtype=torch.float32).expand(2, -1))
    want = trans[[2, 1]] + pop / (pop.max() + 1)  # last items: 2 and 1
    torch.testing.assert_close(markov.full_sort_scores(seq, lengths),
                               torch.tensor(want, dtype=torch.float32))


def test_markov_state_dict_round_trip_restores_the_table() -> None:
    items, offsets = _csr()
    a = build_model("markov", n_items=6, max_len=4)
    a.fit_data(items, offsets, split="test")
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = build_model("markov", n_items=6, max_len=4)  # empty table of another size
    b.load_state_dict(torch.load(buf, weights_only=True), strict=True)
    seq, lengths = torch.tensor([[1, 2, 3]]), torch.tensor([3])
    torch.testing.assert_close(b.full_sort_scores(seq, lengths), a.full_sort_scores(seq, lengths))


def _reference(tmp_path: Path, capsys, name: str, src: Path, model: str) -> dict:
    data = tmp_path / "data"
    if not (data / name / "meta.json").exists():
        with pytest.raises(SystemExit) as e:
            main(["download", name, "--from-file", str(src), "--data-dir", str(data)])
        assert e.value.code in (0, None)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["train", "--dataset", name, "--model", model, "--json", "--data-dir", str(data),
              "--results-dir", str(tmp_path / "res"), "--device", "cpu"])
    assert e.value.code in (0, None)
    return json.loads(capsys.readouterr().out)["test"]


@pytest.mark.parametrize(("model", "ndcg", "recall"), [("pop", 0.0230, 0.0498),
                                                       ("markov", 0.0583, 0.1113)])
def test_reference_points_ml100k(ml100k_inter, tmp_path, capsys, model, ndcg, recall) -> None:
    test = _reference(tmp_path, capsys, "ml-100k", ml100k_inter, model)
    assert (test["ndcg@10"], test["recall@10"]) == (ndcg, recall)


@pytest.mark.parametrize(("model", "ndcg", "recall"), [("pop", 0.0420, 0.0763),
                                                       ("markov", 0.0638, 0.1085)])
def test_reference_points_musical(musical_json, tmp_path, capsys, model, ndcg, recall) -> None:
    test = _reference(tmp_path, capsys, "musical", musical_json, model)
    assert (test["ndcg@10"], test["recall@10"]) == (ndcg, recall)
