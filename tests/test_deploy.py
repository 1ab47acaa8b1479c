"""deploy/: the Prometheus configuration and alert rules pass promtool (syntax, and an alert that
fires on the series it should), and every skinlesion series the rules and the Grafana dashboard use
is one the service exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from skinlesion.api.metrics import ApiMetrics
from skinlesion.monitoring.exporter import health_gauges
from skinlesion.store import Alert, HealthSnapshot, SnapshotMetric

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool missing (Debian package "
                                    "`prometheus`; `make test` installs it with apt-get where it can)")
_SERIES = re.compile(r"\bskinlesion_[a-z_]+\b")


def _promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True, check=False)


@needs_promtool
def test_prometheus_config_and_rules_pass_promtool() -> None:
    config = _promtool("check", "config", PROMETHEUS / "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    rules = _promtool("check", "rules", PROMETHEUS / "skinlesion-rules.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 8 rules found" in rules.stdout


@needs_promtool
def test_red_health_pages_and_green_does_not(tmp_path: Path) -> None:
    """promtool's rule unit test: RED held 5 minutes fires the page, GREEN fires nothing."""
    shutil.copy(PROMETHEUS / "skinlesion-rules.yml", tmp_path)
    (tmp_path / "test.yml").write_text(json.dumps({
        "rule_files": ["skinlesion-rules.yml"], "evaluation_interval": "1m",
        "tests": [
            {"interval": "1m",
             "input_series": [{"series": 'skinlesion_health_status{status="red",instance="a"}',
                               "values": "0 0 1 1 1 1 1 1 1 1"},
                              {"series": 'skinlesion_health_snapshot_timestamp_seconds{instance="a"}',
                               "values": "0+60x9"}],
             "alert_rule_test": [
                 {"eval_time": "3m", "alertname": "SkinlesionHealthRed", "exp_alerts": []},
                 {"eval_time": "9m", "alertname": "SkinlesionHealthRed",
                  "exp_alerts": [{"exp_labels": {"severity": "page"},
                                  "exp_annotations": {
                                      "summary": "Model health is RED",
                                      "description": "Playbook: switch to the fallback (or restrict to "
                                                     "clear cases), notify, retrain. See the dashboard's "
                                                     "Overview."}}]},
                 {"eval_time": "9m", "alertname": "SkinlesionHealthYellow", "exp_alerts": []}]}]}))
    result = _promtool("test", "rules", tmp_path / "test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def _exported() -> set[str]:
    """Every series name the API's /metrics can carry (histograms with their suffixes)."""
    names = set()
    for family in ApiMetrics().registry.collect():
        names.add(family.name)
        names.update({f"{family.name}_total", f"{family.name}_bucket", f"{family.name}_sum",
                      f"{family.name}_count"})
    t0 = datetime(2025, 3, 1, tzinfo=UTC)
    snapshot = HealthSnapshot(window_name="24h", window_start=t0 - timedelta(days=1), window_end=t0,
                              status="red", metrics=(SnapshotMetric(metric="recall", value=0.7,
                                                                    status="red"),))
    alert = Alert(metric="recall", scope="24h", status="red", opened_at=t0, last_seen_at=t0,
                  last_event_at=t0, message="recall 0.70")
    names.update(family.name for family in health_gauges(snapshot, [alert]))
    return names


def test_rules_and_dashboard_use_only_series_the_service_exports() -> None:
    rules = (PROMETHEUS / "skinlesion-rules.yml").read_text()
    dashboard = json.loads((DEPLOY / "grafana" / "skinlesion-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = set(_SERIES.findall(rules)) | set(_SERIES.findall("\n".join(exprs)))
    assert {"skinlesion_requests_total", "skinlesion_log_wait_seconds_bucket",
            "skinlesion_health_status"} <= used
    assert used - _exported() == set()
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
