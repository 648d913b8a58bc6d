"""k-core, id remap, ordering, readers, registry validation and stats on real ml-100k."""

from __future__ import annotations

from pathlib import Path

import data_dumps as dumps
import numpy as np
import pandas as pd
import pytest

from matrrec_cli.data import registry
from matrrec_cli.data.prepared import load_interactions, load_meta
from matrrec_cli.data.preprocess import kcore_mask, prepare, preprocess
from matrrec_cli.data.readers import read_raw
from matrrec_cli.data.stats import dataset_stats
from matrrec_cli.errors import MatrrecError


def brute_kcore(users, items, k_user, k_item) -> set[int]:
    """Remove one row of any single under-threshold node at a time until none is left."""
    alive = set(range(len(users)))
    while True:
        uc = pd.Series([users[r] for r in alive]).value_counts().to_dict()
        ic = pd.Series([items[r] for r in alive]).value_counts().to_dict()
        bad = next((r for r in sorted(alive)
                    if uc[users[r]] < k_user or ic[items[r]] < k_item), None)
        if bad is None:
            return alive
        node_is_user = uc[users[bad]] < k_user
        alive = {r for r in alive
                 if not ((users[r] == users[bad]) if node_is_user else (items[r] == items[bad]))}


@pytest.mark.parametrize("seed", range(6))
def test_kcore_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 400))
    users = rng.integers(0, int(rng.integers(5, 40)), n)
    items = rng.integers(0, int(rng.integers(5, 40)), n)
    k_user, k_item = int(rng.integers(1, 7)), int(rng.integers(1, 7))
    got = set(np.flatnonzero(kcore_mask(users, items, min_user=k_user, min_item=k_item)).tolist())
    assert got == brute_kcore(users, items, k_user, k_item)


def _raw(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user", "item", "timestamp"]).astype(
        {"user": str, "item": str, "timestamp": "int64"})


def test_remap_first_appearance_and_sort_with_tie_by_row():
    # user b appears first; ties at t=5 for b keep file order (x before y)
    rows = [("b", "y", 9), ("a", "x", 3), ("b", "x", 5), ("b", "y", 5), ("a", "z", 1)]
    df, users, items = preprocess(_raw(rows), min_user=1, min_item=1)
    assert users == ["b", "a"]
    assert items == ["y", "x", "z"]
    assert df.values.tolist() == [[1, 2, 5], [1, 1, 5], [1, 1, 9], [2, 3, 1], [2, 2, 3]]
    assert df.dtypes.tolist() == [np.int32, np.int32, np.int64]


def test_recbole_order_uses_float32_time():
    # 1e9 and 1e9+20 are one float32 value (64-s steps): RecBole keeps file order, exact does not
    rows = [("u", "late", 1_000_000_020), ("u", "early", 1_000_000_000)]
    exact, _, _ = preprocess(_raw(rows), min_user=1, min_item=1)
    rec, _, _ = preprocess(_raw(rows), min_user=1, min_item=1, timestamp_order="recbole")
    assert exact["item"].tolist() == [2, 1]
    assert rec["item"].tolist() == [1, 2]


def test_all_readers_agree(tmp_path):
    rows = dumps.interactions(seed=3, n_users=100, n_items=60, n=700)
    files = {"ml1m-zip": dumps.ml1m_zip(rows), "ml100k-zip": dumps.ml100k_zip(rows),
             "inter": dumps.inter(rows), "amazon-json": dumps.amazon_gz(rows)}
    frames = []
    for fmt, body in files.items():
        path = tmp_path / (fmt + (".json.gz" if fmt == "amazon-json" else ".bin"))
        path.write_bytes(body)
        frames.append(preprocess(read_raw(path, fmt))[0])
    for other in frames[1:]:
        pd.testing.assert_frame_equal(frames[0], other)
    u, i, _ = zip(*rows, strict=True)
    assert 0 < len(frames[0]) == len(brute_kcore(u, i, 5, 5)) < len(rows)


def _write_registry(tmp_path: Path, text: str, monkeypatch) -> None:
    path = tmp_path / "datasets.toml"
    path.write_text(text)
    monkeypatch.setenv("MATRREC_DATASETS_TOML", str(path))


GOOD = ('[d]\ntitle = "d"\nkcore = { user = 5, item = 5 }\n'
        'training = { max_len = 50, dropout = 0.4 }\n'
        '[[d.sources]]\nkind = "url"\nurl = "http://x/f"\nfile = "f"\nformat = "inter"\n')


