"""Models — for ML leads: the versions side by side with their cards, and the route actions
(fallback, restrict, rollback, activate/promote, A/B challenger and shadow, operating threshold)
through skinlesion.lifecycle.operations, each confirmed, reasoned and audited; retraining jobs
(skinlesion.lifecycle.jobs: launch, live progress and log, cancel, the candidate's gate) and archiving.
Everyone may look; the actions need the ml_lead role."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

import components
import queries
from skinlesion.auth import can
from skinlesion.errors import SkinLesionError
from skinlesion.lifecycle import jobs, operations
from skinlesion.lifecycle.gate import gate_table
from skinlesion.lifecycle.spec import active_spec
from skinlesion.monitoring.cockpit import compare_versions, comparison_versions, is_synthetic
from skinlesion.registry import list_versions

_FLASH = "models_flash"

user, _ = components.page_setup(
    "Models", caption="Model versions with their cards and metrics; switch the fallback, roll back, "
                      "promote a candidate. Every action asks for a reason and is audited.")
if _FLASH in st.session_state:
    st.success(st.session_state.pop(_FLASH), icon=":material/task_alt:")

models_dir = components.models_dir()
cards = list_versions(models_dir)
route = components.store().get_route()
may_act = can(user.role, operations.ROUTE_ACTION)

# --- the versions side by side ----------------------------------------------------------------------

st.subheader("Versions")
if not cards:
    st.info(f"No model versions in {models_dir} yet. Train one with `skinlesion train --data DIR` "
            "(or build the demo with `skinlesion demo`).")
    st.stop()
table = operations.versions_table(cards, route, components.store().archived_versions())
metric_columns = [c for c in table.columns
                  if c.startswith(("val_", "test_")) and table[c].notna().any()]
table = table.drop(columns=[c for c in table.columns
                            if c.startswith(("val_", "test_")) and c not in metric_columns])
st.dataframe(
    table, hide_index=True, width="stretch",
    column_config={
        "id": st.column_config.TextColumn("version", pinned=True),
        "fingerprint": st.column_config.TextColumn("data fingerprint", help="sha256 of the sorted "
                                                   "(image content hash, label, split) triples"),
        **{c: st.column_config.NumberColumn(c.replace("_", " "), format="%.3f")
           for c in metric_columns},
    })
st.caption("Metrics on each version's own validation (val) and test split, from its model card; "
           "recall/specificity/precision at the version's threshold, positive class = malignant.")

by_id = {card.id: card for card in cards}
chosen = st.multiselect("Compare model cards", list(reversed(by_id)),
                        default=[v for v in dict.fromkeys([route.active_version, cards[-1].id])
                                 if v in by_id], max_selections=3, key="models_compare")
for column, vid in zip(st.columns(max(len(chosen), 1)), chosen, strict=False):
    card = by_id[vid]
    with column, st.container(border=True):
        st.markdown(f"**{vid}**  \n{card.kind} · {card.architecture}")
        if is_synthetic(card):
            st.error("Trained on synthetic data — a demo model, not for clinical use.",
                     icon=":material/science:")
        st.caption(f"created {card.created} · parent {card.parent or '—'} · threshold "
                   f"{card.threshold:.3f}" + (f" (target sensitivity {card.target_sensitivity:.0%})"
                                              if card.target_sensitivity else ""))
        st.markdown(f"Data **{card.data.name}**: {card.data.n_images:,} images, fingerprint "
                    f"`{card.data.fingerprint[:16]}…`")
        split_metrics = pd.DataFrame(card.metrics).reindex(operations.COMPARED_METRICS)
        if not split_metrics.empty:
            st.dataframe(split_metrics.dropna(how="all"), width="stretch")
        if card.notes:
            st.caption(card.notes)
        if (card.model_extra or {}).get("gate"):
            with st.expander(f"Gate: vs {card.model_extra['gate']['active']}"):
                st.dataframe(gate_table(card.model_extra["gate"]), hide_index=True,
                             width="stretch")
        with st.expander("Full model card"):
            st.json(card.model_dump(mode="json"), expanded=False)

# --- actions ----------------------------------------------------------------------------------------

st.subheader("Actions")
if not may_act:
    st.info(f"Route actions need the ml_lead role; you are signed in as {user.role}, so they will "
            "be refused.", icon=":material/lock:")


def action_form(key: str, title: str, confirm_text: str, run, *, help_text: str = "",
                extra=None, disabled: bool = False) -> None:
    """A form asking for a reason and a confirmation before ``run(reason, **extra())`` changes the
    route; the outcome is shown, and the page reloads with the new route on success."""
    with st.form(key):
        st.markdown(f"**{title}**")
        if help_text:
            st.caption(help_text)
        values = extra() if extra else {}
        reason = st.text_area("Reason (audited)", key=f"{key}_reason", height=68)
        confirmed = st.checkbox(confirm_text, key=f"{key}_confirm")
        # Left enabled for every role: the library checks the role and refuses (with the reason)
        # when it may not, so the permission lives in one place.
        submitted = st.form_submit_button(title, type="primary", disabled=disabled,
                                          key=f"{key}_submit")
    if not submitted:
        return
    if not confirmed:
        st.error("Tick the confirmation first: this changes which model answers patients.")
        return
    if not reason.strip():
        st.error("Give a reason: every route change is audited with why it was made.")
        return
    try:
        entry = run(reason, **values)
    except (SkinLesionError, ValueError) as err:
        st.error(str(err))
        return
    components.clear_caches()
    st.session_state[_FLASH] = f"{title}: done (audit entry {entry.id[:8]}, {entry.ts:%Y-%m-%d %H:%M} UTC)."
    st.rerun()


def who() -> dict[str, str]:
    return {"actor": user.name, "role": user.role}


left, right = st.columns(2)
with left:
    if route.fallback_engaged:
        action_form("release_fallback", "Switch back from the fallback",
                    f"Answer with the active model {route.active_version} again",
                    lambda reason: operations.release_fallback(components.store(), reason=reason,
                                                               **who()),
                    help_text=f"The fallback {route.fallback_version} answers every request now.")
    else:
        fallbacks = operations.fallback_versions(models_dir)
        options = list(dict.fromkeys([*([route.fallback_version] if route.fallback_version else []),
                                      *reversed(fallbacks)]))
        action_form(
            "engage_fallback", "Switch to the fallback",
            "Answer every request with the rule-based fallback",
            lambda reason, version: operations.engage_fallback(
                components.store(), models_dir, version=version, reason=reason, **who()),
            help_text="The red playbook's measure: the simple model answers while the main one is "
                      "investigated.",
            extra=lambda: {"version": st.selectbox("Fallback version", options or ["none"],
                                                   key="engage_fallback_version")
                           if options else None},
            disabled=not options)
        if not options:
            st.caption("No fallback version (kind fallback) in the models folder.")

    previous = operations.previous_active_version(components.store())
    action_form("rollback", "Roll back", f"Serve {previous} again instead of {route.active_version}",
                lambda reason: operations.rollback(components.store(), models_dir, reason=reason,
                                                   **who()),
                help_text=f"Back to the version active before the current one: **{previous}**."
                if previous else "No earlier active version in the route history.",
                disabled=previous is None)

with right:
    candidates = [c.id for c in reversed(cards) if c.id != route.active_version]
    action_form(
        "activate", "Activate / promote",
        "Serve the chosen version to every patient",
        lambda reason, version: operations.activate(components.store(), models_dir, version,
                                                    reason=reason, **who()),
        help_text="A candidate becomes the active model (a challenger or shadow slot it held is "
                  "emptied). Compare its card above first.",
        extra=lambda: {"version": st.selectbox("Version", candidates or ["none"],
                                               key="activate_version")},
        disabled=not candidates)
    restricted = route.restricted_to_clear_cases
    action_form("restrict", "Lift the restriction" if restricted else "Restrict to clear cases",
                "Refer every case that is not clearly benign" if not restricted
                else "Answer every case normally again",
                lambda reason: operations.restrict(components.store(), not restricted,
                                                   reason=reason, **who()),
                help_text="While restricted, only clearly benign answers are returned as "
                          "'no referral'; everything else is referred.")

# --- retraining -----------------------------------------------------------------------------------

st.subheader("Retraining")
retraining = components.policy().retraining
active_card = by_id.get(route.active_version)
due = (retraining.next_due(datetime.fromisoformat(active_card.created)) if active_card else None)
st.caption(f"Also launched by `skinlesion monitor`: schedule {retraining.schedule}"
           + (f" (next due {due:%Y-%m-%d} for {route.active_version})" if due else "")
           + f", alerts at {retraining.on_status} or worse, and "
           + (f"{retraining.review_labels} new review-queue labels." if retraining.review_labels
              else "no active-learning trigger."))
rt_left, rt_right = st.columns(2)
with rt_left, st.form("retrain"):
    st.markdown("**Launch retraining**")
    st.caption(f"Retrains **{route.active_version}** in a background job on its original data plus "
               f"the labelled production cases with kept images ({retraining.mode}, "
               f"{retraining.epochs} epochs). The result is a candidate compared with it on the "
               "recent hold-out and the original test split; nothing is promoted automatically.")
    data_folder = st.text_input("Original data folder (only if its card names none)",
                                key="retrain_data")
    retrain_reason = st.text_area("Reason (audited)", key="retrain_reason", height=68)
    retrain_confirmed = st.checkbox(f"Start a retraining job of {route.active_version}",
                                    key="retrain_confirm")
    retrain_submitted = st.form_submit_button("Launch retraining", type="primary",
                                              key="retrain_submit")
if retrain_submitted:
    if not retrain_confirmed:
        st.error("Tick the confirmation first: this starts a training job on the server.")
    else:
        try:
            spec = active_spec(components.store(), retraining, models_dir=models_dir,
                               cache_dir=components.settings().cache_dir,
                               data_dir=data_folder.strip() or None)
            job = jobs.launch_retrain(components.store(), spec, reason=retrain_reason, **who())
        except (SkinLesionError, ValueError) as err:
            st.error(str(err))
        else:
            st.session_state[_FLASH] = f"Retraining job {job.id[:8]} launched (pid {job.pid})."
            st.session_state["retrain_job"] = job.id
            st.rerun()

with rt_right:
    archived = components.store().archived_versions()
    in_route = operations.route_roles(route)
    archivable = [c.id for c in reversed(cards) if c.id not in in_route and c.id not in archived]
    action_form("archive", "Archive a version", "Retire the chosen version",
                lambda reason, version: operations.archive(components.store(), models_dir,
                                                           version, reason=reason, **who()),
                help_text="A candidate not promoted, or a retired model: it stays on disk, listed "
                          "as archived, and cannot be activated until restored.",
                extra=lambda: {"version": st.selectbox("Version", archivable or ["none"],
                                                       key="archive_version")},
                disabled=not archivable)
    if archived:
        action_form("unarchive", "Restore a version", "Make the chosen version usable again",
                    lambda reason, version: operations.unarchive(components.store(), models_dir,
                                                                 version, reason=reason, **who()),
                    extra=lambda: {"version": st.selectbox("Version", archived,
                                                           key="unarchive_version")})

recent_jobs = [jobs.refresh(components.store(), j) for j in components.store().list_jobs(limit=10)]
if recent_jobs:
    st.dataframe(jobs.jobs_table(recent_jobs), hide_index=True, width="stretch",
                 column_config={"progress": st.column_config.ProgressColumn("progress")})
    by_job = {j.id: j for j in recent_jobs}
    shown = st.selectbox("Job", list(by_job), key="retrain_job",
                         format_func=lambda jid: f"{jid[:8]} · {by_job[jid].status} · "
                                                 f"{by_job[jid].trigger} · {by_job[jid].model}")

    @st.fragment(run_every=2 if not by_job[shown].is_finished else None)
    def job_panel(job_id: str) -> None:
        """The job's live status, progress, log tail and, once done, the gate."""
        job = jobs.find_job(components.store(), job_id)
        st.progress(job.progress, text=f"{job.status} · {job.message}")
        if job.error:
            st.error(job.error)
        log = components.store().job_log(job_id, tail=15)
        st.code("\n".join(log["line"]) or "(no log lines yet)", language=None)
        if job.result.get("gate"):
            gate = job.result["gate"]
            st.markdown(f"Candidate **{job.result['version']}** vs active **{gate['active']}** "
                        f"(paired bootstrap, {gate['resamples']} resamples, 95% intervals):")
            st.dataframe(gate_table(gate), hide_index=True, width="stretch")
        if not job.is_finished:
            with st.form(f"cancel_{job_id}"):
                cancel_reason = st.text_input("Reason (audited)", key="cancel_job_reason")
                if st.form_submit_button("Cancel this job", key="cancel_job_submit"):
                    try:
                        jobs.cancel_job(components.store(), job_id, reason=cancel_reason, **who())
                    except SkinLesionError as err:
                        st.error(str(err))

    job_panel(shown)

