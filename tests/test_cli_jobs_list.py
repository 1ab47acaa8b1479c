"""``skinlesion jobs list`` in an 80-column terminal (issue 18): no line is wider than the terminal
and nothing is cut: every id, status with progress, candidate and message reads in full."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from skinlesion.cli import app
from skinlesion.store import JobRecord, Store

ERROR = ("the active version's dataset folder /work/shared/data/isic2019-ham-train is missing; "
         "pass --data")


@pytest.fixture
def jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[JobRecord]:
    monkeypatch.setenv("SKINLESION_HOME", str(tmp_path))
    store = Store(tmp_path / "data" / "skinlesion.duckdb")
    made = [JobRecord(model="reference", trigger="manual", requested_by="lead", role="ml_lead",
                      status="running", progress=0.4, pid=4242, host="gpu-2",  # alive: it beats
                      started_at=datetime.now(UTC), heartbeat_at=datetime.now(UTC),
                      message="epoch 2 of 3: validation AUROC 0.884, balanced accuracy 0.61"),
            JobRecord(model="reference-r1", trigger="active_learning", requested_by="scheduler",
                      role="ml_lead", status="succeeded", progress=1.0, message="done",
                      result={"version": "reference-r20261204-123100"}),
            JobRecord(model="reference-r2", trigger="event", requested_by="monitor",
                      role="ml_lead", status="failed", error=ERROR)]
    for job in made:
        store.create_job(job, is_live=lambda _: True)
    store.release()
    return made


def test_jobs_list_fits_80_columns_and_cuts_nothing(jobs: list[JobRecord]):
    result = CliRunner().invoke(app, ["jobs", "list"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80, result.output
    assert "…" not in result.output
    words = " ".join(" ".join(lines).split())  # the table's cells, wrapped lines joined
    for job in jobs:
        assert job.id[:8] in words
    assert "running 40%" in words and "succeeded" in words and "failed" in words
    # wrapped or folded, every message and the candidate come back whole from the last column
    header = next(line for line in lines if "trigger, by: message" in line)
    start = header.index("trigger, by: message")
    column = re.sub(r"\s+", "", "".join(line[start:] for line in lines[lines.index(header) + 1:]))
    for text in (ERROR, "epoch 2 of 3: validation AUROC 0.884, balanced accuracy 0.61",
                 "candidate reference-r20261204-123100"):
        assert re.sub(r"\s+", "", text) in column, text
