"""Shared fixtures: every test gets its own empty cache; real data is used when present."""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch) -> Path:
    """Point STACKGAN_HOME at a fresh folder so no test touches the user's cache."""
    home = tmp_path_factory.mktemp("stackgan_home")
    monkeypatch.setenv("STACKGAN_HOME", str(home))
    monkeypatch.delenv("STACKGAN_MIRROR", raising=False)
    return home


@pytest.fixture
def shared_data() -> Path:
    """../shared/data beside the checkout; tests that need it skip cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present beside the checkout")
    return SHARED_DATA
