"""The retraining policy: its schedule's calendar, and the values it refuses."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from pydantic import ValidationError

from skinlesion.lifecycle.policy import RetrainingPolicy, next_retraining
from skinlesion.thresholds import Status


def test_schedules():
    last = datetime(2024, 1, 31, 3, 0)
    assert next_retraining("quarterly", last) == datetime(2024, 4, 30, 3, 0)
    assert next_retraining("weekly", last) == last + timedelta(weeks=1)
    assert next_retraining("90d", last) == last + timedelta(days=90)
    assert next_retraining("never", last) is None
    assert RetrainingPolicy().next_due(last) == datetime(2024, 4, 30, 3, 0)


@pytest.mark.parametrize("fields, message", [
    ({"schedule": "fortnightly-ish"}, "schedule must be one of"),
    ({"on_status": Status.GREEN}, "on_status must be yellow or red"),
    ({"holdout_share": 1.0}, "holdout_share"),
])
def test_bad_values_are_refused_with_the_rule(fields: dict, message: str):
    with pytest.raises(ValidationError, match=message):
        RetrainingPolicy(**fields)
