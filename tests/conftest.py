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
