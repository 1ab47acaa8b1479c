"""The operating threshold: sensitivity against specificity on a version's recent labelled answers,
the threshold proposed for a target sensitivity, and setting, applying or reverting it (a serving
configuration in the route, audited; the model card stays as trained)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import streamlit as st

import charts
import components
from models_page.view import ModelsView, action_form
from skinlesion.errors import SkinLesionError
from skinlesion.lifecycle import operations

THRESHOLD_WINDOWS = {"7 d": 7, "30 d": 30, "90 d": 90}


@st.cache_data(ttl=components.QUERY_TTL_S, show_spinner=False)
def study_for(db_path: str, models_dir_: str, version: str, start: datetime, end: datetime,
              target: float) -> operations.ThresholdStudy:
    return operations.threshold_study(components.store(), Path(models_dir_), version, start, end,
                                      target_sensitivity=target)


def show_study(study: operations.ThresholdStudy, target: float) -> None:
    serving_label = "tuned" if study.tuned else "card"
    c1, c2, c3 = st.columns(3)
    c1.metric(f"Serving threshold ({serving_label})", f"{study.current.threshold:.3f}",
              help=f"The model card's threshold is {study.card_threshold:.3f}.")
    c2.metric("Sensitivity → proposed", f"{study.current.sensitivity:.3f}",
              delta=f"{study.proposed.sensitivity - study.current.sensitivity:+.3f}")
    c3.metric("Specificity → proposed", f"{study.current.specificity:.3f}",
              delta=f"{study.proposed.specificity - study.current.specificity:+.3f}")
    st.plotly_chart(charts.threshold_figure(
        study.curve, study.current.threshold,
        study.proposed.threshold if study.proposed else None), width="stretch",
        key="threshold_tradeoff")
    st.caption(f"{study.n:,} labelled answers of {study.version} ({study.current.n_malignant} "
               f"malignant). Proposed: threshold {study.proposed.threshold:.3f}, the largest "
               f"reaching sensitivity {target:.2f} on them.")


def threshold_forms(view: ModelsView, version: str, study: operations.ThresholdStudy | None,
                    target: float) -> pd.DataFrame:
    """Apply the proposal, set a threshold by hand, revert; returns the version's threshold
    history."""
    store, models_dir, who = components.store(), view.models_dir, view.who
    left, mid, right = st.columns(3)
    with left:
        action_form(
            "apply_threshold", "Apply the proposed threshold",
            f"Serve {version} at the proposed threshold",
            lambda reason: operations.set_threshold(
                store, models_dir, version, study.proposed.threshold, reason=reason,
                evidence=study.evidence(), **who),
            help_text=(f"Threshold {study.proposed.threshold:.3f} for sensitivity ≥ {target:.2f}."
                       if study else "Needs enough labelled answers of this version."),
            disabled=study is None)
    with mid:
        action_form(
            "set_threshold", "Set a threshold by hand", f"Serve {version} at this threshold",
            lambda reason, value: operations.set_threshold(store, models_dir, version, value,
                                                           reason=reason, **who),
            extra=lambda: {"value": st.number_input("Threshold", 0.0, 1.0, 0.5, step=0.01,
                                                    format="%.3f", key="set_threshold_value")})
    with right:
        history = operations.threshold_history(store, version)
        action_form(
            "revert_threshold", "Revert the threshold",
            f"Serve {version} at its previous threshold again",
            lambda reason: operations.revert_threshold(store, models_dir, version, reason=reason,
                                                       **who),
            help_text="Back to the threshold before the current one (the card's if it was tuned "
                      "once).",
            disabled=history.empty)
    return history


def render(view: ModelsView) -> None:
    st.subheader("Operating threshold")
    st.caption("Sensitivity against specificity on each version's recent labelled answers. A new "
               "threshold is a serving configuration of the version (audited, reversible); its "
               "model card stays as trained.")
    t_version, t_window, t_target = st.columns(3)
    versions = [c.id for c in reversed(view.cards)]
    active = view.route.active_version
    version = t_version.selectbox("Version", versions,
                                  index=versions.index(active) if active in versions else 0,
                                  key="threshold_version")
    days = THRESHOLD_WINDOWS[t_window.radio("Labelled answers of the last", list(THRESHOLD_WINDOWS),
                                            index=1, horizontal=True, key="threshold_window")]
    target = t_target.number_input("Target sensitivity", 0.5, 1.0, 0.95, step=0.01, format="%.2f",
                                   key="threshold_target")
    end = components.now_floor()
    try:
        study = study_for(components.settings().store_url, str(view.models_dir), version,
                          end - timedelta(days=days), end, target)
    except SkinLesionError as err:
        study = None
        st.info(str(err))
    if study is not None:
        show_study(study, target)
    history = threshold_forms(view, version, study, target)
    if not history.empty:
        st.caption("Threshold changes of this version (empty threshold: the model card's)")
        st.dataframe(history, hide_index=True, width="stretch")
