"""Display names: every identifier the cockpit shows reads as words, missing values as a dash."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

import pytest

from skinlesion import display
from skinlesion.monitoring.drift import CLASS_PROBABILITY_FEATURES, DEFAULT_FEATURES
from skinlesion.monitoring.health import LABEL_METRICS

RAW = re.compile(r"^[a-z0-9]+(_[a-z0-9]+)+$")


@pytest.mark.parametrize("feature", [f.name for f in (*DEFAULT_FEATURES, *CLASS_PROBABILITY_FEATURES)])
def test_every_drift_feature_has_words(feature):
    name = display.feature_name(feature)
    assert name != feature and not RAW.match(name) and "_" not in name


@pytest.mark.parametrize("metric", [*LABEL_METRICS, "drift_score", "ood_share", "latency_p95_ms",
                                    "error_rate", "uncertain_share"])
def test_every_health_metric_has_a_name(metric):
    assert metric in display.METRICS and "_" not in display.metric_name(metric)


def test_units_go_in_axis_titles():
    assert display.metric_label("latency_p95_ms") == "Latency p95 (ms)"
    assert display.metric_label("recall") == "Recall (sensitivity)"


def test_unknown_identifiers_are_humanized_not_shown_raw():
    assert display.metric_name("new_metric_x") == "New metric x"
    assert display.action_name("some_new_action") == "Some new action"
    assert display.column_name("estimated_status") == "Estimated status"


def test_missing_values_are_a_dash():
    for value in (None, float("nan"), "None", "unknown", ""):
        assert display.format_value(value) == display.MISSING
    assert display.format_value(0.12345) == "0.123"
    assert display.format_value(60.0) == "60"
    assert display.format_value(True) == "yes"
    assert display.format_value(datetime(2026, 1, 2, 3, 4, tzinfo=UTC)) == "2026-01-02 03:04 UTC"
    assert not math.isnan(len(display.MISSING_HELP))


def test_route_change_reads_as_its_operation_with_a_sentence_not_json():
    entry = {"actor": "lead", "role": "ml_lead", "action": "set_route", "target": "reference",
             "reason": "red recall",
             "details": {"operation": "engage_fallback",
                         "route": {"active_version": "reference", "fallback_version": "fb",
                                   "fallback_engaged": True, "challenger_share": 0.0}}}
    sentence = display.audit_sentence(entry)
    assert sentence == ("lead (ML lead): Switched to the fallback model — reference. "
                        "Why: red recall.")
    details = display.details_sentence(entry["details"])
    assert details == "Route now: active model reference, fallback fb serving."
    assert "{" not in details and "set_route" not in sentence


def test_other_details_are_name_value_pairs():
    assert display.details_sentence({"scopes": ["predict", "label"], "until": None}) == \
        "Scopes: predict, label. Until: —."
    assert display.details_sentence(None) == display.MISSING


def test_sentences_from_the_library_read_in_words():
    assert display.in_words("Drifted features: mean_r, age_approx.") == \
        "Drifted features: Mean red level, Age (approx.)."
    assert display.in_words("estimated fnr 0.2 — red; pauc_80 0.7") == \
        "estimated False-negative rate 0.2 — red; Partial AUC above 80 % sensitivity 0.7"
    assert display.in_words("recall 0.61 — red") == "recall 0.61 — red"  # already a word