# --- A/B test and shadow ----------------------------------------------------------------------------

COMPARE_WINDOWS = {"24 h": timedelta(hours=24), "7 d": timedelta(days=7), "30 d": timedelta(days=30)}


@st.cache_data(ttl=components.SLOW_TTL_S, show_spinner="Comparing the versions…")
def version_comparison(db_path: str, models_dir_: str, start: datetime, end: datetime,
                       versions: tuple[str, ...], drift: bool) -> pd.DataFrame:
    return compare_versions(components.store(), Path(models_dir_), components.policy(), start, end,
                            list(versions), drift=drift)


st.subheader("A/B test and shadow")
st.caption("A challenger answers a share of the requests (the same image always by the same "
           "model); a shadow answers every request in the background, logged but never returned. "
           "Compare them with the active version below before promoting one.")
archived = set(components.store().archived_versions())
others = [c.id for c in reversed(cards) if c.id != route.active_version and c.id not in archived]
ab_left, ab_right = st.columns(2)
with ab_left:
    if route.challenger_version:
        st.markdown(f"Challenger **{route.challenger_version}** answers "
                    f"**{route.challenger_share:.0%}** of the requests.")
        action_form("stop_challenger", "Stop the A/B test",
                    f"Answer every request with {route.active_version} again",
                    lambda reason: operations.stop_challenger(components.store(), reason=reason,
                                                              **who()))
    challengers = [v for v in others if v != route.shadow_version]
    action_form(
        "start_challenger", "Start or change the A/B test",
        "Send the chosen share of the requests to the challenger",
        lambda reason, version, share: operations.start_challenger(
            components.store(), models_dir, version, share, reason=reason, **who()),
        extra=lambda: {
            "version": st.selectbox("Challenger", challengers or ["none"],
                                    key="start_challenger_version"),
            "share": st.slider("Share of the requests", 0.01, 0.99,
                               value=route.challenger_share or 0.1, step=0.01,
                               key="start_challenger_share")},
        disabled=not challengers)
