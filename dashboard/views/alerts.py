"""Alerts & audit — the monitor's open and past alerts (raised by `skinlesion monitor`); what ML leads
do about them (acknowledge, silence for a while with a reason, assign, close — each audited; other
roles see why the controls are not theirs); an incident's timeline from opened through the actions
taken to resolved; and the append-only audit log of operator actions, in words."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import streamlit as st

import components
import queries
from skinlesion.auth import ROLES, can
from skinlesion.display import ROLES as ROLE_NAMES
from skinlesion.display import (MISSING, action_name, audit_action, details_sentence, in_words,
                                metric_name)
from skinlesion.errors import SkinLesionError
from skinlesion.lifecycle import operations
from skinlesion.monitoring import alerts as alerting
from skinlesion.records import now

_FLASH = "alerts_flash"
ALL = "all"
#: silence lengths offered (label -> duration)
SILENCES = {"1 hour": timedelta(hours=1), "4 hours": timedelta(hours=4),
            "until tomorrow (24 h)": timedelta(hours=24), "3 days": timedelta(days=3),
            "1 week": timedelta(days=7)}
TIME = components.TIME_COLUMN
WIDE = st.column_config.TextColumn(width="large")

user, _ = components.page_setup(
    "Alerts & audit", caption="Alerts raised by the monitor and every operator action: who, when, "
                              "what and why.")
start, end, label = components.window_selector()
# a window ending now stays open-ended, so an action taken seconds ago is listed too
until = None if end >= components.now_floor() else end
if _FLASH in st.session_state:
    st.success(st.session_state.pop(_FLASH), icon=":material/task_alt:")


def alert_table(frame: pd.DataFrame, states: dict[str, alerting.AlertState]) -> pd.DataFrame:
    """Alerts in words: status, metric, window, message, times, and what operators did."""
    state = [states.get(i, alerting.AlertState()) for i in frame["id"]]
    table = pd.DataFrame({
        "Status": [components.status_text(s) for s in frame["status"]],
        "Metric": [metric_name(m) for m in frame["metric"]],
        "Window": frame["scope"], "Message": [in_words(m) for m in frame["message"]],
        "Opened (UTC)": frame["opened_at"], "Last seen (UTC)": frame["last_seen_at"],
        "Resolved (UTC)": frame["resolved_at"],
        "Acknowledged by": [s.acknowledged_by or MISSING for s in state],
        "Silenced until (UTC)": [s.silenced_until for s in state],
        "Assigned to": [s.assignee or MISSING for s in state]})
    # alerts on simulated data (the demo's) say so in their message and here in a column
    simulated = [bool(d.get("simulated")) for d in frame["details"]]
    if any(simulated):
        table.insert(0, "Simulated", simulated)
    return table


def _act(do, done: str) -> None:
    """Run one audited alert action; flash ``done`` or show the refusal."""
    try:
        do()
    except SkinLesionError as err:
        st.error(str(err))
    else:
        components.clear_caches()
        st.session_state[_FLASH] = done
        st.rerun()


COLUMNS = {c: TIME for c in ("Opened (UTC)", "Last seen (UTC)", "Resolved (UTC)",
                             "Silenced until (UTC)", "When (UTC)")} | {"Message": WIDE,
                                                                      "Why": WIDE, "Details": WIDE}

# --- open alerts and what to do about them ----------------------------------------------------------

st.subheader("Open alerts")
open_alerts = components.store().open_alerts()
states = alerting.alert_states(queries.alert_actions(tuple(a.id for a in open_alerts)), now())
if not open_alerts:
    st.success("No open alerts.", icon=":material/check_circle:")
else:
    open_frame = pd.DataFrame([a.model_dump() for a in open_alerts])
    st.dataframe(alert_table(open_frame, states), hide_index=True, width="stretch",
                 column_config=COLUMNS, key="alerts_open")
    names = {a.id: f"{a.status} · {metric_name(a.metric)} ({a.scope}) · {in_words(a.message)}"
             for a in open_alerts}
    if not can(user.role, "manage_alerts"):
        allowed = " or ".join(r for r in ROLES if can(r, "manage_alerts"))
        st.info(f"Acknowledging, silencing, assigning and closing alerts needs the {allowed} role; "
                f"you are signed in as {user.role}.", icon=":material/lock:")
    else:
        alert_id = st.selectbox("Alert", list(names), format_func=names.get, key="alert_pick")
        ack, mute, owner, close = st.tabs(["Acknowledge", "Silence", "Assign", "Close"])
        with ack, st.form("ack_alert"):
            note = st.text_input("Note (optional, audited)", key="ack_note")
            if st.form_submit_button("Acknowledge", type="primary", key="ack_submit"):
                _act(lambda: alerting.acknowledge(components.store(), alert_id, actor=user.name,
                                                  role=user.role, note=note),
                     "Alert acknowledged.")
        with mute, st.form("silence_alert"):
            st.caption("No notifications while silenced; the alert stays open and shown here.")
            length = st.selectbox("For", list(SILENCES), key="silence_for")
            reason = st.text_input("Reason (required, audited)", key="silence_reason")
            if st.form_submit_button("Silence", type="primary", key="silence_submit"):
                _act(lambda: alerting.silence(components.store(), alert_id, actor=user.name,
                                              role=user.role, duration=SILENCES[length],
                                              reason=reason),
                     f"Alert silenced for {length}.")
        with owner, st.form("assign_alert"):
            assignee = st.text_input("Assign to (user name)", key="assign_to")
            if st.form_submit_button("Assign", type="primary", key="assign_submit"):
                _act(lambda: alerting.assign(components.store(), alert_id, actor=user.name,
                                             role=user.role, assignee=assignee),
                     f"Alert assigned to {assignee.strip()}.")
        with close, st.form("resolve_alert"):
            st.caption("For a false alarm, or once the cause is fixed. The monitor opens a new alert "
                       "on its next run if the metric is still out of bounds.")
            reason = st.text_area("Reason (audited)", key="resolve_alert_reason", height=68)
            confirmed = st.checkbox("Close this alert", key="resolve_alert_confirm")
            if st.form_submit_button("Close alert", type="primary", key="resolve_alert_submit"):
                if not confirmed:
                    st.error("Tick the confirmation first.")
                else:
                    _act(lambda: operations.resolve_alert(components.store(), alert_id,
                                                          actor=user.name, role=user.role,
                                                          reason=reason),
                         "Alert closed.")

st.subheader(f"Past alerts — {label}")
past = queries.alerts(start, until, include_resolved=True)
past = past[past["resolved_at"].notna()]
past_states = alerting.alert_states(queries.alert_actions(tuple(past["id"])), now())
if past.empty:
    st.caption("No alert was resolved in this window.")
else:
    st.dataframe(alert_table(past, past_states), hide_index=True, width="stretch",
                 column_config=COLUMNS, key="alerts_past")

# --- incident timeline ------------------------------------------------------------------------------

everything = queries.audit(start, until)
incidents = [*open_alerts, *(components.store().get_alert(i) for i in past["id"])]
if incidents:
    st.subheader("Incident timeline")
    picked = st.selectbox("Incident", [a.id for a in incidents], key="timeline_pick",
                          format_func={a.id: f"{metric_name(a.metric)} ({a.scope}) opened "
                                             f"{a.opened_at:%Y-%m-%d %H:%M} UTC"
                                       for a in incidents}.get)
    incident = next(a for a in incidents if a.id == picked)
    events = alerting.incident_timeline(incident, queries.alert_actions((incident.id,)),
                                        queries.audit(incident.opened_at, None).to_dict("records"))
    st.dataframe(pd.DataFrame({"When (UTC)": [e.ts for e in events],
                               "What": [e.what for e in events],
                               "Who": [e.who or "monitor" for e in events],
                               "Why": [in_words(e.why) or MISSING for e in events]}),
                 hide_index=True, width="stretch", column_config=COLUMNS, key="timeline")

# --- audit log --------------------------------------------------------------------------------------

st.subheader(f"Audit log — {label}")
left, right = st.columns(2)
actor = left.selectbox("Who", [ALL, *sorted(everything["actor"].unique())], key="audit_actor")
action = right.selectbox("Action", [ALL, *sorted(everything["action"].unique())], key="audit_action",
                         format_func=lambda a: "all actions" if a == ALL else action_name(a))
audit = queries.audit(start, until, actor=None if actor == ALL else actor,
                      action=None if action == ALL else action)
if audit.empty:
    st.caption("No operator action matches.")
else:
    shown = pd.DataFrame({
        "When (UTC)": audit["ts"], "Who": audit["actor"],
        "Role": [ROLE_NAMES.get(r, r) for r in audit["role"]],
        "What": [audit_action(a, d) for a, d in zip(audit["action"], audit["details"], strict=True)],
        "On": audit["target"].fillna(MISSING), "Why": audit["reason"].replace("", MISSING),
        "Details": [details_sentence(d) for d in audit["details"]]})
    st.dataframe(shown, hide_index=True, width="stretch", column_config=COLUMNS,
                 key="audit_table")
    st.download_button("Download as CSV", audit.to_csv(index=False).encode(), "audit.csv",
                       "text/csv", key="audit_download")
