"""`skinlesion store migrate`: a DuckDB store copied into PostgreSQL, verified per table."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from skinlesion.cli import app
from skinlesion.errors import StoreError
from skinlesion.store import (
    Alert,
    AlertAction,
    FailureRecord,
    HealthSnapshot,
    JobRecord,
    LabelRecord,
    ServingRoute,
    SnapshotMetric,
    Store,
)
from skinlesion.store.transfer import TABLES, migrate_store, verify
from tests.test_store import T0, record


def _filled(path: Path) -> tuple[Store, str]:
    """A DuckDB store with rows in every table; returns it and an API key it issued."""
    store = Store(path)
    rows = [record(n) for n in range(12)]
    store.log_predictions(rows)
    store.add_labels([LabelRecord(request_id=rows[1].request_id, diagnosis="MEL", source="histopathology",
                                  labelled_by="cleo", ts=T0 + timedelta(days=1))])
    store.set_route(ServingRoute(active_version="v1", threshold_overrides={"v1": 0.31}), actor="ana",
                    role="ml_lead", reason="deploy")
    key = store.create_api_key("clinic-app")
    store.save_snapshot(HealthSnapshot(window_name="24h", window_start=T0, window_end=T0 + timedelta(days=1),
                                       status="yellow", report={"hints": ["recall slipped"], "n": 12},
                                       metrics=(SnapshotMetric(metric="recall", value=0.8, status="yellow",
                                                               n=12),)))
    alert = store.upsert_alert(Alert(metric="recall", scope="24h", status="yellow", opened_at=T0,
                                     last_seen_at=T0, last_event_at=T0, message="recall 0.80",
                                     details={"value": 0.8}))
    store.add_alert_action(AlertAction(alert_id=alert.id, actor="ana", role="ml_lead",
                                       kind="acknowledge", note="seen"))
    job = store.create_job(JobRecord(model="v1", trigger="manual", requested_by="ana", role="ml_lead",
                                     config={"epochs": 3}), is_live=lambda _: False)
    store.append_job_log(job.id, ["epoch 1", "epoch 2"])
    store.claim_trigger("alert:1", "event", details={"metric": "recall"})
    store.set_archived("v0", True, actor="ana", role="ml_lead", reason="superseded")
    store.log_failure(FailureRecord(http_status=422, kind="rejected", field="age_approx"))
    return store, key


def test_a_duckdb_store_is_copied_into_postgresql_and_verified(tmp_path: Path, postgres_server) -> None:
    source, key = _filled(tmp_path / "old.duckdb")
    with postgres_server.database() as url:
        checks = migrate_store(f"duckdb://{source.path}", url)
        assert [c.table for c in checks] == [t for t, *_ in TABLES]
        assert all(c.ok and c.source_rows > 0 for c in checks), checks
        assert {c.table: c.source_rows for c in checks}["predictions"] == 12

        target = Store(url)
        try:
            assert target.get_route() == source.get_route()
            assert target.verify_api_key(key) == "clinic-app"
            assert target.get_prediction(record(3).request_id) == record(3)
            assert target.labelled_predictions()["diagnosis"].tolist() == ["MEL"]
            assert target.latest_snapshot() == source.latest_snapshot()
            # the sequences moved past the copied rows: new rows follow the old ones
            target.append_audit("bo", "clinical_ops", "acknowledge_alert")
            assert target.query_audit(limit=1)["actor"].tolist() == ["bo"]

            # a changed row is caught, naming its table
            with psycopg.connect(url, autocommit=True) as con:
                con.execute("UPDATE predictions SET p_malignant = 0.57 WHERE request_id = %s",
                            [record(5).request_id])
            with pytest.raises(StoreError, match=r"differs from the source in predictions \(12 rows"):
                verify(source, target)
        finally:
            target.release()


def test_copy_refuses_a_target_that_is_not_empty(tmp_path: Path, postgres_server) -> None:
    source, _ = _filled(tmp_path / "old.duckdb")
    with postgres_server.database() as url:
        Store(url).log_predictions([record(99)])
        with pytest.raises(StoreError, match="not empty.*predictions"):
            migrate_store(f"duckdb://{source.path}", url)


def test_copy_goes_into_postgresql_only(tmp_path: Path) -> None:
    source, _ = _filled(tmp_path / "old.duckdb")
    with pytest.raises(StoreError, match="must be a PostgreSQL store"):
        migrate_store(f"duckdb://{source.path}", f"duckdb://{tmp_path / 'new.duckdb'}")


def test_the_cli_migrates_the_home_store_and_prints_each_table(tmp_path: Path, postgres_server,
                                                               monkeypatch) -> None:
    source, _ = _filled(tmp_path / "data" / "skinlesion.duckdb")
    source.release()
    monkeypatch.setenv("SKINLESION_HOME", str(tmp_path))
    monkeypatch.delenv("SKINLESION_STORE_URL", raising=False)
    with postgres_server.database() as url:
        result = CliRunner().invoke(app, ["store", "migrate", "--to", url])
        assert result.exit_code == 0, result.output
        lines = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines() if "ok" in line}
        assert lines["predictions"] == "12" and set(lines) == {t for t, *_ in TABLES}
        again = CliRunner().invoke(app, ["store", "migrate", "--to", url])
        assert again.exit_code == 2 and "not empty" in again.output
