"""A small, fresh home for the tests of the clinic and governance pages (Predict, Models, Review &
labels, Alerts & audit), which change the store: stand-in versions ``v1`` (active before), ``v2``
(active now) and ``rules`` (the fallback), an audited route history, and answers whose images were
retained, one of them uncertain (p_malignant at the threshold) and one confident."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from skinlesion import registry
from skinlesion.auth import User
from skinlesion.data.images import bytes_sha256
from skinlesion.predict import Predictor
from skinlesion.schema import Metadata
from skinlesion.serving import prediction_record
from skinlesion.store import Alert, ServingRoute, Store
from tests.standins import STANDIN_KIND, STANDIN_PATH, save_standin

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboard"
#: the Predict page's choice of a case from the review queue
QUEUE_LABEL = "A case from the review queue"
if str(DASHBOARD) not in sys.path:  # the pages import `components` as `streamlit run` allows
    sys.path.insert(0, str(DASHBOARD))


def png(grey: int, size: tuple[int, int] = (96, 72)) -> bytes:
    """A noisy PNG of one grey level (the stand-in answers p(MEL) = darkness)."""
    rng = np.random.default_rng(grey)
    pixels = np.full((size[1], size[0], 3), grey, dtype=np.uint8)
    pixels = np.clip(pixels.astype(int) + rng.integers(-8, 9, pixels.shape), 0, 255).astype(np.uint8)
    out = BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def seed(home: Path) -> dict[str, str]:
    """Write the home; returns the request ids of the ``uncertain`` and ``confident`` answers."""
    models = home / "models"
    for vid in ("v1", "v2", "rules"):
        save_standin(models, vid)
    store = Store(home / "data" / "skinlesion.duckdb")
    store.set_route(ServingRoute(active_version="v1", fallback_version="rules"), actor="setup",
                    role="ml_lead", reason="first release")
    store.set_route(ServingRoute(active_version="v2", fallback_version="rules"), actor="setup",
                    role="ml_lead", reason="promote v2")
    retained = home / "data" / "images"
    retained.mkdir(parents=True)
    predictor = Predictor.from_registry("v2", models)
    ids = {}
    now = datetime.now(UTC)
    # grey 128 -> p_malignant ~0.5 = the threshold (uncertain); grey 250 -> p ~0.02 (confident)
    for i, (name, grey) in enumerate((("uncertain", 128), ("confident", 250))):
        content = png(grey)
        path = retained / f"{bytes_sha256(content)}.png"
        path.write_bytes(content)
        meta = Metadata.from_raw(60, "female", "lower extremity")
        record = prediction_record(
            predictor.predict(content, meta), source="api", metadata=meta, image_path=str(path), ts=now - timedelta(hours=1 + i))
        store.log_predictions([record])
        ids[name] = record.request_id
    store.upsert_alert(Alert(metric="recall", scope="24h", status="red", opened_at=now,
                             last_seen_at=now, last_event_at=now, message="recall 0.41 — red"))
    past = now - timedelta(days=2)
    store.upsert_alert(Alert(metric="drift_share", scope="24h", status="yellow", opened_at=past,
                             last_seen_at=past, last_event_at=past + timedelta(hours=3),
                             resolved_at=past + timedelta(hours=3), last_event="resolved",
                             message="drift share 0.15 — yellow"))
    return ids


@pytest.fixture
def clinic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """A fresh seeded home as SKINLESION_HOME: ``home``, ``store`` and the seeded request ids."""
    monkeypatch.setitem(registry.CLASSIFIER_KINDS, STANDIN_KIND, STANDIN_PATH)
    home = tmp_path / "home"
    ids = seed(home)
    monkeypatch.setenv("SKINLESION_HOME", str(home))
    monkeypatch.setenv("SKINLESION_THRESHOLDS_FILE", str(DASHBOARD.parent / "thresholds.toml"))
    st.cache_data.clear()
    st.cache_resource.clear()
    return {"home": home, "store": Store(home / "data" / "skinlesion.duckdb"), **ids}


def page(name: str, role: str, *, user: str | None = None, timeout: float = 60) -> AppTest:
    """The page ``dashboard/views/<name>.py`` run once, signed in with ``role``."""
    at = AppTest.from_file(str(DASHBOARD / "views" / f"{name}.py"), default_timeout=timeout)
    at.session_state["skinlesion_user"] = User(name=user or f"test-{role}", role=role)
    return at.run()


def assert_clean(at: AppTest) -> None:
    """The run raised nothing and showed no error box."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def frame(at: AppTest, index: int = 0) -> pd.DataFrame:
    return at.dataframe[index].value
