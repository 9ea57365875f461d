from __future__ import annotations

import pytest
from data_test_utils import SHARED


@pytest.fixture(scope="session")
def pneumoniamnist_npz():
    """The shared PneumoniaMNIST npz (skips when the shared data is missing)."""
    path = SHARED / "pneumoniamnist" / "pneumoniamnist_trainval.npz"
    if not path.exists():
        pytest.skip("shared PneumoniaMNIST npz not available")
    return path


@pytest.fixture(scope="session")
def npz_cache(tmp_path_factory):
    """One export cache for the whole session, so the 4 406 PneumoniaMNIST PNGs are written once."""
    return tmp_path_factory.mktemp("npz_cache")
