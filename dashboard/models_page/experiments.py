"""A/B test and shadow: start, change or stop a challenger (a share of the requests) and a shadow
(every request, never returned), and compare them with the active version on their own answers."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import streamlit as st

import components
from models_page.view import ModelsView, action_form
from skinlesion.lifecycle import operations
from skinlesion.monitoring.cockpit import compare_versions, comparison_versions

COMPARE_WINDOWS = {"24 h": timedelta(hours=24), "7 d": timedelta(days=7), "30 d": timedelta(days=30)}


@st.cache_data(ttl=components.SLOW_TTL_S, show_spinner="Comparing the versions…")
def version_comparison(db_path: str, models_dir_: str, start: datetime, end: datetime,
                       versions: tuple[str, ...], drift: bool) -> pd.DataFrame:
    return compare_versions(components.store(), Path(models_dir_), components.policy(), start, end,
                            list(versions), drift=drift)


def challenger_forms(view: ModelsView, others: list[str]) -> None:
    route, store = view.route, components.store()
    if route.challenger_version:
        st.markdown(f"Challenger **{route.challenger_version}** answers "
                    f"**{route.challenger_share:.0%}** of the requests.")
        action_form("stop_challenger", "Stop the A/B test",
                    f"Answer every request with {route.active_version} again",
                    lambda reason: operations.stop_challenger(store, reason=reason, **view.who))
    challengers = [v for v in others if v != route.shadow_version]
    action_form(
        "start_challenger", "Start or change the A/B test",
        "Send the chosen share of the requests to the challenger",
        lambda reason, version, share: operations.start_challenger(
            store, view.models_dir, version, share, reason=reason, **view.who),
        extra=lambda: {
            "version": st.selectbox("Challenger", challengers or ["none"],
                                    key="start_challenger_version"),
            "share": st.slider("Share of the requests", 0.01, 0.99,
                               value=route.challenger_share or 0.1, step=0.01,
                               key="start_challenger_share")},
        disabled=not challengers)


def shadow_forms(view: ModelsView, others: list[str]) -> None:
    route, store = view.route, components.store()
    if route.shadow_version:
        st.markdown(f"Shadow **{route.shadow_version}** answers every request (not returned).")
        action_form("stop_shadow", "Stop the shadow", f"Stop {route.shadow_version}'s shadow answers",
                    lambda reason: operations.stop_shadow(store, reason=reason, **view.who))
    shadows = [v for v in others if v not in (route.challenger_version, route.shadow_version)]
    action_form(
        "start_shadow", "Start the shadow", "Answer every request with it too, logged only",
        lambda reason, version: operations.start_shadow(store, view.models_dir, version,
                                                        reason=reason, **view.who),
        extra=lambda: {"version": st.selectbox("Shadow", shadows or ["none"],
                                               key="start_shadow_version")},
        disabled=not shadows)


def comparison(view: ModelsView) -> None:
    """The active version and its challenger/shadow side by side on their answers in a window."""
    compared = comparison_versions(view.route)
    if len(compared) < 2:
        st.info("No challenger or shadow: start one above to compare it with the active version "
                "here.")
        return
    left, right = st.columns([2, 1])
    span = left.radio("Compare over the last", list(COMPARE_WINDOWS), index=1, horizontal=True,
                      key="models_compare_window")
    with_drift = right.checkbox("With data drift (slower)", key="models_compare_drift")
    end = components.now_floor()
    table = version_comparison(components.settings().store_url, str(view.models_dir),
                               end - COMPARE_WINDOWS[span], end, tuple(compared), with_drift)
    roles = operations.route_roles(view.route)
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={v: st.column_config.NumberColumn(
                     f"{v} ({', '.join(roles.get(v, []))})", format="%.3f") for v in compared})
    st.caption("Each version's own answers in the window (a shadow's included), judged against "
               "the policy's bands. The estimated rows use the calibrated probabilities only "
               "(before labels arrive); a challenger sees a different share of the traffic than the "
               "active version, a shadow the same requests.")


def render(view: ModelsView) -> None:
    st.subheader("A/B test and shadow")
    st.caption("A challenger answers a share of the requests (the same image always by the same "
               "model); a shadow answers every request in the background, logged but never "
               "returned. Compare them with the active version below before promoting one.")
    archived = set(components.store().archived_versions())
    others = [c.id for c in reversed(view.cards)
              if c.id != view.route.active_version and c.id not in archived]
    left, right = st.columns(2)
    with left:
        challenger_forms(view, others)
    with right:
        shadow_forms(view, others)
    comparison(view)
