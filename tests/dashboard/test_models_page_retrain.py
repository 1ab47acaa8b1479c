"""The Models page's retraining and archiving: an ML lead launches a job (confirmed, reasoned,
audited) and follows it; a finished job shows the champion/challenger gate; others are refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from skinlesion import registry
from skinlesion.lifecycle import jobs
from skinlesion.lifecycle.gate import GateReport, compare_split
from skinlesion.schema import CLASSES
from skinlesion.store import JobRecord
from tests.dashboard.clinic import (  # noqa: F401 (fixture)
    DASHBOARD, assert_clean, clinic, frame, page)
from tests.lifecycle.seeded_home import demo_like, demo_like_template  # noqa: F401 (fixtures)


def launch(at, *, reason: str = "recall red for two windows", confirm: bool = True):
    at.text_area(key="retrain_reason").input(reason)
    if confirm:
        at.checkbox(key="retrain_confirm").check()
    return at.button(key="retrain_submit").click().run()


def test_ml_lead_launches_retraining_of_the_demo_and_follows_the_job(demo_like, monkeypatch):
    """The demo's case: the active version's training data is not on this machine, the images of
    its (simulated) traffic were kept. The page says before launch what the retrain will use; the
    launch (default policy) is audited, the job trains on the kept cases and registers a
    candidate, and the page shows the job with its gate."""
    home, store = demo_like, demo_like["store"]
    monkeypatch.setenv("SKINLESION_HOME", str(home["root"]))
    monkeypatch.setenv("SKINLESION_THRESHOLDS_FILE", str(DASHBOARD.parent / "thresholds.toml"))
    st.cache_data.clear()
    st.cache_resource.clear()
    at = page("models", "ml_lead", user="lena")
    assert_clean(at)
    assert any("is not on this machine" in i.value and f"{home['n_cases']} labelled cases"
               in i.value for i in at.info)
    at = launch(at)
    assert not at.exception, [e.value for e in at.exception]
    [job] = store.list_jobs()
    assert (job.model, job.trigger, job.requested_by, job.reason) == (
        "base", "manual", "lena", "recall red for two windows")
    audit = store.query_audit(action="launch_retraining").iloc[0]
    assert audit["actor"] == "lena" and audit["details"]["job_id"] == job.id
    done = jobs.wait(store, job.id, poll_s=0.5, timeout_s=300)
    assert done.status == "succeeded", done.error
    assert registry.read_card(home["models_dir"] / done.result["version"]).parent == "base"
    at = page("models", "ml_lead")
    assert_clean(at)
    tables = [d.value for d in at.dataframe]
    [listed] = [t for t in tables if "job" in t.columns]
    assert listed["job"].tolist() == [job.id[:8]] and listed["status"].tolist() == ["succeeded"]
    assert any("is not on this machine" in c.value for c in at.code)  # the job's log
    assert any("verdict" in t.columns for t in tables)  # the gate, and what it could not compare
    assert any("original test (n=0): not compared" in c.value for c in at.caption)


def test_with_nothing_to_train_on_the_page_says_so_and_the_launch_is_refused(clinic):
    """The clinic's stand-in version names no data folder here and no labelled case has its image
    kept: the page warns before launch, and a launch is refused with the same reason, no job."""
    store = clinic["store"]
    at = page("models", "ml_lead", user="lena")
    assert any("Nothing to train on" in w.value for w in at.warning)
    at = launch(at)
    assert any("Nothing to train on" in e.value and "--data" in e.value for e in at.error)
    assert store.list_jobs() == []


def test_launching_needs_the_role_and_a_confirmation(clinic):
    store = clinic["store"]
    assert "retrain_submit" not in [b.key for b in page("models", "viewer", user="vic").button]
    at = launch(page("models", "ml_lead"), confirm=False)
    assert any("confirmation" in e.value for e in at.error)
    assert store.list_jobs() == []


def _gate() -> dict:
    rng = np.random.default_rng(0)
    truth = rng.random(60) < 0.4
    probs = []
    for separation in (0.6, 0.2):
        p = np.clip(rng.normal(0.5 + separation * (truth - 0.5), 0.15), 0, 1)
        out = np.zeros((60, len(CLASSES)))
        out[:, CLASSES.index("MEL")], out[:, CLASSES.index("NV")] = p, 1 - p
        probs.append(out)
    split = compare_split("recent hold-out", pd.Series(np.where(truth, "MEL", "NV")), *probs,
                          thresholds=(0.5, 0.5), resamples=200)
    return GateReport(candidate="v3", active="v2", resamples=200, seed=0,
                      splits=[split]).model_dump(mode="json")


def test_a_finished_job_shows_the_gate(clinic):
    store = clinic["store"]
    job = store.create_job(JobRecord(model="v2", trigger="event", requested_by="monitor",
                                     role="system"), is_live=lambda j: True)
    store.update_job(job.id, status="succeeded", progress=1.0, message="done: candidate v3",
                     result={"version": "v3", "gate": _gate()})
    at = page("models", "viewer")
    assert_clean(at)
    gates = [df for df in (d.value for d in at.dataframe) if "verdict" in df.columns]
    assert gates, "the gate table is shown"
    verdicts = dict(zip(gates[0]["metric"], gates[0]["verdict"], strict=True))
    assert verdicts["auroc"] == "better"
    assert any("done: candidate v3" in p.proto.text for p in at.get("progress"))


def test_ml_lead_archives_a_version(clinic):
    store = clinic["store"]
    at = page("models", "ml_lead", user="lena")
    at.selectbox(key="archive_version").select("v1")
    at.text_area(key="archive_reason").input("superseded by v2")
    at.checkbox(key="archive_confirm").check()
    at = at.button(key="archive_submit").click().run()
    assert_clean(at)
    assert store.archived_versions() == ["v1"]
    roles = dict(zip(frame(at)["id"], frame(at)["role"], strict=True))
    assert roles["v1"] == "archived"
    assert store.query_audit(limit=1)["action"].iloc[0] == "archive"