with ab_right:
    if route.shadow_version:
        st.markdown(f"Shadow **{route.shadow_version}** answers every request (not returned).")
        action_form("stop_shadow", "Stop the shadow", f"Stop {route.shadow_version}'s shadow answers",
                    lambda reason: operations.stop_shadow(components.store(), reason=reason,
                                                          **who()))
    shadows = [v for v in others if v not in (route.challenger_version, route.shadow_version)]
    action_form(
        "start_shadow", "Start the shadow", "Answer every request with it too, logged only",
        lambda reason, version: operations.start_shadow(components.store(), models_dir, version,
                                                        reason=reason, **who()),
        extra=lambda: {"version": st.selectbox("Shadow", shadows or ["none"],
                                               key="start_shadow_version")},
        disabled=not shadows)

compared = comparison_versions(route)
if len(compared) < 2:
    st.info("No challenger or shadow: start one above to compare it with the active version here.")
else:
    left, right = st.columns([2, 1])
    span = left.radio("Compare over the last", list(COMPARE_WINDOWS), index=1, horizontal=True,
                      key="models_compare_window")
    with_drift = right.checkbox("With data drift (slower)", key="models_compare_drift")
    end = components.now_floor()
    comparison = version_comparison(str(components.settings().db_path), str(models_dir),
                                    end - COMPARE_WINDOWS[span], end, tuple(compared), with_drift)
    roles = operations.route_roles(route)
    st.dataframe(comparison, hide_index=True, width="stretch",
                 column_config={v: st.column_config.NumberColumn(
                     f"{v} ({', '.join(roles.get(v, []))})", format="%.3f") for v in compared})
    st.caption("Each version's own answers in the window (a shadow's included), judged against "
               "the policy's bands. The estimated rows use the calibrated probabilities only "
               "(before labels arrive); a challenger sees a different share of the traffic than the "
               "active version, a shadow the same requests.")

