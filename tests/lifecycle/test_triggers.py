"""Retraining triggers: events fire once per incident, the schedule once per period, active
learning once enough review labels arrived; a launch refused by a running job is not retried."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from skinlesion.errors import JobConflictError
from skinlesion.lifecycle.policy import RetrainingPolicy
from skinlesion.lifecycle.triggers import TriggerRequest, check_retraining
from skinlesion.monitoring.policy import Policy
from skinlesion.monitoring.runner import run_once
from skinlesion.store import Alert, JobRecord, LabelRecord, ServingRoute, Store
from skinlesion.thresholds import Status
from tests.standins import BrightnessClassifier, save_standin


class NeuralStandin(BrightnessClassifier):
    """Only its card is read here: a neural version (the kind that is retrained)."""

    kind = "neural"


@pytest.fixture
def home(tmp_path: Path) -> dict:
    from skinlesion import registry

    models_dir = tmp_path / "models"
    card = save_standin(tmp_path / "scratch", "unused")
    registry.save_version(models_dir, NeuralStandin(), threshold=0.5, data=card.data,
                          manifest=registry.read_manifest(tmp_path / "scratch", "unused"),
                          version_id="v1")
    store = Store(tmp_path / "db.duckdb")
    store.set_route(ServingRoute(active_version="v1"), actor="setup", role="ml_lead", reason="x")
    return {"store": store, "models_dir": models_dir, "cache_dir": tmp_path / "cache"}


class FakeLauncher:
    """Records the requests it is asked to launch and answers with a queued job."""

    def __init__(self, error: Exception | None = None):
        self.requests: list[TriggerRequest] = []
        self.error = error

    def __call__(self, request: TriggerRequest) -> JobRecord:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        return JobRecord(model="v1", trigger=request.trigger, requested_by="monitor",
                         role="system")


def _policy(**retraining) -> RetrainingPolicy:
    return RetrainingPolicy(**{"schedule": "never", "review_labels": 0, **retraining})


def _alert(metric: str, status: str, at: datetime) -> Alert:
    return Alert(metric=metric, scope="24h", status=status, opened_at=at, last_seen_at=at,
                 last_event_at=at, message=f"{metric} {status}")


def _check(home: dict, policy: RetrainingPolicy, launch: FakeLauncher, now: datetime | None = None):
    return check_retraining(home["store"], home["models_dir"], policy, cache_dir=home["cache_dir"],
                            now=now, launch=launch)


def test_an_alert_fires_one_retrain_per_incident(home):
    store, launch, policy = home["store"], FakeLauncher(), _policy()
    now = datetime.now(UTC)
    alert = store.upsert_alert(_alert("recall", "yellow", now))
    [outcome] = _check(home, policy, launch)
    assert outcome.request.trigger == "event" and outcome.request.key == f"alert:{alert.id}"
    assert outcome.outcome.startswith("launched job")
    assert _check(home, policy, launch) == []  # the next monitoring run: same incident
    store.upsert_alert(alert.model_copy(update={"status": "red", "last_event": "escalated"}))
    assert _check(home, policy, launch) == []  # escalating is still the same incident
    assert len(launch.requests) == 1
    store.resolve_alert(alert.id)
    again = store.upsert_alert(_alert("recall", "red", now + timedelta(days=2)))
    [outcome] = _check(home, policy, launch)  # a new incident fires again
    assert outcome.request.key == f"alert:{again.id}" and len(launch.requests) == 2
    recorded = store.list_triggers(trigger="event")
    assert set(recorded["key"]) == {f"alert:{alert.id}", f"alert:{again.id}"}


def test_which_alerts_are_retraining_events(home):
    store, launch = home["store"], FakeLauncher()
    now = datetime.now(UTC)
    store.upsert_alert(_alert("latency_p95_ms", "red", now))  # retraining does not fix latency
    store.upsert_alert(_alert("recall", "yellow", now))
    assert _check(home, _policy(on_status=Status.RED), launch) == []  # yellow is below on_status
    drift = store.upsert_alert(_alert("drift_score", "red", now))  # red drift always fires
    [outcome] = _check(home, _policy(on_status=Status.RED), launch)
    assert outcome.request.key == f"alert:{drift.id}"


def test_drift_fires_only_at_red_under_the_default_policy(home):
    store, launch = home["store"], FakeLauncher()
    now = datetime.now(UTC)
    drift = store.upsert_alert(_alert("drift_score", "yellow", now))
    assert _check(home, _policy(on_status=Status.YELLOW), launch) == []  # yellow drift: hints only
    store.upsert_alert(drift.model_copy(update={"status": "red", "last_event": "escalated"}))
    [outcome] = _check(home, _policy(on_status=Status.YELLOW), launch)
    assert outcome.request.key == f"alert:{drift.id}" and len(launch.requests) == 1


def test_simultaneous_alerts_launch_one_job_and_a_refused_launch_is_not_retried(home):
    store = home["store"]
    now = datetime.now(UTC)
    store.upsert_alert(_alert("recall", "red", now))
    store.upsert_alert(_alert("auroc", "red", now))
    busy = FakeLauncher(JobConflictError("a retrain job for v1 is already running"))
    first, second = _check(home, _policy(), busy)
    assert first.job_id is None and "already running" in first.outcome
    assert len(busy.requests) == 2  # the second alert tried too: no job was launched for it
    assert _check(home, _policy(), busy) == [] and len(busy.requests) == 2
    store.upsert_alert(_alert("log_loss", "red", now))
    store.upsert_alert(_alert("fnr", "red", now))
    launch = FakeLauncher()
    one, other = _check(home, _policy(), launch)
    assert len(launch.requests) == 1 and other.outcome == f"covered by job {one.job_id}"


def test_the_schedule_fires_once_per_period(home):
    store, launch = home["store"], FakeLauncher()
    policy = _policy(schedule="90d")
    created = datetime.now(UTC)
    assert _check(home, policy, launch, now=created + timedelta(days=89)) == []
    [outcome] = _check(home, policy, launch, now=created + timedelta(days=91))
    assert outcome.request.trigger == "scheduled"
    assert _check(home, policy, launch, now=created + timedelta(days=92)) == []
    # a retrain of the version (here: launched by hand) restarts the period
    job = store.create_job(JobRecord(model="v1", trigger="manual", requested_by="ana",
                                     role="ml_lead"), is_live=lambda j: True)
    assert _check(home, policy, launch, now=job.created_at + timedelta(days=89)) == []
    assert len(_check(home, policy, launch, now=job.created_at + timedelta(days=91))) == 1


def test_active_learning_fires_once_enough_review_labels_arrived(home):
    store, launch = home["store"], FakeLauncher()
    policy = _policy(review_labels=3)

    def label(n: int, source: str = "review") -> None:
        store.add_labels([LabelRecord(image_sha256=f"{i + 100 * len(launch.requests):064x}",
                                      diagnosis="MEL", source=source, labelled_by="derm")
                          for i in range(n)])

    label(2)
    label(5, source="histopathology")  # late ground truth is not the review queue
    assert _check(home, policy, launch) == []
    label(1)
    [outcome] = _check(home, policy, launch)
    assert outcome.request.trigger == "active_learning" and outcome.request.details["labels"] == 3
    assert _check(home, policy, launch) == []
    assert len(launch.requests) == 1


def test_a_monitoring_run_fires_the_due_triggers_only_when_given_a_cache_folder(home):
    store = home["store"]
    # a live job of v1 (and no data to train on) makes the launch refuse, so the run's trigger is
    # settled without a process
    store.create_job(JobRecord(model="v1", trigger="manual", requested_by="ana", role="ml_lead"),
                     is_live=lambda j: True)
    store.add_labels([LabelRecord(image_sha256=f"{1:064x}", diagnosis="MEL", source="review",
                                  labelled_by="derm")])
    policy = Policy(retraining=_policy(review_labels=1))
    assert run_once(store, home["models_dir"], policy).retraining == ()
    result = run_once(store, home["models_dir"], policy, retrain_cache_dir=home["cache_dir"])
    [outcome] = result.retraining
    assert outcome.request.trigger == "active_learning" and outcome.job_id is None
    assert outcome.outcome.startswith(("not launched", "launch failed")) and "v1" in outcome.outcome
    assert run_once(store, home["models_dir"], policy,
                    retrain_cache_dir=home["cache_dir"]).retraining == ()  # once per incident
