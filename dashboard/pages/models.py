"""Models — for ML leads: the versions side by side with their cards, and the route actions
(fallback, restrict, rollback, activate/promote) through skinlesion.operations, each confirmed,
reasoned and audited. Everyone may look; the actions need the ml_lead role."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import streamlit as st

import components
from skinlesion import operations
from skinlesion.auth import can
from skinlesion.errors import SkinLesionError
from skinlesion.monitoring.cockpit import is_synthetic
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
table = operations.versions_table(cards, route)
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

with st.container(border=True):
    st.markdown("**Launch retraining**")
    schedule = components.policy().retraining.schedule
    active_card = by_id.get(route.active_version)
    due = (components.policy().retraining.next_due(datetime.fromisoformat(active_card.created))
           if active_card else None)
    st.button("Launch retraining", disabled=True, key="retrain",
              help="Retraining jobs arrive with the retraining-job system.")
    st.caption(f"Retraining jobs launched from here arrive with the retraining-job system. Until "
               f"then train on the server (`skinlesion train --data DIR`); the new version appears "
               f"above as a candidate to promote. Schedule: {schedule}"
               + (f", next due {due:%Y-%m-%d} for {route.active_version}." if due else "."))

with st.expander("Route history"):
    history = components.store_query("route_history", limit=50)
    st.dataframe(history, hide_index=True, width="stretch")
