"""The Overview's verdict: its top reasons in words, and the mitigated state (since when, by whom)
with the playbook moved on."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pandas as pd

from skinlesion.monitoring.health import MetricValue
from skinlesion.monitoring.policy import playbook
from skinlesion.monitoring.verdict import (MITIGATED, MITIGATED_ACTIONS, mitigation,
                                           reasons_sentence, top_reasons, verdict)
from skinlesion.records import ServingRoute
from skinlesion.thresholds import Status

T = [datetime(2026, 11, d, 9, tzinfo=UTC) for d in (20, 21, 22)]
METRICS = {
    "auroc": MetricValue(name="auroc", value=0.93, status=Status.GREEN, n=80),
    "recall": MetricValue(name="recall", value=None, status=Status.UNKNOWN, n=3, estimated=0.61,
                          estimated_status=Status.RED),
    "drift_score": MetricValue(name="drift_score", value=0.13, status=Status.YELLOW, n=200),
    "fnr": MetricValue(name="fnr", value=0.2, status=Status.RED, n=80),
}


def _report(status: Status) -> SimpleNamespace:
    return SimpleNamespace(metrics=METRICS, status=status, playbook=playbook(status))


def _history(*rows: tuple[datetime, bool, str, str]) -> pd.DataFrame:
    return pd.DataFrame([{"ts": ts, "fallback_engaged": on, "restricted_to_clear_cases": False,
                          "actor": who, "reason": why} for ts, on, who, why in rows])


def test_reasons_are_red_first_realised_before_estimated_in_words():
    reasons = top_reasons(METRICS)
    assert [r.metric for r in reasons] == ["fnr", "recall", "drift_score"]
    sentence = reasons_sentence(reasons)
    assert sentence == ("Driven by: False-negative rate 0.2 (red); Recall (sensitivity) estimated "
                        "0.61 (red); Data drift (share of features drifted) 0.13 (yellow).")
    assert "fnr" not in sentence and "drift_score" not in sentence


def test_no_mitigation_keeps_the_status_and_its_playbook():
    v = verdict(_report(Status.RED), ServingRoute(active_version="reference"), _history())
    assert v.status == "red" and v.mitigation is None
    assert v.actions[0].startswith("Switch serving to the fallback")


def test_fallback_engaged_reads_mitigated_since_the_first_engaging_route_by_its_actor():
    route = ServingRoute(active_version="reference", fallback_version="fb", fallback_engaged=True)
    history = _history((T[2], True, "ana", "threshold tweak"), (T[1], True, "lead", "recall red"),
                       (T[0], False, "setup", "initial"))  # newest first
    v = verdict(_report(Status.RED), route, history)
    assert v.status == MITIGATED and v.actions == MITIGATED_ACTIONS
    assert (v.mitigation.since, v.mitigation.by, v.mitigation.why) == (T[1], "lead", "recall red")
    assert "The fallback fb answers every request since 2026-11-21 09:00 UTC (set by lead: recall red)" == v.title
    assert not any("Switch serving to the fallback" in a for a in v.actions)


def test_a_green_window_with_the_fallback_on_stays_green_but_says_so():
    route = ServingRoute(active_version="reference", fallback_version="fb", fallback_engaged=True)
    v = verdict(_report(Status.GREEN), route, _history((T[0], True, "lead", "x")))
    assert v.status == "green" and v.mitigation is not None


def test_restriction_is_a_mitigation_too():
    route = ServingRoute(active_version="reference", restricted_to_clear_cases=True)
    history = pd.DataFrame([{"ts": T[0], "fallback_engaged": False,
                             "restricted_to_clear_cases": True, "actor": "lead", "reason": "r"}])
    m = mitigation(route, history)
    assert m.kind == "restricted" and "restricted to clear cases" in m.text
