"""Shared fixtures: one small seeded synthetic dataset per test session (ISIC 2019 layout)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from skinlesion.data.readers import read_dataset
from skinlesion.data.synthetic import write_synthetic_dataset
from skinlesion.store import local_server


@pytest.fixture(autouse=True)
def _keep_main_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """Put ``sys.modules["__main__"]`` back after each test: Streamlit's AppTest installs the page it
    runs there and leaves it, and a later test that spawns processes (multiprocessing re-imports
    ``__main__`` in the child) would then run a dashboard page instead."""
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 synthetic images (96x72, every class with at least 3 lesions) written once per session.
    Read-only: copy it (or write your own) before changing anything."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("synthetic") / "isic", n=64, seed=0,
                                   width=96)


@pytest.fixture(scope="session")
def synthetic_df(synthetic_dir: Path) -> pd.DataFrame:
    """The dataset table of :func:`synthetic_dir` (shared: use ``.copy()`` before modifying)."""
    return read_dataset(synthetic_dir)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[local_server.Server]:
    """A real PostgreSQL server for the session (skipped, saying why, where none can start)."""
    reason = local_server.unavailable_reason()
    if reason:
        pytest.skip(reason)
    with local_server.running_server() as server:
        yield server


@pytest.fixture(params=["duckdb", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty store's URL on each backend: a DuckDB file, or a fresh PostgreSQL database."""
    if request.param == "duckdb":
        yield f"duckdb://{tmp_path / 'db' / 'skinlesion.duckdb'}"
        return
    server = request.getfixturevalue("postgres_server")
    with server.database() as url:
        yield url
