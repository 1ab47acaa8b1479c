"""The skinlesion cockpit: ``skinlesion dashboard`` (or ``streamlit run dashboard/app.py``).

Signs the person in, then offers the pages their role may open (skinlesion.auth.PERMISSIONS):
monitoring (Overview, Performance, Drift, Operations) for everyone, Predict and Review & labels for
clinicians and ML leads, Models and Alerts & audit for everyone (their actions check the role
again). Each page is a thin script in ``pages/`` built on ``components``.
"""

from __future__ import annotations

import streamlit as st

import components
from skinlesion.auth import can

st.set_page_config(page_title="skinlesion cockpit", page_icon=":material/dermatology:", layout="wide")

#: (section, file, title, icon, the action a role needs to open it)
PAGES: tuple[tuple[str, str, str, str, str], ...] = (
    ("Monitoring", "pages/overview.py", "Overview", ":material/monitor_heart:", "view"),
    ("Monitoring", "pages/performance.py", "Performance", ":material/query_stats:", "view"),
    ("Monitoring", "pages/drift.py", "Drift", ":material/ssid_chart:", "view"),
    ("Monitoring", "pages/operations.py", "Operations", ":material/speed:", "view"),
    ("Clinic", "pages/predict.py", "Predict", ":material/add_a_photo:", "predict"),
    ("Clinic", "pages/review.py", "Review & labels", ":material/rate_review:", "label"),
    ("Governance", "pages/models.py", "Models", ":material/model_training:", "view"),
    ("Governance", "pages/alerts.py", "Alerts & audit", ":material/notifications:", "view"),
)

user = components.sign_in()
sections: dict[str, list[st.Page]] = {}
for section, path, title, icon, action in PAGES:
    if can(user.role, action):
        sections.setdefault(section, []).append(
            st.Page(path, title=title, icon=icon, default=path == "pages/overview.py"))
navigation = st.navigation(sections)
components.restore_link()  # a link opened before signing in keeps its window (?window=...)
navigation.run()
