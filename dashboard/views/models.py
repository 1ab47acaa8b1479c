"""Models — for ML leads: the versions side by side with their cards, the route actions (fallback,
restrict, rollback, activate/promote), retraining jobs and archiving, the A/B challenger and shadow,
and the operating threshold — each action confirmed, reasoned and audited through
skinlesion.lifecycle. Everyone may look; the actions need the ml_lead role. The features are in
``models_page/``, rendered here in order."""

from __future__ import annotations

import streamlit as st

import components
import queries
from models_page import experiments, retraining, route, threshold, versions
from models_page.view import FLASH, ModelsView
from skinlesion.registry import list_versions

user, _ = components.page_setup(
    "Models", caption="Model versions with their cards and metrics; switch the fallback, roll back, "
                      "promote a candidate. Every action asks for a reason and is audited.")
if FLASH in st.session_state:
    st.success(st.session_state.pop(FLASH), icon=":material/task_alt:")

models_dir = components.models_dir()
view = ModelsView(user=user, models_dir=models_dir, cards=list_versions(models_dir),
                  route=components.store().get_route())
for feature in (versions, route, retraining, experiments, threshold):
    feature.render(view)

with st.expander("Route history"):
    st.dataframe(queries.route_history(limit=50), hide_index=True, width="stretch")