# --- operating threshold ----------------------------------------------------------------------------

THRESHOLD_WINDOWS = {"7 d": 7, "30 d": 30, "90 d": 90}


@st.cache_data(ttl=components.QUERY_TTL_S, show_spinner=False)
def study_for(db_path: str, models_dir_: str, version: str, start: datetime, end: datetime,
              target: float) -> operations.ThresholdStudy:
    return operations.threshold_study(components.store(), Path(models_dir_), version, start, end,
                                      target_sensitivity=target)


def tradeoff_chart(study: operations.ThresholdStudy) -> alt.LayerChart:
    """Sensitivity and specificity over the threshold, with the serving (solid) and proposed
    (dashed) thresholds."""
    curve = study.curve.melt(id_vars="threshold", var_name="measure", value_name="value")
    lines = alt.Chart(curve).mark_line(interpolate="step-after").encode(
        x=alt.X("threshold:Q", scale=alt.Scale(domain=[0, 1]), title="threshold on p_malignant"),
        y=alt.Y("value:Q", scale=alt.Scale(domain=[0, 1]), title=None),
        color=alt.Color("measure:N", scale=alt.Scale(domain=["sensitivity", "specificity"],
                                                     range=["#c62828", "#1f5f8b"]), title=None),
        tooltip=[alt.Tooltip("threshold:Q", format=".3f"), "measure:N",
                 alt.Tooltip("value:Q", format=".3f")])
    marks = pd.DataFrame([{"which": "serving", "threshold": study.current.threshold},
                          *([{"which": "proposed", "threshold": study.proposed.threshold}]
                            if study.proposed else [])])
    rules = alt.Chart(marks).mark_rule(strokeWidth=2, color="#1b2631").encode(
        x="threshold:Q", strokeDash=alt.StrokeDash("which:N", scale=alt.Scale(
            domain=["serving", "proposed"], range=[[1, 0], [5, 3]]), title=None),
        tooltip=["which:N", alt.Tooltip("threshold:Q", format=".3f")])
    return (lines + rules).properties(height=260)


