"""The retraining policy: when retraining launches by itself and how it trains and judges the candidate.

The ``[retraining]`` table of the clinic's ``thresholds.toml`` (read with the rest of the monitoring
plan by :func:`skinlesion.monitoring.policy.load_policy`), and the calendar of its schedule.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from skinlesion.thresholds import Status, parse_duration

#: Named retraining periods, in calendar months (a duration such as ``"90d"`` is also accepted).
SCHEDULE_MONTHS: dict[str, int] = {"monthly": 1, "quarterly": 3, "semiannually": 6, "yearly": 12}
NEVER = "never"


def next_retraining(schedule: str, last: datetime) -> datetime | None:
    """When the scheduled retraining after ``last`` is due (None for ``"never"``).

    ``schedule`` is a named period (``weekly`` or one of :data:`SCHEDULE_MONTHS`, counted in
    calendar months so "quarterly" from 31 January is 30 April) or a duration (``"90d"``)."""
    if schedule == NEVER:
        return None
    if schedule == "weekly":
        return last + timedelta(weeks=1)
    if schedule in SCHEDULE_MONTHS:
        return (pd.Timestamp(last) + pd.DateOffset(months=SCHEDULE_MONTHS[schedule])).to_pydatetime()
    return last + parse_duration(schedule)


#: Metrics whose alerts at or past ``on_status`` launch retraining: model quality only. Drift
#: launches it only at red (see :func:`skinlesion.lifecycle.triggers.alert_fires`); latency and
#: volume never do, as retraining does not fix them.
RETRAIN_EVENT_METRICS: tuple[str, ...] = (
    "accuracy", "precision", "recall", "f1", "auroc", "log_loss", "fnr")


class RetrainingPolicy(BaseModel):
    """When retraining is launched and how it trains and judges the candidate.

    Triggers (checked after each monitoring run, see :mod:`skinlesion.lifecycle.triggers`): on a
    ``schedule``; on events — an alert (a status held for ``Policy.alert_after_windows`` windows)
    at or past ``on_status`` on one of ``event_metrics``, or a red drift-score alert; and on
    active learning — ``review_labels`` new labels from the review queue (0 switches it off).
    Training: ``mode`` (head: frozen backbone, fast; finetune) for ``epochs``. The gate: the
    newest ``holdout_share`` of the labelled production cases is held out of training, and the
    candidate is compared with the active model on it (and on the original test split) with a
    paired bootstrap of ``bootstrap_resamples`` resamples (seeded with ``seed``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schedule: str = "quarterly"
    on_status: Status = Status.YELLOW
    event_metrics: tuple[str, ...] = RETRAIN_EVENT_METRICS
    #: pull the uncertain cases labelled through the review queue into the training data
    include_review_queue: bool = True
    review_labels: int = Field(50, ge=0)
    mode: Literal["head", "finetune"] = "head"
    epochs: int = Field(30, ge=1)
    holdout_share: float = Field(0.3, ge=0.0, lt=1.0)
    bootstrap_resamples: int = Field(1000, ge=100)
    seed: int = 0

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in (NEVER, "weekly", *SCHEDULE_MONTHS):
            try:
                parse_duration(value)
            except ValueError:
                raise ValueError(f"schedule must be one of never, weekly, {', '.join(SCHEDULE_MONTHS)} "
                                 f"or a duration such as '90d', got {value!r}") from None
        return value

    @field_validator("on_status")
    @classmethod
    def _on_status(cls, value: Status) -> Status:
        if value not in (Status.YELLOW, Status.RED):
            raise ValueError(f"on_status must be yellow or red, got {value.value!r}")
        return value

    def next_due(self, last: datetime) -> datetime | None:
        """When the scheduled retraining after ``last`` is due (None when the schedule is never)."""
        return next_retraining(self.schedule, last)
