"""The demo's traffic simulation: clinic hours, weekly pattern, the incident's planted shift."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from skinlesion.data.images import image_stats
from skinlesion.demo import TrafficConfig, class_mix, device_shift, incident_severity, schedule
from skinlesion.schema import CLASSES

NOW = datetime(2026, 11, 24, 18, 0, tzinfo=UTC)


def test_schedule_follows_clinic_hours_and_weekdays():
    config = TrafficConfig(days=28)
    times = schedule(NOW, config, np.random.default_rng(0))
    assert times == sorted(times) and all(t < NOW for t in times)
    hours = np.array([t.hour for t in times])
    assert ((hours >= 7) & (hours <= 19)).all()
    weekdays = np.array([t.weekday() for t in times])
    assert (weekdays < 5).sum() > 5 * (weekdays >= 5).sum()
    weekday_dates = {t.date() for t in times if t.weekday() < 5}
    per_weekday = (weekdays < 5).sum() / len(weekday_dates)
    assert 0.85 * config.requests_per_weekday < per_weekday < 1.15 * config.requests_per_weekday


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
    from skinlesion.lifecycle.data import find_original_dir
    from skinlesion.registry import read_card

    card = read_card(result.home / "models" / "demo-model")  # names its data: retraining finds it
    assert find_original_dir(card) == (result.home / "dataset").resolve()


def test_severity_moves_in_steps():
    from skinlesion.demo import SEVERITY_STEP

    levels = {incident_severity(NOW - timedelta(hours=h), NOW, 7) for h in range(7 * 24)}
    assert all(abs(v / SEVERITY_STEP - round(v / SEVERITY_STEP)) < 1e-9 for v in levels)
    assert 0.4 in levels and 1.0 in levels and len(levels) <= 7


def test_repeated_cases_are_answered_once_and_logged_as_if_asked(tmp_path, monkeypatch):
    """Four real image files drawn over a week of traffic: the model is asked once per file,
    device strength and metadata, and every logged answer is what the model says of that case."""
    from io import BytesIO

    from skinlesion import registry
    from skinlesion.demo import case_key, dataset_cases, shifted, simulate_traffic
    from skinlesion.predict import Predictor
    from skinlesion.schema import Metadata
    from skinlesion.store import Store
    from tests.standins import STANDIN_KIND, STANDIN_PATH, save_standin

    monkeypatch.setitem(registry.CLASSIFIER_KINDS, STANDIN_KIND, STANDIN_PATH)
    save_standin(tmp_path / "models", "v1")
    predictor = Predictor.from_registry("v1", tmp_path / "models")
    paths = []
    for grey in (60, 110, 160, 210):
        out = BytesIO()
        Image.new("RGB", (64, 48), (grey, grey - 20, grey - 40)).save(out, format="PNG")
        paths.append(tmp_path / f"{grey}.png")
        paths[-1].write_bytes(out.getvalue())
    df = pd.DataFrame({"path": [str(p) for p in paths], "diagnosis": ["MEL", "NV", "NV", "BCC"],
                       "age_approx": [50.0] * 4, "sex": ["male"] * 4,
                       "anatom_site_general": ["head/neck"] * 4})
    store = Store(tmp_path / "demo.duckdb")
    config = TrafficConfig(days=7, requests_per_weekday=40, incident_days=2)
    counts = simulate_traffic(store, predictor, NOW, config, cases=dataset_cases(df),
                              progress=False)
    assert counts["predictions"] > 150
    # healthy days: 4 files; the incident: 4 files x <= 7 strengths x the ages it draws
    assert counts["asked"] < counts["predictions"] / 3
    logged = store.query_predictions()
    assert len(logged) == counts["predictions"] and logged["request_id"].is_unique
    for _, row in logged.sample(12, random_state=0).iterrows():
        sev = incident_severity(row["ts"].to_pydatetime(), NOW, config.incident_days)
        meta = Metadata.from_raw(row["age_approx"], row["sex"], row["anatom_site_general"])
        source = next(p.read_bytes() for p in paths
                      if case_key(p.read_bytes(), sev, meta) is not None
                      and predictor.predict_batch([shifted(p.read_bytes(), sev)], [meta])[0]
                      .image_sha256 == row["image_sha256"])
        fresh = predictor.predict_batch([shifted(source, sev)], [meta])[0]
        assert fresh.p_malignant == pytest.approx(row["p_malignant"])
        assert fresh.decision == row["decision"]
    assert case_key(Image.new("RGB", (4, 4)), 0.0, meta) is None  # a fresh image: always asked
