"""Shared fixtures. Every test gets its own data folder and warehouse file (``STAFF_DATA_DIR``).

Per-API fixtures live in ``tests/fixtures_*.py`` (one module per stand-in) and are registered here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.fixtures_eduv", "tests.fixtures_edfi", "tests.fixtures_linkit", "tests.fixtures_sis"]


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private data folder: warehouse, inbox, archive, landing and journals all live under it."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("STAFF_DATA_DIR", str(root))
    monkeypatch.delenv("STAFF_WAREHOUSE", raising=False)
    monkeypatch.setenv("STAFF_WAREHOUSE_WAIT", "20")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    return root
