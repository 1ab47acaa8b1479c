"""Policy: the monitoring plan read from TOML (defaults, partial files, errors naming the key), playbooks."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from skinlesion.errors import DataError
from skinlesion.monitoring.policy import Hints, Policy, load_policy, playbook
from skinlesion.thresholds import DEFAULT_THRESHOLDS, REQUIRED_METRICS, Status

REPO = Path(__file__).resolve().parents[2]


def test_shipped_thresholds_file_equals_the_defaults():
    assert load_policy(REPO / "thresholds.toml") == Policy()
    assert set(REQUIRED_METRICS) <= set(Policy().thresholds)


def test_default_policy_judges_by_the_design_table_and_leaves_unknown_metrics_unknown():
    policy = Policy()
    assert [policy.status("recall", v) for v in (0.85, 0.80, 0.70)] == [
        Status.GREEN, Status.YELLOW, Status.RED]
    assert policy.status("no_such_metric", 0.5) is Status.UNKNOWN


def test_absent_file_gives_the_defaults(tmp_path: Path):
    assert load_policy(tmp_path / "nothing.toml") == Policy()


def test_partial_file_overrides_only_what_it_names(tmp_path: Path):
    path = tmp_path / "t.toml"
    path.write_text('min_labels = 50\n[thresholds.recall]\nred = 0.80\n'
                    '[thresholds.f1]\nhigher_is_better = true\ngreen = 0.8\nred = 0.7\n'
                    '[windows]\n"90d" = "90d"\n')
    policy = load_policy(path)
    assert policy.min_labels == 50
    assert (policy.threshold("recall").green, policy.threshold("recall").red) == (0.85, 0.80)
    assert policy.status("f1", 0.75) is Status.YELLOW
    assert policy.window("90d") == timedelta(days=90)
    assert policy.threshold("accuracy") == DEFAULT_THRESHOLDS["accuracy"]


@pytest.mark.parametrize("text, key", [
    ("[thresholds.recall]\ngreen = 0.70\n", "thresholds.recall"),
    ("min_labels = 0\n", "min_labels"),
    ("[windows]\n24h = \"soon\"\n", "24h"),
    ("[volume]\nspike_factor = 0.5\n", "volume.spike_factor"),
    ("[retraining]\nschedule = \"fortnightly-ish\"\n", "retraining.schedule"),
    ("alert_after_window = 3\n", "alert_after_window"),
    ("malignant = [\"MEL\", \"XYZ\"]\n", "malignant"),
    ("min_labels = \n", "not valid TOML"),
])
def test_bad_values_raise_an_error_naming_the_key(tmp_path: Path, text: str, key: str):
    path = tmp_path / "t.toml"
    path.write_text(text)
    with pytest.raises(DataError, match=key) as err:
        load_policy(path)
    assert str(path) in str(err.value)


def test_playbooks_carry_the_actions_of_their_colour_and_the_concrete_hints():
    hints = Hints(breaches=("recall 0.70 — red",), drifted_features=("brightness", "age_approx"),
                  slipped_classes={"MEL": -0.18, "BCC": -0.05}, label_coverage=0.04,
                  label_lag_hours=36.0, volume_anomalies=("spike at 14:00 UTC: 120 vs 10 expected",))
    red = playbook(Status.RED, hints)
    assert red.status is Status.RED
    assert any("fallback" in a for a in red.actions) and any("retrain" in a.lower() for a in red.actions)
    text = " ".join(red.hints)
    for fragment in ("recall 0.70", "brightness, age_approx", "MEL (melanoma): recall -0.18",
                     "4%", "label the review queue", "36 h", "spike at 14:00"):
        assert fragment in text
    assert red.hints.index(next(h for h in red.hints if "MEL" in h)) < red.hints.index(
        next(h for h in red.hints if "BCC" in h))  # the worst slip first
    yellow = playbook("yellow", hints)
    assert any("threshold" in a for a in yellow.actions)
    assert not any("fallback" in a for a in yellow.actions)
    green = playbook(Status.GREEN)
    assert green.hints == [] and "monitoring" in green.title.lower()
