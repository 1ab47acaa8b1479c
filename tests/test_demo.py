"""The demo's traffic simulation: clinic hours, weekly pattern, the incident's planted shift."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from PIL import Image

from skinlesion.data.images import image_stats
from skinlesion.demo import TrafficConfig, class_mix, device_shift, incident_severity, schedule
from skinlesion.schema import CLASSES

NOW = datetime(2026, 11, 24, 18, 0, tzinfo=UTC)


def test_schedule_follows_clinic_hours_and_weekdays():
    times = schedule(NOW, TrafficConfig(days=28), np.random.default_rng(0))
    assert times == sorted(times) and all(t < NOW for t in times)
    hours = np.array([t.hour for t in times])
    assert ((hours >= 7) & (hours <= 19)).all()
    weekdays = np.array([t.weekday() for t in times])
    assert (weekdays < 5).sum() > 5 * (weekdays >= 5).sum()
    assert 28 * 35 < len(times) < 28 * 70


def test_incident_ramps_up_in_the_last_week_only():
    assert incident_severity(datetime(2026, 11, 10, tzinfo=UTC), NOW, 7) == 0
    early = incident_severity(datetime(2026, 11, 18, tzinfo=UTC), NOW, 7)
    late = incident_severity(datetime(2026, 11, 24, 12, tzinfo=UTC), NOW, 7)
    assert 0.4 <= early < late <= 1.0


def test_device_shift_darkens_and_tints_blue():
    img = Image.new("RGB", (80, 60), (200, 140, 120))
    before, after = image_stats(img), image_stats(device_shift(img, 1.0))
    assert after["brightness"] < before["brightness"] - 0.1
    assert after["mean_b"] - after["mean_r"] > before["mean_b"] - before["mean_r"]
    assert device_shift(img, 0.0) is img


def test_older_mix_has_more_keratinocyte_cancers():
    calm, incident = class_mix(0.0), class_mix(1.0)
    for cls in ("BCC", "AK", "SCC"):
        assert incident[CLASSES.index(cls)] > calm[CLASSES.index(cls)]
    assert np.isclose(incident.sum(), 1.0)


def test_a_stale_demo_counts_as_not_built(tmp_path):
    from datetime import timedelta

    from skinlesion.demo import is_built, utc_now

    assert not is_built(tmp_path)
    (tmp_path / "BUILT").write_text(utc_now().isoformat())
    assert is_built(tmp_path)
    (tmp_path / "BUILT").write_text((utc_now() - timedelta(days=2)).isoformat())
    assert not is_built(tmp_path)


@pytest.mark.slow
def test_build_demo_end_to_end_small(tmp_path):
    """The whole demo at a tiny scale: versions, route, simulated traffic, labels, snapshots."""
    from skinlesion.demo import TrafficConfig, build_demo
    from skinlesion.settings import Settings
    from skinlesion.store import Store
    from skinlesion.train import TrainConfig

    settings = Settings(home=tmp_path)
    result = build_demo(settings, n_images=96, progress=False,
                        traffic=TrafficConfig(days=5, requests_per_weekday=30, incident_days=2),
                        train_config=TrainConfig(mode="head", epochs=3, width=96, height=72,
                                                 train_views=("identity",), tta=("identity",),
                                                 device="cpu"))
    store = Store(result.home / "data" / "skinlesion.duckdb")
    route = store.get_route()
    assert (route.active_version, route.fallback_version) == ("demo-model", "demo-fallback")
    logged = store.query_predictions()
    assert len(logged) == result.predictions > 0 and logged["simulated"].all()
    assert (logged["source"] == "demo").all() and result.labels > 0
    assert store.query_snapshots()["snapshot_id"].nunique() == 5
    assert store.list_snapshots()["simulated"].tolist() == [True] * 5
    alerts = store.query_alerts(include_resolved=True)
    assert not alerts.empty and all(d["simulated"] for d in alerts["details"])
    assert alerts["message"].str.startswith("[simulated] ").all()
    assert (result.home / "users.toml").is_file()
    from skinlesion.lifecycle.data import original_data_dir
    from skinlesion.registry import read_card

    card = read_card(result.home / "models" / "demo-model")  # names its data: retraining finds it
    assert original_data_dir(card) == (result.home / "dataset").resolve()
