"""Alerts & audit — the monitor's open and past alerts (raised by `skinlesion monitor`), closing one
by hand (ml_lead, audited), and the append-only audit log of operator actions, filterable by actor,
action and time."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

import components
import queries
from skinlesion.lifecycle import operations
from skinlesion.errors import SkinLesionError

_FLASH = "alerts_flash"
ALERT_COLUMNS = ["status", "metric", "scope", "message", "opened_at", "last_seen_at", "resolved_at",
                 "last_event", "notified"]
ALL = "all"

user, _ = components.page_setup(
    "Alerts & audit", caption="Alerts raised by the monitor and every operator action: who, when, "
                              "what and why.")
start, end, label = components.window_selector()
# a window ending now stays open-ended, so an action taken seconds ago is listed too
until = None if end >= components.now_floor() else end
if _FLASH in st.session_state:
    st.success(st.session_state.pop(_FLASH), icon=":material/task_alt:")


def alert_table(frame: pd.DataFrame) -> pd.DataFrame:
    table = frame.loc[:, ALERT_COLUMNS].copy()
    table["status"] = [components.status_text(s) for s in table["status"]]
    # alerts on simulated data (the demo's) say so in their message and here in a column
    simulated = [bool(d.get("simulated")) for d in frame["details"]]
    if any(simulated):
        table.insert(0, "simulated", simulated)
    return table


time_columns = {c: st.column_config.DatetimeColumn(c.replace("_", " "), format="YYYY-MM-DD HH:mm")
                for c in ("opened_at", "last_seen_at", "resolved_at", "ts")}

# --- alerts -----------------------------------------------------------------------------------------

st.subheader("Open alerts")
open_alerts = components.store().open_alerts()
if not open_alerts:
    st.success("No open alerts.", icon=":material/check_circle:")
else:
    open_frame = pd.DataFrame([a.model_dump() for a in open_alerts])
    st.dataframe(alert_table(open_frame), hide_index=True, width="stretch",
                 column_config=time_columns, key="alerts_open")
    with st.expander("Close an alert by hand (ml_lead)"):
        st.caption("For a false alarm, or once the cause is fixed. The monitor opens a new alert on "
                   "its next run if the metric is still out of bounds.")
        with st.form("resolve_alert"):
            names = {a.id: f"{a.status} · {a.key} · {a.message}" for a in open_alerts}
            alert_id = st.selectbox("Alert", list(names), format_func=names.get,
                                    key="resolve_alert_id")
            reason = st.text_area("Reason (audited)", key="resolve_alert_reason", height=68)
            confirmed = st.checkbox("Close this alert", key="resolve_alert_confirm")
            submitted = st.form_submit_button("Close alert", type="primary",
                                              key="resolve_alert_submit")
        if submitted:
            if not confirmed:
                st.error("Tick the confirmation first.")
            else:
                try:
                    closed = operations.resolve_alert(components.store(), alert_id,
                                                      actor=user.name, role=user.role,
                                                      reason=reason)
                except SkinLesionError as err:
                    st.error(str(err))
                else:
                    components.clear_caches()
                    st.session_state[_FLASH] = f"Alert {closed.key} closed."
                    st.rerun()

st.subheader(f"Past alerts — {label}")
past = queries.alerts(start, until, include_resolved=True)
past = past[past["resolved_at"].notna()]
if past.empty:
    st.caption("No alert was resolved in this window.")
else:
    st.dataframe(alert_table(past), hide_index=True, width="stretch", column_config=time_columns,
                 key="alerts_past")

# --- audit log --------------------------------------------------------------------------------------

st.subheader(f"Audit log — {label}")
everything = queries.audit(start, until)
left, right = st.columns(2)
actor = left.selectbox("Actor", [ALL, *sorted(everything["actor"].unique())], key="audit_actor")
action = right.selectbox("Action", [ALL, *sorted(everything["action"].unique())], key="audit_action")
audit = queries.audit(start, until, actor=None if actor == ALL else actor,
                      action=None if action == ALL else action)
if audit.empty:
    st.caption("No operator action matches.")
else:
    shown = audit.assign(
        operation=[d.get("operation", "") for d in audit["details"]],
        details=[json.dumps(d, default=str, sort_keys=True) for d in audit["details"]])
    st.dataframe(shown[["ts", "actor", "role", "action", "operation", "target", "reason", "details",
                        "id"]], hide_index=True, width="stretch", column_config=time_columns,
                 key="audit_table")
    st.download_button("Download as CSV", shown.to_csv(index=False).encode(), "audit.csv",
                       "text/csv", key="audit_download")
