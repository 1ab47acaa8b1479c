"""The route actions of the red and yellow playbooks and of promotion: switch to the fallback (or
back), roll back, activate a version, restrict to clear cases."""

from __future__ import annotations

import streamlit as st

import components
from models_page.view import ModelsView, action_form
from skinlesion.auth import can
from skinlesion.lifecycle import operations


def fallback_form(view: ModelsView) -> None:
    route, store = view.route, components.store()
    if route.fallback_engaged:
        action_form("release_fallback", "Switch back from the fallback",
                    f"Answer with the active model {route.active_version} again",
                    lambda reason: operations.release_fallback(store, reason=reason, **view.who),
                    help_text=f"The fallback {route.fallback_version} answers every request now.")
        return
    fallbacks = operations.fallback_versions(view.models_dir)
    options = list(dict.fromkeys([*([route.fallback_version] if route.fallback_version else []),
                                  *reversed(fallbacks)]))
    action_form(
        "engage_fallback", "Switch to the fallback",
        "Answer every request with the rule-based fallback",
        lambda reason, version: operations.engage_fallback(
            store, view.models_dir, version=version, reason=reason, **view.who),
        help_text="The red playbook's measure: the simple model answers while the main one is "
                  "investigated.",
        extra=lambda: {"version": st.selectbox("Fallback version", options or ["none"],
                                               key="engage_fallback_version")
                       if options else None},
        disabled=not options)
    if not options:
        st.caption("No fallback version (kind fallback) in the models folder.")


def rollback_form(view: ModelsView) -> None:
    store = components.store()
    previous = operations.previous_active_version(store)
    action_form("rollback", "Roll back",
                f"Serve {previous} again instead of {view.route.active_version}",
                lambda reason: operations.rollback(store, view.models_dir, reason=reason,
                                                   **view.who),
                help_text=f"Back to the version active before the current one: **{previous}**."
                if previous else "No earlier active version in the route history.",
                disabled=previous is None)


def activate_form(view: ModelsView) -> None:
    candidates = [c.id for c in reversed(view.cards) if c.id != view.route.active_version]
    action_form(
        "activate", "Activate / promote",
        "Serve the chosen version to every patient",
        lambda reason, version: operations.activate(components.store(), view.models_dir, version,
                                                    reason=reason, **view.who),
        help_text="A candidate becomes the active model (a challenger or shadow slot it held is "
                  "emptied). Compare its card above first.",
        extra=lambda: {"version": st.selectbox("Version", candidates or ["none"],
                                               key="activate_version")},
        disabled=not candidates)


def restrict_form(view: ModelsView) -> None:
    restricted = view.route.restricted_to_clear_cases
    action_form("restrict", "Lift the restriction" if restricted else "Restrict to clear cases",
                "Refer every case that is not clearly benign" if not restricted
                else "Answer every case normally again",
                lambda reason: operations.restrict(components.store(), not restricted,
                                                   reason=reason, **view.who),
                help_text="While restricted, only clearly benign answers are returned as "
                          "'no referral'; everything else is referred.")


def render(view: ModelsView) -> None:
    st.subheader("Actions")
    if not can(view.user.role, operations.ROUTE_ACTION):
        st.info(f"Model actions (route, threshold, A/B and shadow tests, retraining) need the "
                f"ml_lead role; you are signed in as {view.user.role}, so they are not shown.",
                icon=":material/lock:")
    left, right = st.columns(2)
    with left:
        fallback_form(view)
        rollback_form(view)
    with right:
        activate_form(view)
        restrict_form(view)
