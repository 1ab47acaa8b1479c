"""What the Models page's features share: the state they render (:class:`ModelsView`) and the form
every route change goes through (:func:`action_form`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

import components
from skinlesion.auth import User, can
from skinlesion.errors import SkinLesionError
from skinlesion.lifecycle.operations import ROUTE_ACTION
from skinlesion.registry import ModelCard
from skinlesion.store import AuditEntry, ServingRoute

#: session key of the message shown once after an action succeeded and the page reloaded
FLASH = "models_flash"


@dataclass(frozen=True)
class ModelsView:
    """The signed-in user, the models folder, its versions (oldest first) and the route."""

    user: User
    models_dir: Path
    cards: list[ModelCard]
    route: ServingRoute

    @property
    def by_id(self) -> dict[str, ModelCard]:
        return {card.id: card for card in self.cards}

    @property
    def who(self) -> dict[str, str]:
        """The acting user as the library's actions take it."""
        return {"actor": self.user.name, "role": self.user.role}


def may_act() -> bool:
    """Whether the signed-in person may take model actions (the ml_lead role)."""
    user = components.current_user()
    return user is not None and can(user.role, ROUTE_ACTION)


def action_form(key: str, title: str, confirm_text: str, run: Callable[..., AuditEntry], *,
                help_text: str = "", extra: Callable[[], dict[str, Any]] | None = None,
                disabled: bool = False) -> None:
    """A form asking for a reason and a confirmation before ``run(reason, **extra())`` changes the
    route; the outcome is shown, and the page reloads with the new route on success. Not drawn for
    a role that may not take model actions (:func:`may_act` says why, once per page)."""
    if not may_act():
        return
    with st.form(key):
        st.markdown(f"**{title}**")
        if help_text:
            st.caption(help_text)
        values = extra() if extra else {}
        reason = st.text_area("Reason (audited)", key=f"{key}_reason", height=68)
        confirmed = st.checkbox(confirm_text, key=f"{key}_confirm")
        # the library checks the role again when it runs
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
    st.session_state[FLASH] = f"{title}: done (audit entry {entry.id[:8]}, {entry.ts:%Y-%m-%d %H:%M} UTC)."
    st.rerun()
