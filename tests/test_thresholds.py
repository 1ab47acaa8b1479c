"""Thresholds: band validation, status boundaries from the DESIGN.md table, worst-of, durations."""

from __future__ import annotations

from datetime import timedelta

import pytest

from skinlesion.thresholds import DEFAULT_THRESHOLDS, Status, Threshold, parse_duration, status, worst


@pytest.mark.parametrize("higher, green, red", [(True, 0.70, 0.80), (False, 0.50, 0.30)])
def test_yellow_band_past_red_is_an_error_naming_the_metric(higher: bool, green: float, red: float):
    with pytest.raises(ValueError, match="sensitivity_at_night"):
        Threshold(metric="sensitivity_at_night", higher_is_better=higher, green=green, red=red)


def test_threshold_without_yellow_band_is_allowed():
    t = Threshold(metric="x", higher_is_better=True, green=0.5, red=0.5)
    assert [status(v, t) for v in (0.5, 0.49)] == [Status.GREEN, Status.RED]


@pytest.mark.parametrize("metric, value, expected", [
    ("accuracy", 0.90, Status.GREEN), ("accuracy", 0.8999, Status.YELLOW),
    ("accuracy", 0.85, Status.YELLOW), ("accuracy", 0.8499, Status.RED),
    ("precision", 0.80, Status.GREEN), ("precision", 0.70, Status.YELLOW), ("precision", 0.69, Status.RED),
    ("recall", 0.85, Status.GREEN), ("recall", 0.75, Status.YELLOW), ("recall", 0.7499, Status.RED),
    ("auroc", 0.90, Status.GREEN), ("auroc", 0.85, Status.YELLOW), ("auroc", 0.8499, Status.RED),
    ("log_loss", 0.30, Status.GREEN), ("log_loss", 0.3001, Status.YELLOW),
    ("log_loss", 0.50, Status.YELLOW), ("log_loss", 0.5001, Status.RED),
    ("fnr", 0.10, Status.GREEN), ("fnr", 0.15, Status.YELLOW), ("fnr", 0.1501, Status.RED),
    ("drift_score", 0.10, Status.GREEN), ("drift_score", 0.20, Status.YELLOW),
    ("drift_score", 0.21, Status.RED),
    ("latency_p95_ms", 500, Status.GREEN), ("latency_p95_ms", 1000, Status.YELLOW),
    ("latency_p95_ms", 1001, Status.RED),
])
def test_status_boundaries_follow_the_design_table(metric: str, value: float, expected: Status):
    assert status(value, DEFAULT_THRESHOLDS[metric]) is expected


@pytest.mark.parametrize("value", [None, float("nan")])
def test_missing_value_is_unknown(value: float | None):
    assert status(value, DEFAULT_THRESHOLDS["recall"]) is Status.UNKNOWN


def test_worst_ranks_red_over_yellow_over_green_and_ignores_unknown():
    assert worst([Status.GREEN, Status.RED, Status.YELLOW]) is Status.RED
    assert worst(["green", "unknown"]) is Status.GREEN
    assert worst([Status.UNKNOWN]) is Status.UNKNOWN
    assert worst([]) is Status.UNKNOWN


@pytest.mark.parametrize("field, value", [("green", float("nan")), ("red", float("inf")),
                                          ("green", "high"), ("red", None)])
def test_a_bound_that_is_not_a_finite_number_is_an_error_naming_metric_and_bound(field: str,
                                                                               value: object):
    bounds = {"green": 0.9, "red": 0.8, field: value}
    with pytest.raises(ValueError, match=f"'recall': {field} must be a"):
        Threshold(metric="recall", higher_is_better=True, **bounds)


def test_a_threshold_needs_a_metric_name():
    with pytest.raises(ValueError, match="name of its metric"):
        Threshold(metric=" ", higher_is_better=True, green=0.9, red=0.8)


def test_durations():
    assert parse_duration("24h") == timedelta(hours=24)
    assert parse_duration("90m") == timedelta(minutes=90)
    assert parse_duration("2w") == timedelta(days=14)
    with pytest.raises(ValueError, match="duration"):
        parse_duration("0d")
    with pytest.raises(ValueError, match="a number and a unit"):
        parse_duration("soon")
