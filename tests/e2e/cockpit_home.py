"""What the browser tests (test_browser.py, test_cockpit.py) share: the ``browser`` marks (slow,
skipped saying why where Chromium or its driver is missing), dashboard/screenshots.py (the server
and the browser), and a small seeded home for the dashboard to serve.

The home: users (one password), a version ``reference`` (a stand-in classifier with reference answers
for drift), a labelled day before the current 24 h window, a current day labelled with the given
``agreement`` or not labelled at all, and an open red recall alert."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from skinlesion import registry
from skinlesion.auth import add_user
from skinlesion.store import Alert, Store
from tests.monitoring.traffic import reference_frame, traffic
from tests.standins import BrightnessClassifier

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "dashboard") not in sys.path:  # dashboard/ is a folder of scripts, not a package
    sys.path.insert(0, str(ROOT / "dashboard"))

import screenshots  # noqa: E402  (needs the path above)

MISSING = screenshots.browser_missing()
#: the marks of every browser test module (``pytestmark = cockpit_home.MARKS``)
MARKS = [pytest.mark.slow, pytest.mark.browser,
         pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]
PASSWORD = "correct horse battery"
#: answers per day in each seeded window (above the policy's 30 labels minimum)
PER_DAY = 80
#: seconds a page may take: the machine may be busy (training runs have priority)
TIMEOUT = 180.0


def seed_home(home: Path, users: Mapping[str, str], *, agreement: float | None) -> Path:
    """Write the home (see the module doc) at ``home``: ``users`` maps names to roles; the current
    day's labels agree with the model's call in a share ``agreement`` of cases (None: no labels
    yet)."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    for name, role in users.items():
        add_user(home / "users.toml", name, role, PASSWORD)
    manifest = registry.build_manifest(
        pd.DataFrame({"image": ["a"], "lesion_id": ["a"], "diagnosis": ["MEL"]}),
        pd.Series(["train"]), pd.Series(["0" * 64]))
    registry.save_version(home / "models", BrightnessClassifier(), threshold=0.5,
                          data=registry.data_info(manifest, name="ISIC 2019 training"),
                          manifest=manifest, version_id="reference",
                          reference=reference_frame(n=200))
    day = timedelta(hours=22)
    before, before_labels = traffic(now - timedelta(hours=47), n=PER_DAY, seed=1, span=day)
    current, current_labels = traffic(now - timedelta(hours=23), n=PER_DAY, seed=2, span=day,
                                      agreement=1.0 if agreement is None else agreement)
    store = Store(home / "data" / "skinlesion.duckdb")
    store.log_predictions([*before, *current])
    store.add_labels([*before_labels, *(current_labels if agreement is not None else [])])
    store.upsert_alert(Alert(metric="recall", scope="24h", status="red", opened_at=now,
                             last_seen_at=now, last_event_at=now,
                             message="recall 0.41 — red (green ≥ 0.85)"))
    return home


def body_text(driver: screenshots.WebDriver) -> str:
    """What the page shows, as text."""
    return driver.find_element(screenshots.By.TAG_NAME, "body").text
