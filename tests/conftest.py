"""Shared fixtures. Real data from ../shared/data is used when present, skipped otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
ML100K_INTER = SHARED_DATA / "ml-100k" / "ml-100k.inter"
MUSICAL_JSON = SHARED_DATA / "musical" / "reviews_Musical_Instruments_5.json.gz"


@pytest.fixture
def ml100k_inter() -> Path:
    if not ML100K_INTER.exists():
        pytest.skip(f"{ML100K_INTER} not present")
    return ML100K_INTER


@pytest.fixture
def musical_json() -> Path:
    if not MUSICAL_JSON.exists():
        pytest.skip(f"{MUSICAL_JSON} not present")
    return MUSICAL_JSON


@pytest.fixture
def fake_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """The data layer replaced by a synthetic frame: any --dataset name trains on 30 users
    walking an item cycle (max_len 8, dropout 0.1 as its defaults)."""
    from types import SimpleNamespace

    from helpers import synthetic_interactions

    from matrrec_cli.data.split import build_sequences, split
    from matrrec_cli.train import config, pipeline

    df = synthetic_interactions(n_users=30, max_len=20)
    monkeypatch.setattr(config, "dataset_defaults", lambda name, data_dir, prepared=True:
                        SimpleNamespace(max_len=8, dropout=0.1, source="datasets.toml"))
    monkeypatch.setattr(pipeline, "load_split", lambda cfg: split(
        build_sequences(df), max_len=cfg.max_len, objective=cfg.objective))


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch working directory for download tests: data under it, fast retries."""
    monkeypatch.setenv("MATRREC_BACKOFF_S", "0.01")
    monkeypatch.setenv("MATRREC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared dataset 'cyc' (imported from a CSV): 40 users walking an item cycle, L 10,
    dropout 0.1 as its own defaults. One per test module."""
    from helpers import import_synthetic

    return import_synthetic(tmp_path_factory.mktemp("data"), n_users=40, n_items=30,
                            max_len=25, train_len=10, dropout=0.1)
