"""The monitoring run over consecutive windows of seeded traffic: a degraded period (labels
disagreeing with the model) turns the window red, raises one alert per off-green metric and no
duplicate, and resolves after recovery; snapshots can be queried over time; the webhook gets the
JSON; the Prometheus gauges show the values; the CLI runs once and in a loop."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from skinlesion.cli import app
from skinlesion.monitoring.alerts import WebhookNotifier
from skinlesion.monitoring.exporter import HealthExporter, render_health
from skinlesion.monitoring.policy import Policy
from skinlesion.monitoring.runner import SnapshotResult, parse_interval, run_once, window_length
from skinlesion.store import ServingRoute, Store
from skinlesion.thresholds import DEFAULT_THRESHOLDS, Status, Threshold
from tests.monitoring.traffic import reference_frame, traffic
from tests.monitoring.webhook import Receiver, webhook_receiver
from tests.standins import save_standin

T0 = datetime(2025, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
#: Label agreement per day: two good days, three degraded, one recovered.
AGREEMENT = [1.0, 1.0, 0.3, 0.3, 0.3, 1.0]
LABEL_METRICS_ALERTED = {"accuracy", "precision", "recall", "auroc", "log_loss", "fnr"}


def only_recall_policy() -> Policy:
    """The default policy with every threshold but recall's out of reach (always green)."""
    loose = {name: Threshold(metric=name, higher_is_better=t.higher_is_better,
                             green=0.0 if t.higher_is_better else 1e9,
                             red=0.0 if t.higher_is_better else 1e9)
             for name, t in DEFAULT_THRESHOLDS.items() if name != "recall"}
    return Policy(thresholds={**loose, "recall": DEFAULT_THRESHOLDS["recall"]})


@dataclass(frozen=True)
class Episode:
    """Six daily runs over the seeded traffic, in a store of their own."""

    store: Store
    results: list[SnapshotResult]
    webhook: Receiver | None = None


