"""The cockpit in a real browser: ``streamlit run dashboard/app.py`` on a free port over a small
seeded home, headless Chromium (dashboard/screenshots.py) signs in through the form, loads Overview,
whose tiles must show the planted statuses, and Predict; screenshots are saved as
``bench/e2e-overview.png`` and ``bench/e2e-predict.png``.

The planted signal (as in tests/dashboard/conftest.py): the day before the current 24 h window is
healthy; in the current window 45% of the labels contradict the model's call, so recall and the
false-negative rate are red while the service itself (latency) stays green.

Slow and marked ``browser``: ``make test-browser``, and the second half of ``make test`` (CI).
Skipped, saying why, where Chromium or its driver is missing."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

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
pytestmark = [pytest.mark.slow, pytest.mark.browser,
              pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]

BENCH = ROOT / "bench"
USER, PASSWORD = "lead", "correct horse battery"
#: answers per day in each seeded window (above the policy's 30 labels minimum)
PER_DAY = 80
#: seconds a page may take: the machine may be busy (training runs have priority)
PAGE_TIMEOUT_S = 180.0


def seed_home(home: Path) -> Path:
    """A home with an ML lead, a version ``reference`` (with reference answers for drift), two days
    of labelled answers (the current one bad, see the module doc) and an open recall alert."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    add_user(home / "users.toml", USER, "ml_lead", PASSWORD)
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
                                      agreement=0.55)
    store = Store(home / "data" / "skinlesion.duckdb")
    store.log_predictions([*before, *current])
    store.add_labels([*before_labels, *current_labels])
    store.upsert_alert(Alert(metric="recall", scope="24h", status="red", opened_at=now,
                             last_seen_at=now, last_event_at=now,
                             message="recall 0.41 — red (green ≥ 0.85)"))
    return home


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[screenshots.WebDriver]:
    """Headless Chromium signed in as the ML lead to a dashboard served over the seeded home."""
    tmp = tmp_path_factory.mktemp("e2e")
    home = seed_home(tmp / "home")
    with screenshots.serve(home, log=tmp / "streamlit.log") as server, \
            screenshots.chromium() as driver:
        screenshots.sign_in(driver, server.url, USER, PASSWORD, PAGE_TIMEOUT_S)
        yield driver


def assert_screenshot(path: Path) -> None:
    """``path`` is a PNG of the browser's whole viewport."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == screenshots.WINDOW


def test_overview_shows_the_planted_statuses(browser: screenshots.WebDriver):
    assert screenshots.nav_titles(browser) == [spec.title for spec in screenshots.PAGES]
    screenshots.open_page(browser, screenshots.page_spec("overview"), PAGE_TIMEOUT_S)
    badges = screenshots.tile_badges(browser)
    assert badges["Recall (sensitivity)"] == "RED"
    assert badges["False-negative rate"] == "RED"
    assert badges["Latency p95"] == "GREEN"  # the planted fault is in the labels, not the service
    # the eleven metric tiles, and the service tiles: uncertain answers, error rate, OOD share
    assert len(badges) == 14 and "Error rate (failed requests)" in badges
    text = browser.find_element(screenshots.By.TAG_NAME, "body").text
    assert "RED — Unhealthy — act now" in text
    assert "Open alerts (1)" in text, text
    assert_screenshot(screenshots.screenshot(browser, BENCH / "e2e-overview.png"))


def test_predict_page_offers_an_upload(browser: screenshots.WebDriver):
    screenshots.open_page(browser, screenshots.page_spec("predict"), PAGE_TIMEOUT_S)
    text = browser.find_element(screenshots.By.TAG_NAME, "body").text
    assert "Dermoscopy image (JPEG or PNG)" in text
    assert "Active model reference" in text
    assert_screenshot(screenshots.screenshot(browser, BENCH / "e2e-predict.png"))
