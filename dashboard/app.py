"""The skinlesion cockpit: ``skinlesion dashboard`` (or ``streamlit run dashboard/app.py``).

Signs the person in, then offers the pages their role may open (skinlesion.auth.PERMISSIONS):
monitoring (Overview, Performance, Drift, Operations) for everyone, Predict and Review & labels for
clinicians and ML leads, Models and Alerts & audit for everyone (their actions check the role
again). Each page is a thin script in ``views/`` built on ``components``.
"""

from __future__ import annotations

import streamlit as st

import components
from skinlesion.auth import can

st.set_page_config(page_title="skinlesion cockpit", page_icon=":material/dermatology:", layout="wide")

#: (section, file, title, icon, the action a role needs to open it)
PAGES: tuple[tuple[str, str, str, str, str], ...] = (
    ("Monitoring", "views/overview.py", "Overview", ":material/monitor_heart:", "view"),
    ("Monitoring", "views/performance.py", "Performance", ":material/query_stats:", "view"),
    ("Monitoring", "views/drift.py", "Drift", ":material/ssid_chart:", "view"),
    ("Monitoring", "views/operations.py", "Operations", ":material/speed:", "view"),
    ("Clinic", "views/predict.py", "Predict", ":material/add_a_photo:", "predict"),
    ("Clinic", "views/review.py", "Review & labels", ":material/rate_review:", "label"),
    ("Governance", "views/models.py", "Models", ":material/model_training:", "view"),
    ("Governance", "views/alerts.py", "Alerts & audit", ":material/notifications:", "view"),
)

# The navigation is declared on every run, signed in or not, so the page a link names (its URL
# path, e.g. /alerts) is resolved on the very first run and kept through the sign-in form's reruns;
# before sign-in it lists every page, hidden, and the form stands in for the page.
user = components.signed_in_user()
sections: dict[str, list[st.Page]] = {}
for section, path, title, icon, action in PAGES:
    if user is None or can(user.role, action):
        sections.setdefault(section, []).append(
            st.Page(path, title=title, icon=icon, default=path == "views/overview.py"))
navigation = st.navigation(sections, position="sidebar" if user else "hidden")
if user is None:
    components.sign_in()  # the form; stops the run (a successful sign-in reruns the same page)
components.restore_link()  # a link opened before signing in keeps its window (?window=...)
navigation.run()