def test_registry_unknown_key_named(tmp_path, monkeypatch):
    _write_registry(tmp_path, GOOD.replace('kind = "url"', 'kind = "url"\nmirror = 1'),
                    monkeypatch)
    with pytest.raises(MatrrecError, match=r"unknown key: d\.sources\.0\.mirror"):
        registry.get_dataset("d")


def test_registry_missing_field_named(tmp_path, monkeypatch):
    _write_registry(tmp_path, GOOD.replace("max_len = 50, ", ""), monkeypatch)
    with pytest.raises(MatrrecError, match=r"field required: d\.training\.max_len"):
        registry.dataset_names()


def test_shipped_registry_and_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv("MATRREC_DATASETS_TOML", raising=False)
    assert set(registry.dataset_names()) == {"ml-100k", "ml-1m", "musical", "office", "health",
                                             "electronics"}
    assert registry.training_defaults("ml-1m") == registry.TrainingDefaults(200, 0.2)
    assert registry.get_dataset("ml-1m").training.paper_dropout == 0.1
    assert registry.training_defaults("musical") == registry.TrainingDefaults(50, 0.4)
    for name in registry.dataset_names():
        for src in registry.get_dataset(name).sources:  # never the 2018 files (protocol §1.2)
            assert src.kind != "url" or "/reviews_" in src.url or "movielens" in src.url
    assert registry.training_defaults("other", tmp_path) == registry.GENERIC_DEFAULTS
    (tmp_path / "other").mkdir()
    (tmp_path / "other/meta.json").write_text('{"training": {"max_len": 7, "dropout": 0.1}}')
    assert registry.training_defaults("other", tmp_path) == registry.TrainingDefaults(7, 0.1)


def test_real_ml100k_stats(tmp_path, ml100k_inter, monkeypatch):
    monkeypatch.delenv("MATRREC_DATASETS_TOML", raising=False)
    spec = registry.get_dataset("ml-100k")
    src = next(s for s in spec.sources if s.kind == "pypi-wheel")
    prepare(spec, src, ml100k_inter, tmp_path)
    row = dataset_stats("ml-100k", tmp_path)
    assert (row["users"], row["items"], row["inter"]) == (943, 1349, 99287)
    df = load_interactions("ml-100k", tmp_path)
    assert df["user"].is_monotonic_increasing
    assert (df.groupby("user")["timestamp"].diff().dropna() >= 0).all()
    assert load_meta("ml-100k", tmp_path)["sources"][0]["sha256"] == src.sha256
    raw = pd.read_csv(ml100k_inter, sep="\t")
    assert str(raw.iloc[0, 0]) == pd.read_parquet(tmp_path / "ml-100k/user_map.parquet")["token"][0]


@pytest.mark.slow
def test_wheel_member_fetched_with_pip(tmp_path):
    """Needs the package index (pip download recbole==1.2.1)."""
    from matrrec_cli.data.pypi import fetch_wheel_member

    spec = registry.get_dataset("ml-100k")
    src = next(s for s in spec.sources if s.kind == "pypi-wheel")
    dest = tmp_path / src.file
    fetch_wheel_member(src, dest)
    assert dest.stat().st_size == 1979230


def test_prepare_over_an_existing_dataset_swaps_only_on_success(tmp_path, monkeypatch):
    """The library path too: a failing re-prepare leaves the old directory byte for byte, a
    successful one replaces it and keeps raw/; no staging directory is left either way."""
    _write_registry(tmp_path, GOOD, monkeypatch)
    spec = registry.get_dataset("d")
    src = spec.sources[0]
    good, bad = tmp_path / "good.inter", tmp_path / "bad.inter"
    good.write_bytes(dumps.inter(dumps.interactions()))
    bad.write_bytes(dumps.inter([(1, 1, 5), (2, 2, 6), (3, 3, 7)]))
    data = tmp_path / "data"
    prepare(spec, src, good, data)
    (data / "d/raw").mkdir()
    (data / "d/raw/f").write_bytes(good.read_bytes())

    def files() -> dict[str, bytes]:
        return {str(p.relative_to(data)): p.read_bytes() for p in sorted(data.rglob("*"))
                if p.is_file() and p.parent.name != ".locks"}
    before = files()
    with pytest.raises(MatrrecError, match="no interactions left"):
        prepare(spec, src, bad, data)
    assert files() == before
    prepare(spec, src, good, data, timestamp_order="recbole")
    assert load_meta("d", data)["filter"]["timestamp_order"] == "recbole"
    assert (data / "d/raw/f").read_bytes() == good.read_bytes()
    assert sorted(p.name for p in data.iterdir()) == [".locks", "d"]
