"""When retraining launches by itself: the schedule, events and active learning.

Checked after each monitoring run (:func:`check_retraining`, called by
:mod:`skinlesion.monitoring.runner`), each trigger retrains
the active model version and fires at most once per incident — its key is claimed in the store
before anything is launched, so two monitors cannot both launch for one incident:

- **scheduled** — the policy's ``[retraining] schedule`` (quarterly by default) has elapsed since
  the active version was created or last retrained (the newest retraining job of it that did not
  fail). Key: ``schedule:<version>:<due time>``.
- **event** — an open alert at or past ``on_status`` on one of ``event_metrics`` (model-quality
  metrics by default; the alert opens only once the status has held for ``alert_after_windows``
  windows), or a red drift-score alert (a yellow one does not fire by default).
  Key: ``alert:<alert id>``: an alert escalating from yellow to red is the same incident.
- **active_learning** — ``review_labels`` new labels from the review queue since the active version
  was created or last retrained. Key: ``active_learning:<version>:<since>``.

A trigger that fires while a job of the model is already running is recorded as covered by it
(not launched again).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from skinlesion.errors import JobConflictError, ModelNotFoundError, SkinLesionError
from skinlesion.lifecycle.jobs import submit_retrain
from skinlesion.lifecycle.policy import RetrainingPolicy
from skinlesion.lifecycle.spec import active_spec
from skinlesion.registry import read_card, resolve_version
from skinlesion.store import Alert, JobRecord, Store
from skinlesion.thresholds import SEVERITY, Status

#: the actor and role the monitor's launches are recorded under
MONITOR_ACTOR, MONITOR_ROLE = "monitor", "system"
_REVIEW_SOURCE = "review"


@dataclass(frozen=True)
class TriggerRequest:
    """A retraining trigger that is due: which, its incident ``key``, the reason in words."""

    trigger: str
    key: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TriggerOutcome:
    """What a fired trigger led to: the job it launched, or why none was."""

    request: TriggerRequest
    job_id: str | None
    outcome: str

    def describe(self) -> str:
        return f"retraining trigger {self.request.trigger} ({self.request.key}): {self.outcome}"


def alert_fires(alert: Alert, policy: RetrainingPolicy) -> bool:
    """Whether an open ``alert`` is a retraining event under ``policy`` (see module docstring)."""
    if alert.metric == "drift_score" and alert.status == Status.RED:
        return True
    return (alert.metric in policy.event_metrics
            and SEVERITY[Status(alert.status)] >= SEVERITY[policy.on_status])


def _last_retrain(store: Store, version: str, created: datetime) -> datetime:
    """When ``version`` was created or last retrained (its newest job that did not fail)."""
    jobs = [j for j in store.list_jobs(model=version) if j.status not in ("failed", "cancelled")]
    return max([created, *(j.created_at for j in jobs)])


def due_triggers(store: Store, models_dir: Path, policy: RetrainingPolicy, *,
                 now: datetime | None = None) -> list[TriggerRequest]:
    """The triggers due now for the active version (events first, then active learning, then
    the schedule); none when the active version is not a neural version in ``models_dir``."""
    now = now or datetime.now(UTC)
    version = store.get_route().active_version
    try:
        card = read_card(Path(models_dir) / resolve_version(models_dir, version))
    except ModelNotFoundError:
        return []
    if card.kind != "neural":
        return []
    due = [TriggerRequest("event", f"alert:{a.id}", f"alert {a.key} is {a.status}: {a.message}",
                          {"alert_id": a.id, "metric": a.metric, "status": a.status})
           for a in store.open_alerts() if alert_fires(a, policy)]
    since = _last_retrain(store, version, datetime.fromisoformat(card.created))
    if policy.review_labels:
        n = store.count_labels(source=_REVIEW_SOURCE, since=since)
        if n >= policy.review_labels:
            due.append(TriggerRequest(
                "active_learning", f"active_learning:{version}:{since.isoformat()}",
                f"{n} new review-queue labels since {since:%Y-%m-%d %H:%M} UTC (policy: "
                f"{policy.review_labels})", {"labels": n}))
    next_due = policy.next_due(since)
    if next_due is not None and now >= next_due:
        due.append(TriggerRequest(
            "scheduled", f"schedule:{version}:{next_due.isoformat()}",
            f"scheduled ({policy.schedule}): due {next_due:%Y-%m-%d} since {since:%Y-%m-%d}",
            {"due": next_due.isoformat()}))
    return due


def fire(store: Store, requests: list[TriggerRequest],
         launch: Callable[[TriggerRequest], JobRecord]) -> list[TriggerOutcome]:
    """Claim each request's key (skipping those claimed before) and launch a job for the first;
    the others are recorded as covered by it. Returns what happened to each newly claimed one."""
    outcomes: list[TriggerOutcome] = []
    launched: JobRecord | None = None
    for request in requests:
        if not store.claim_trigger(request.key, request.trigger, details=request.details):
            continue
        if launched is not None:
            outcome = TriggerOutcome(request, launched.id, f"covered by job {launched.id}")
        else:
            try:
                launched = launch(request)
                outcome = TriggerOutcome(request, launched.id, f"launched job {launched.id}")
            except JobConflictError as err:
                outcome = TriggerOutcome(request, None, f"not launched: {err}")
            except SkinLesionError as err:
                outcome = TriggerOutcome(request, None, f"launch failed: {err}")
        store.settle_trigger(request.key, job_id=outcome.job_id, outcome=outcome.outcome)
        outcomes.append(outcome)
    return outcomes


def check_retraining(store: Store, models_dir: Path, policy: RetrainingPolicy, *, cache_dir: Path,
                     now: datetime | None = None,
                     launch: Callable[[TriggerRequest], JobRecord] | None = None
                     ) -> list[TriggerOutcome]:
    """Fire the retraining triggers due now (see the module docstring). ``launch`` starts a job
    for a request (default: a background retraining job of the active version with the policy's
    settings, under the monitor's name)."""
    def launch_job(request: TriggerRequest) -> JobRecord:
        spec = active_spec(store, policy, models_dir=models_dir, cache_dir=cache_dir)
        return submit_retrain(store, spec, trigger=request.trigger, requested_by=MONITOR_ACTOR,
                              role=MONITOR_ROLE, reason=request.reason)

    return fire(store, due_triggers(store, models_dir, policy, now=now), launch or launch_job)