st.subheader("Operating threshold")
st.caption("Sensitivity against specificity on each version's recent labelled answers. A new "
           "threshold is a serving configuration of the version (audited, reversible); its model "
           "card stays as trained.")
t_version, t_window, t_target = st.columns(3)
versions = [c.id for c in reversed(cards)]
tuned_version = t_version.selectbox("Version", versions, index=versions.index(route.active_version)
                                    if route.active_version in versions else 0,
                                    key="threshold_version")
days = THRESHOLD_WINDOWS[t_window.radio("Labelled answers of the last", list(THRESHOLD_WINDOWS),
                                        index=1, horizontal=True, key="threshold_window")]
target = t_target.number_input("Target sensitivity", 0.5, 1.0, 0.95, step=0.01, format="%.2f",
                               key="threshold_target")
end = components.now_floor()
try:
    study = study_for(str(components.settings().db_path), str(models_dir), tuned_version,
                      end - timedelta(days=days), end, target)
except SkinLesionError as err:
    study = None
    st.info(str(err))
if study is not None:
    serving_label = "tuned" if study.tuned else "card"
    c1, c2, c3 = st.columns(3)
    c1.metric(f"Serving threshold ({serving_label})", f"{study.current.threshold:.3f}",
              help=f"The model card's threshold is {study.card_threshold:.3f}.")
    c2.metric("Sensitivity → proposed", f"{study.current.sensitivity:.3f}",
              delta=f"{study.proposed.sensitivity - study.current.sensitivity:+.3f}")
    c3.metric("Specificity → proposed", f"{study.current.specificity:.3f}",
              delta=f"{study.proposed.specificity - study.current.specificity:+.3f}")
    st.altair_chart(tradeoff_chart(study), width="stretch")
    st.caption(f"{study.n:,} labelled answers of {study.version} ({study.current.n_malignant} "
               f"malignant). Proposed: threshold {study.proposed.threshold:.3f}, the largest "
               f"reaching sensitivity {target:.2f} on them.")
th_left, th_mid, th_right = st.columns(3)
with th_left:
    action_form(
        "apply_threshold", "Apply the proposed threshold",
        f"Serve {tuned_version} at the proposed threshold",
        lambda reason: operations.set_threshold(
            components.store(), models_dir, tuned_version, study.proposed.threshold,
            reason=reason, evidence=study.evidence(), **who()),
        help_text=(f"Threshold {study.proposed.threshold:.3f} for sensitivity ≥ {target:.2f}."
                   if study else "Needs enough labelled answers of this version."),
        disabled=study is None)
with th_mid:
    action_form(
        "set_threshold", "Set a threshold by hand", f"Serve {tuned_version} at this threshold",
        lambda reason, value: operations.set_threshold(components.store(), models_dir,
                                                       tuned_version, value, reason=reason,
                                                       **who()),
        extra=lambda: {"value": st.number_input("Threshold", 0.0, 1.0, 0.5, step=0.01,
                                                format="%.3f", key="set_threshold_value")})
with th_right:
    history = operations.threshold_history(components.store(), tuned_version)
    action_form(
        "revert_threshold", "Revert the threshold",
        f"Serve {tuned_version} at its previous threshold again",
        lambda reason: operations.revert_threshold(components.store(), models_dir, tuned_version,
                                                   reason=reason, **who()),
        help_text="Back to the threshold before the current one (the card's if it was tuned once).",
        disabled=history.empty)
if not history.empty:
    st.caption("Threshold changes of this version (empty threshold: the model card's)")
    st.dataframe(history, hide_index=True, width="stretch")

with st.expander("Route history"):
    history = queries.route_history(limit=50)
    st.dataframe(history, hide_index=True, width="stretch")
