"""`--set loss=sampled`: the logQ-corrected sampled softmax against a brute-force reference,
accidental hits masked, and the option end to end (a recorded departure; refused where a model
has a loss of its own)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import run_cli

from matrrec_cli.models.sampled_loss import SampledSoftmax


def _reference(h, w, y, neg, q, k) -> float:
    """The loss written out row by row: -log softmax of the corrected target logit."""
    total = 0.0
    for i in range(len(y)):
        def logit(item: int, row: int = i) -> float:
            return float(h[row] @ w[item]) - math.log(k * float(q[item]))
        others = [logit(int(j)) for j in neg if int(j) != int(y[i])]
        target = logit(int(y[i]))
        total += -target + math.log(sum(math.exp(v) for v in [target, *others]))
    return total / len(y)


@pytest.mark.parametrize("sampler", ["uniform", "popularity"])
def test_the_sampled_loss_is_the_corrected_softmax_over_target_and_negatives(
        sampler: str) -> None:
    g = torch.Generator().manual_seed(1)
    v, d, n, k = 12, 4, 7, 20
    h = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(v, d, generator=g, dtype=torch.float64)
    y = torch.randint(1, v, (n,), generator=g)
    counts = torch.randint(1, 9, (v,), generator=g)
    loss = SampledSoftmax.build(v, k, sampler, counts)
    torch.manual_seed(5)
    got = loss.loss(h, w, y)
    torch.manual_seed(5)
    neg = torch.multinomial(loss.q, k, replacement=True)  # the same draw
    assert (neg != 0).all()  # padding is never drawn
    assert any(int(j) in set(y.tolist()) for j in neg)  # an accidental hit happened
    assert float(got) == pytest.approx(_reference(h, w, y, neg, loss.q, k), rel=1e-12)


def test_loss_sampled_trains_is_recorded_and_refused_where_it_cannot_apply(
        fake_data, tmp_path: Path, capsys) -> None:
    common = ["--dataset", "synthetic", "--epochs", "2", "--device", "cpu", "--results-dir",
              str(tmp_path), "--set", "hidden_size=16", "--set", "inner_size=32",
              "--set", "batch_size=64"]
    assert run_cli(["train", "--model", "sasrec", *common, "--set", "loss=sampled",
                    "--set", "negatives=8", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cfg = json.loads((Path(res["run_dir"]) / "config.json").read_text())
    assert (cfg["loss"], cfg["negatives"], cfg["sampler"]) == ("sampled", 8, "uniform")
    hist = [json.loads(x) for x in (Path(res["run_dir"]) / "history.jsonl").read_text()
            .splitlines()]
    assert all(math.isfinite(h["loss"]) for h in hist)
    assert run_cli(["train", "--model", "sasrec", *common, "--json"]) == 0  # the protocol's loss
    full = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert Path(full["run_dir"]).name.split("-")[-1] != Path(res["run_dir"]).name.split("-")[-1]
    assert run_cli(["train", "--model", "bert4rec", *common, "--set", "loss=sampled"]) == 1
    assert "has a loss of its own" in capsys.readouterr().err
    assert run_cli(["train", "--model", "markov", *common[:8], "--set", "loss=sampled"]) == 1
    assert "count model" in capsys.readouterr().err
    assert run_cli(["train", "--model", "sasrec", *common, "--set", "loss=partial"]) == 2
    assert "must be full or sampled" in capsys.readouterr().err
