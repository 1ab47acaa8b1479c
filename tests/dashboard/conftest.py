"""Fixtures of the dashboard tests: seeded homes (a stand-in model version with reference answers, two
days of logged answers with labels, monitoring snapshots, an open alert) and a page runner.

The planted signal: the day before the current 24 h window is healthy (every label agrees with the
model's call); in the current window of the ``bad_home`` 45% of the labels contradict the call, so
recall, accuracy and AUROC fall into red. The ``good_home`` keeps every label agreeing. Both hold a
few failed API requests in the current window (error rate 4 of 44 API requests)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from skinlesion import registry
from skinlesion.auth import User, add_user
from skinlesion.monitoring.policy import load_policy
from skinlesion.monitoring.runner import run_once
from skinlesion.store import Alert, FailureRecord, Store
from tests.monitoring.traffic import reference_frame, traffic
from tests.standins import STANDIN_KIND, STANDIN_PATH, BrightnessClassifier

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboard"
PASSWORD = "correct horse battery"
#: answers per day in each seeded window (above the policy's 30 labels minimum)
PER_DAY = 80

if str(DASHBOARD) not in sys.path:  # the pages import `components` as `streamlit run` allows
    sys.path.insert(0, str(DASHBOARD))


def _save_version(models_dir: Path, version_id: str, data_name: str) -> None:
    manifest = registry.build_manifest(
        pd.DataFrame({"image": ["a"], "lesion_id": ["a"], "diagnosis": ["MEL"]}),
        pd.Series(["train"]), pd.Series(["0" * 64]))
    registry.save_version(models_dir, BrightnessClassifier(), threshold=0.5,
                          data=registry.data_info(manifest, name=data_name), manifest=manifest,
                          version_id=version_id, reference=reference_frame(n=200))


def _seed(home: Path, *, agreement: float, data_name: str, brightness_shift: float = 0.0,
          snapshots: bool = True, labels: bool = True) -> Path:
    """A home with users, a model version ``reference`` and two days of answers, labelled unless
    ``labels`` is False; with ``snapshots`` also two monitoring runs (one per day) and an open
    alert."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    for name, role in (("ops", "viewer"), ("derm", "clinician"), ("lead", "ml_lead")):
        add_user(home / "users.toml", name, role, PASSWORD)
    _save_version(home / "models", "reference", data_name)
    store = Store(home / "data" / "skinlesion.duckdb")
    day = timedelta(hours=22)
    before, before_labels = traffic(now - timedelta(hours=47), n=PER_DAY, seed=1, span=day)
    current, current_labels = traffic(now - timedelta(hours=23), n=PER_DAY, seed=2, span=day,
                                      agreement=agreement)
    # a brighter camera (planted input drift), and some answers from the dashboard and batch jobs
    # (for the by-source views)
    current = [p.model_copy(update={"brightness": p.brightness + brightness_shift,
                                    "source": ("api", "dashboard", "api", "batch")[i % 4]})
               for i, p in enumerate(current)]
    store.log_predictions([*before, *current])
    if labels:
        store.add_labels([*before_labels, *current_labels])
    # API requests of the current window answered with an error: 4 count in the error rate (40 API
    # answers: 4 of 44 requests), the one without a valid key does not
    for hours, status, kind, version in ((2, 422, "rejected", None), (3, 422, "rejected", None),
                                         (4, 413, "rejected", None), (5, 500, "error", "reference"),
                                         (6, 401, "unauthorized", None)):
        store.log_failure(FailureRecord(ts=now - timedelta(hours=hours), http_status=status, kind=kind,
                                        model_version=version))
    if not snapshots:
        return home
    policy = load_policy(home / "thresholds.toml")
    run_once(store, home / "models", policy, now=now - timedelta(hours=24))
    result = run_once(store, home / "models", policy, now=now)
    if not result.open_alerts:
        store.upsert_alert(Alert(metric="recall", scope="24h", status="red", opened_at=now,
                                 last_seen_at=now, last_event_at=now,
                                 message="recall 0.41 — red (green ≥ 0.85)"))
    return home


@pytest.fixture(scope="session")
def _standin_kind() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(registry.CLASSIFIER_KINDS, STANDIN_KIND, STANDIN_PATH)
        yield


@pytest.fixture(scope="session")
def bad_home_dir(tmp_path_factory: pytest.TempPathFactory, _standin_kind: None) -> Path:
    return _seed(tmp_path_factory.mktemp("bad_home"), agreement=0.55, data_name="synthetic demo data",
                 brightness_shift=0.15)


@pytest.fixture(scope="session")
def good_home_dir(tmp_path_factory: pytest.TempPathFactory, _standin_kind: None) -> Path:
    return _seed(tmp_path_factory.mktemp("good_home"), agreement=1.0, data_name="ISIC 2019 training",
                 snapshots=False)


@pytest.fixture(scope="session")
def unlabelled_home_dir(tmp_path_factory: pytest.TempPathFactory, _standin_kind: None) -> Path:
    return _seed(tmp_path_factory.mktemp("unlabelled_home"), agreement=1.0,
                 data_name="ISIC 2019 training", snapshots=False, labels=False)


def _use(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SKINLESION_HOME", str(home))
    monkeypatch.setitem(registry.CLASSIFIER_KINDS, STANDIN_KIND, STANDIN_PATH)
    # cached results are keyed on the database path: pages of one seeded home may share them
    return home


@pytest.fixture
def bad_home(bad_home_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """SKINLESION_HOME set to the seeded home whose current window is bad."""
    return _use(bad_home_dir, monkeypatch)


@pytest.fixture
def good_home(good_home_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """SKINLESION_HOME set to the seeded home whose current window is healthy."""
    return _use(good_home_dir, monkeypatch)


@pytest.fixture
def unlabelled_home(unlabelled_home_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """SKINLESION_HOME set to a seeded home whose answers have no label yet."""
    return _use(unlabelled_home_dir, monkeypatch)


@pytest.fixture
def run_page() -> Callable[..., AppTest]:
    """Run a page of dashboard/pages signed in as a user of ``role`` (the sign-in form is tested
    on its own); returns the finished AppTest."""

    def run(page: str, role: str = "viewer", timeout: float = 60) -> AppTest:
        at = AppTest.from_file(str(DASHBOARD / "views" / f"{page}.py"), default_timeout=timeout)
        at.session_state["skinlesion_user"] = User(name=f"test-{role}", role=role)
        return at.run()

    return run
