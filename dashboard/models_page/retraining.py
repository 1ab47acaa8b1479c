"""Retraining: launch a job of the active version (confirmed, reasoned, audited), follow the recent
jobs (live progress, log, the candidate's gate, cancel), and archive or restore versions."""

from __future__ import annotations

from datetime import datetime

import streamlit as st

import components
from models_page.view import FLASH, ModelsView, action_form, may_act
from skinlesion.errors import SkinLesionError
from skinlesion.lifecycle import jobs, operations
from skinlesion.lifecycle.gate import gate_table
from skinlesion.lifecycle.data import RetrainPlan
from skinlesion.lifecycle.spec import active_spec, plan


def triggers_caption(view: ModelsView) -> None:
    """When retraining also launches by itself (the policy's triggers)."""
    retraining = components.policy().retraining
    active_card = view.by_id.get(view.route.active_version)
    due = retraining.next_due(datetime.fromisoformat(active_card.created)) if active_card else None
    st.caption(f"Also launched by `skinlesion monitor`: schedule {retraining.schedule}"
               + (f" (next due {due:%Y-%m-%d} for {view.route.active_version})" if due else "")
               + f", alerts at {retraining.on_status} or worse, and "
               + (f"{retraining.review_labels} new review-queue labels."
                  if retraining.review_labels else "no active-learning trigger."))


def retrain_plan(view: ModelsView) -> RetrainPlan | None:
    """What a retrain of the active version would train on (its card's data folder); None with
    the reason shown when it cannot be told."""
    try:
        spec = active_spec(components.store(), components.policy().retraining,
                           models_dir=view.models_dir, cache_dir=components.settings().cache_dir)
        return plan(components.store(), spec)
    except SkinLesionError as err:
        st.error(str(err))
        return None


def launch_form(view: ModelsView) -> None:
    if not may_act():
        return
    retraining, active = components.policy().retraining, view.route.active_version
    planned = retrain_plan(view)
    with st.form("retrain"):
        st.markdown("**Launch retraining**")
        if planned is not None:
            (st.warning if planned.refusal else st.info)(planned.summary())
        st.caption(f"Retrains **{active}** in a background job ({retraining.mode}, "
                   f"{retraining.epochs} epochs), progress in its log below. The result is a "
                   f"candidate compared with {active} on the recent hold-out (and on its original "
                   "test split where that is on this machine); nothing is promoted automatically.")
        data_folder = st.text_input("Original data folder (only if its card names none here)",
                                    key="retrain_data")
        reason = st.text_area("Reason (audited)", key="retrain_reason", height=68)
        confirmed = st.checkbox(f"Start a retraining job of {active}", key="retrain_confirm")
        submitted = st.form_submit_button("Launch retraining", type="primary",
                                          key="retrain_submit")
    if not submitted:
        return
    if not confirmed:
        st.error("Tick the confirmation first: this starts a training job on the server.")
        return
    try:
        spec = active_spec(components.store(), retraining, models_dir=view.models_dir,
                           cache_dir=components.settings().cache_dir,
                           data_dir=data_folder.strip() or None)
        job = jobs.launch_retrain(components.store(), spec, reason=reason, **view.who)
    except (SkinLesionError, ValueError) as err:
        st.error(str(err))
        return
    st.session_state[FLASH] = f"Retraining job {job.id[:8]} launched (pid {job.pid})."
    st.session_state["retrain_job"] = job.id
    st.rerun()


def archive_forms(view: ModelsView) -> None:
    store = components.store()
    archived = store.archived_versions()
    in_route = operations.route_roles(view.route)
    archivable = [c.id for c in reversed(view.cards)
                  if c.id not in in_route and c.id not in archived]
    action_form("archive", "Archive a version", "Retire the chosen version",
                lambda reason, version: operations.archive(store, view.models_dir, version,
                                                           reason=reason, **view.who),
                help_text="A candidate not promoted, or a retired model: it stays on disk, listed "
                          "as archived, and cannot be activated until restored.",
                extra=lambda: {"version": st.selectbox("Version", archivable or ["none"],
                                                       key="archive_version")},
                disabled=not archivable)
    if archived:
        action_form("unarchive", "Restore a version", "Make the chosen version usable again",
                    lambda reason, version: operations.unarchive(store, view.models_dir, version,
                                                                 reason=reason, **view.who),
                    extra=lambda: {"version": st.selectbox("Version", archived,
                                                           key="unarchive_version")})


def job_details(view: ModelsView, job_id: str) -> None:
    """The job's status, progress, log tail and, once done, the gate; a cancel form while live."""
    store = components.store()
    job = jobs.find_job(store, job_id)
    st.progress(job.progress, text=f"{job.status} · {job.message}")
    if job.error:
        st.error(job.error)
    log = store.job_log(job_id, tail=15)
    st.code("\n".join(log["line"]) or "(no log lines yet)", language=None)
    if job.result.get("gate"):
        gate = job.result["gate"]
        st.markdown(f"Candidate **{job.result['version']}** vs active **{gate['active']}** "
                    f"(paired bootstrap, {gate['resamples']} resamples, 95% intervals):")
        st.dataframe(gate_table(gate), hide_index=True, width="stretch")
        for split in gate["splits"]:
            if split.get("note"):
                st.caption(f"{split['split']} (n={split['n']}): {split['note']}")
    if not job.is_finished and may_act():
        with st.form(f"cancel_{job_id}"):
            cancel_reason = st.text_input("Reason (audited)", key="cancel_job_reason")
            if st.form_submit_button("Cancel this job", key="cancel_job_submit"):
                try:
                    jobs.cancel_job(store, job_id, reason=cancel_reason, **view.who)
                except SkinLesionError as err:
                    st.error(str(err))


def recent_jobs(view: ModelsView) -> None:
    """The ten newest jobs, and the chosen one live (refreshed every 2 s until it ends)."""
    store = components.store()
    listed = [jobs.refresh(store, j) for j in store.list_jobs(limit=10)]
    if not listed:
        return
    st.dataframe(jobs.jobs_table(listed), hide_index=True, width="stretch",
                 column_config={"progress": st.column_config.ProgressColumn("progress")})
    by_job = {j.id: j for j in listed}
    shown = st.selectbox("Job", list(by_job), key="retrain_job",
                         format_func=lambda jid: f"{jid[:8]} · {by_job[jid].status} · "
                                                 f"{by_job[jid].trigger} · {by_job[jid].model}")
    panel = st.fragment(run_every=2 if not by_job[shown].is_finished else None)(job_details)
    panel(view, shown)


def render(view: ModelsView) -> None:
    st.subheader("Retraining")
    triggers_caption(view)
    left, right = st.columns(2)
    with left:
        launch_form(view)
    with right:
        archive_forms(view)
    recent_jobs(view)