@pytest.fixture(scope="module")
def seeded_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store file holding the six days of traffic (seeded once, copied per episode)."""
    path = tmp_path_factory.mktemp("traffic") / "seeded.duckdb"
    store = Store(path)
    for day, agreement in enumerate(AGREEMENT):
        predictions, labels = traffic(T0 + day * DAY, n=60, seed=day, agreement=agreement)
        store.log_predictions(predictions)
        store.add_labels(labels)
    store.release()  # the kept DuckDB connection checkpoints: the file copied per episode is whole
    return path


def run_episode(seeded_db: Path, folder: Path, policy: Policy, **kwargs) -> Episode:
    shutil.copy(seeded_db, folder / "monitor.duckdb")
    store = Store(folder / "monitor.duckdb")
    return Episode(store, [run_once(store, folder / "models", policy, now=T0 + (day + 1) * DAY,
                                    **kwargs) for day in range(len(AGREEMENT))])


@pytest.fixture(scope="module")
def default_episode(seeded_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Episode:
    """The default policy; no notifier."""
    return run_episode(seeded_db, tmp_path_factory.mktemp("default"), Policy())


@pytest.fixture(scope="module")
def recall_episode(seeded_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Episode:
    """Only recall can breach; a webhook that is down (503) the day the alert opens."""
    with webhook_receiver() as hook:
        hook.fail_next = 1
        episode = run_episode(seeded_db, tmp_path_factory.mktemp("recall"), only_recall_policy(),
                              notifier=WebhookNotifier(hook.url))
    return Episode(episode.store, episode.results, hook)


def test_degraded_period_raises_one_alert_per_metric_and_resolves(default_episode: Episode) -> None:
    store, results = default_episode.store, default_episode.results
    assert [r.status for r in results] == [Status.GREEN, Status.GREEN, Status.RED, Status.RED,
                                           Status.RED, Status.GREEN]
    opened = [{c.alert.metric for c in r.changes if c.event == "opened"} for r in results]
    resolved = [{c.alert.metric for c in r.changes if c.event == "resolved"} for r in results]
    # debounced: nothing on the first red day; opened on the second; kept (no duplicate) on the third
    assert opened == [set(), set(), set(), LABEL_METRICS_ALERTED, set(), set()]
    assert resolved == [set()] * 5 + [LABEL_METRICS_ALERTED]
    assert {c.event for r in results for c in r.changes} == {"opened", "resolved"}
    assert len(results[4].open_alerts) == len(LABEL_METRICS_ALERTED)
    alerts = store.query_alerts()
    assert alerts["key"].value_counts().max() == 1  # no duplicate alert for any key
    assert set(alerts["metric"]) == LABEL_METRICS_ALERTED
    recall = alerts.set_index("metric").loc["recall"]
    assert recall["status"] == "red" and recall["key"] == "recall@24h"
    assert recall["opened_at"] == T0 + 4 * DAY and recall["last_seen_at"] == T0 + 6 * DAY
    assert recall["resolved_at"] == T0 + 6 * DAY
    assert store.open_alerts() == []
    assert "RED (" in results[3].summary() and "opened" in results[3].summary()


def test_only_the_breached_metric_alerts_exactly_once(recall_episode: Episode) -> None:
    store, results = recall_episode.store, recall_episode.results
    assert [r.status for r in results][1:] == [Status.GREEN, Status.RED, Status.RED, Status.RED,
                                               Status.GREEN]
    events = [(day, c.event, c.alert.key) for day, r in enumerate(results) for c in r.changes]
    assert events == [(3, "opened", "recall@24h"), (5, "resolved", "recall@24h")]
    assert len(store.query_alerts()) == 1
    assert results[3].changes[0].alert.message.startswith("recall red in 2 consecutive 24h windows")
    assert store.query_alerts()["message"].iloc[0].startswith("recall back to green")


def test_webhook_receives_the_alert_events(recall_episode: Episode) -> None:
    results, hook = recall_episode.results, recall_episode.webhook
    # down the day the alert opens: delivered on the next run
    assert [(r.notified.sent, r.notified.failed) for r in results] == [
        (0, 0), (0, 0), (0, 0), (0, 1), (1, 0), (1, 0)]
    assert [(b["event"], b["alert"]["key"], b["alert"]["status"]) for b in hook.bodies] == [
        ("opened", "recall@24h", "red"), ("resolved", "recall@24h", "red")]
    assert hook.bodies[0]["alert"]["details"]["playbook"]["title"].startswith("Unhealthy")
    assert hook.bodies[0]["alert"]["details"]["history"] == ["red", "red"]
    assert "webhook 1 sent" in results[4].summary()
    assert recall_episode.store.pending_alert_notifications() == []


def test_windows_of_simulated_answers_give_simulated_snapshots_and_alerts(tmp_path: Path) -> None:
    """No caller flag needed: a window holding answers marked simulated (e.g. a plain monitor run
    over the demo's store) gives a simulated snapshot, and the alert it raises is marked."""
    store = Store(tmp_path / "simulated.duckdb")
    for day, agreement in enumerate(AGREEMENT[:4]):
        predictions, labels = traffic(T0 + day * DAY, n=60, seed=day, agreement=agreement)
        store.log_predictions([p.model_copy(update={"simulated": True}) for p in predictions])
        store.add_labels(labels)
    results = [run_once(store, tmp_path / "models", only_recall_policy(), now=T0 + (day + 1) * DAY)
               for day in range(4)]
    assert [r.snapshot.simulated for r in results] == [True] * 4
    assert store.list_snapshots()["simulated"].tolist() == [True] * 4
    (change,) = results[3].changes
    assert change.event == "opened" and change.alert.details["simulated"] is True
    assert change.alert.message.startswith("[simulated] recall red in 2 consecutive 24h windows")


def test_the_caller_can_mark_a_run_simulated(tmp_path: Path) -> None:
    """The demo's replay says so explicitly: even a window without answers is marked."""
    store = Store(tmp_path / "empty.duckdb")
    assert run_once(store, tmp_path / "models", Policy(), now=T0, simulated=True).snapshot.simulated
    assert not run_once(store, tmp_path / "models", Policy(), now=T0 + DAY).snapshot.simulated
    assert store.latest_snapshot("24h").simulated is False


def test_real_traffic_is_not_marked_simulated(default_episode: Episode) -> None:
    assert not any(r.snapshot.simulated for r in default_episode.results)
    alerts = default_episode.store.query_alerts()
    assert not any(d["simulated"] for d in alerts["details"])
    assert not alerts["message"].str.contains("[simulated]", regex=False).any()


def test_snapshots_can_be_queried_over_time(default_episode: Episode) -> None:
    store, results = default_episode.store, default_episode.results
    recall = store.query_snapshots(metric="recall")
    assert list(recall["ts"]) == [T0 + (d + 1) * DAY for d in range(len(AGREEMENT))]
    assert (recall["value"].iloc[[0, 1, 5]] == 1.0).all()  # the planted good days
    assert (recall["value"].iloc[2:5] < 0.75).all()        # the planted bad days
    assert list(recall["status"]) == ["green", "green", "red", "red", "red", "green"]
    assert recall["previous_value"].iloc[2] == 1.0
    later = store.query_snapshots(T0 + 5 * DAY, T0 + 8 * DAY, window_name="24h")
    assert set(later["ts"]) == {T0 + 5 * DAY, T0 + 6 * DAY}
    assert {"volume", "label_coverage", "latency_p95_ms", "drift_score"} <= set(later["metric"])
    assert (later.loc[later["metric"] == "volume", "value"] == 60).all()
    assert list(store.list_snapshots()["status"]) == [r.status.value for r in results]
    latest = store.latest_snapshot("24h")
    assert latest.id == results[-1].snapshot.id and latest.report == results[-1].snapshot.report
    assert {m.metric: m for m in latest.metrics} == {m.metric: m for m in results[-1].snapshot.metrics}
    assert latest.report["n_predictions"] == 60
    assert latest.report["playbook"]["status"] == "green"
    assert "is not in" in latest.metric("drift_score").note


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of a Prometheus exposition: (name, sorted labels) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_gauges_render_the_latest_snapshot_and_open_alerts(recall_episode: Episode) -> None:
    red_day = recall_episode.results[3]
    gauges = samples(render_health(red_day.snapshot, red_day.open_alerts).decode())
    recall = red_day.snapshot.metric("recall").value
    assert recall < 0.75
    assert gauges[("skinlesion_health_metric", (("metric", "recall"),))] == recall
    assert gauges[("skinlesion_health_metric_status", (("metric", "recall"), ("status", "red")))] == 1
    assert gauges[("skinlesion_health_metric_status", (("metric", "recall"), ("status", "green")))] == 0
    assert gauges[("skinlesion_health_status", (("status", "red"),))] == 1
    assert gauges[("skinlesion_alerts_open", (("metric", "recall"), ("status", "red")))] == 1
    assert gauges[("skinlesion_health_snapshot_timestamp_seconds", ())] == (T0 + 4 * DAY).timestamp()
    assert {label for _, labels in gauges for label, _ in labels} <= {"metric", "status"}

    exporter = HealthExporter()
    port = exporter.serve(0)
    try:
        exporter.update(recall_episode.results[0].snapshot, [])
        served = samples(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
    finally:
        exporter.close()
    assert served[("skinlesion_health_status", (("status", "green"),))] == 1
    assert served[("skinlesion_health_metric", (("metric", "recall"),))] == 1.0
    assert not any(name == "skinlesion_alerts_open" for name, _ in served)


def test_drift_against_the_active_versions_reference(tmp_path: Path) -> None:
    """A new camera (brighter, bluer images) on day 2 drifts the image statistics: the drift score
    turns red and names them; day 1 (same distribution as the reference) stays green."""
    save_standin(tmp_path / "models", "reference", reference=reference_frame())
    store = Store(tmp_path / "monitor.duckdb")
    camera = {"brightness": 0.2, "mean_r": 0.2, "mean_g": 0.2, "mean_b": 0.3, "contrast": 0.1}
    for day, shift in enumerate([None, camera]):
        predictions, labels = traffic(T0 + day * DAY, n=60, seed=day, shift=shift)
        store.log_predictions(predictions)
        store.add_labels(labels)
    before, after = (run_once(store, tmp_path / "models", Policy(), now=T0 + (day + 1) * DAY)
                     for day in range(2))
    assert before.drift.score <= 0.10 and before.snapshot.metric("drift_score").status == "green"
    assert after.drift.score > 0.20 and after.snapshot.metric("drift_score").status == "red"
    assert set(camera) <= set(after.drift.drifted_features)
    assert after.status is Status.RED and after.report.metrics["accuracy"].status is Status.GREEN
    assert after.snapshot.metric("drift_score").previous_value == before.drift.score
    assert any("brightness" in hint for hint in after.report.playbook.hints)
    stored = store.latest_snapshot("24h").report["drift"]
    assert {f["name"] for f in stored["features"] if f["drifted"]} == set(after.drift.drifted_features)


def test_the_snapshot_judges_the_active_version_on_its_own_answers(tmp_path: Path) -> None:
    """A challenger taking A/B traffic and a fallback, both answering badly (labels disagreeing)
    on drifted images, do not degrade the snapshot of the active version it is labelled with."""
    save_standin(tmp_path / "models", "reference", reference=reference_frame())
    store = Store(tmp_path / "monitor.duckdb")
    store.set_route(ServingRoute(active_version="reference", challenger_version="v2",
                                 challenger_share=0.5, fallback_version="rules"),
                    actor="ana", role="ml_lead", reason="A/B test")
    camera = {"brightness": 0.2, "mean_r": 0.2, "mean_g": 0.2, "mean_b": 0.3, "contrast": 0.1}
    good, good_labels = traffic(T0, n=60, seed=0)
    store.log_predictions(good)
    store.add_labels(good_labels)
    for seed, version, role in [(1, "v2", "challenger"), (2, "rules", "fallback")]:
        bad, bad_labels = traffic(T0, n=60, seed=seed, agreement=0.3, model_version=version,
                                  shift=camera)
        store.log_predictions([p.model_copy(update={"model_role": role}) for p in bad])
        store.add_labels(bad_labels)
    result = run_once(store, tmp_path / "models", Policy(), now=T0 + DAY)
    assert result.snapshot.model_version == result.report.model_version == "reference"
    assert result.report.n_predictions == 60 and result.report.n_labelled == 60
    assert result.status is Status.GREEN and result.report.metrics["accuracy"].value == 1.0
    assert result.drift.details["n_current_used"] == 60 and result.drift.score <= 0.10


def test_drift_sample_is_a_repeatable_subset_of_the_window(default_episode: Episode) -> None:
    store = default_episode.store
    window = store.query_predictions(T0 + DAY, T0 + 2 * DAY)
    sample = store.sample_predictions(T0 + DAY, T0 + 2 * DAY, n=25, seed=3, include_embedding=True)
    assert len(sample) == 25 and set(sample["request_id"]) < set(window["request_id"])
    assert "embedding" in sample and "embedding" not in window
    again = store.sample_predictions(T0 + DAY, T0 + 2 * DAY, n=25, seed=3)
    assert list(again["request_id"]) == list(sample["request_id"])
    assert len(store.sample_predictions(T0 + DAY, T0 + 2 * DAY, n=1000)) == len(window) == 60


@pytest.mark.parametrize(("text", "expected"), [
    ("30s", timedelta(seconds=30)), ("15m", timedelta(minutes=15)), ("1h", timedelta(hours=1)),
    ("1d", timedelta(days=1))])
def test_parse_interval(text: str, expected: timedelta) -> None:
    assert parse_interval(text) == expected


@pytest.mark.parametrize("text", ["", "15", "0s", "5 parsecs", "-1m"])
def test_parse_interval_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="30s"):
        parse_interval(text)


def test_window_length_accepts_policy_names_and_durations() -> None:
    assert window_length(Policy(), "7d") == timedelta(days=7)
    assert window_length(Policy(), "12h") == timedelta(hours=12)
    with pytest.raises(ValueError, match="24h"):
        window_length(Policy(), "yesterday")


def test_cli_monitor_once_and_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKINLESION_HOME", str(tmp_path))
    runner = CliRunner()
    once = runner.invoke(app, ["monitor", "--once"])
    assert once.exit_code == 0, once.output
    assert "24h: UNKNOWN" in once.output and "0 open alerts" in once.output
    loop = runner.invoke(app, ["monitor", "--every", "1s", "--runs", "2", "--window", "7d"])
    assert loop.exit_code == 0, loop.output
    assert loop.output.count("7d: UNKNOWN") == 2
    both = runner.invoke(app, ["monitor", "--once", "--every", "1m"])
    assert both.exit_code == 2 and "either --once or --every" in both.output
    bad = runner.invoke(app, ["monitor", "--every", "soon"])
    assert bad.exit_code == 2 and "30s" in bad.output
    served_once = runner.invoke(app, ["monitor", "--once", "--metrics-port", "0"])
    assert served_once.exit_code == 2 and "go with --every" in served_once.output
