"""Shared fixtures: one small seeded synthetic dataset per test session (ISIC 2019 layout)."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from skinlesion.data.readers import read_dataset
from skinlesion.data.synthetic import write_synthetic_dataset


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
