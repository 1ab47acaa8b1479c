"""Drift — are today's cases like the ones the model was validated on? The drift score over time,
which features drifted in the sidebar's window (and by how much), the reference and current
distributions of a chosen feature, and Evidently's full report on demand."""

import tempfile
from datetime import timedelta
from pathlib import Path

import altair as alt
import streamlit as st
import streamlit.components.v1 as embed

import components
import queries
from skinlesion.errors import DataError
from skinlesion.monitoring.cockpit import distribution_frame, drift_report, drift_table
from skinlesion.monitoring.health import DRIFT_METRIC

HISTORY = {"30 d": timedelta(days=30), "90 d": timedelta(days=90), "1 y": timedelta(days=365)}
#: Evidently's report of the last request, kept per browser session: (window key, html).
_REPORT_KEY = "drift_report_html"

_, filters = components.page_setup("Drift", filters=True)
policy = components.policy()

# 1. the drift score over time
left, right = st.columns([1, 1])
left.subheader("Data-drift score over time")
span = right.radio("History", list(HISTORY), horizontal=True, key="drift_history")
history = queries.snapshots(filters.end - HISTORY[span], filters.end, metric=DRIFT_METRIC,
                            model_version=filters.model_version)
if history.empty:
    st.info("No monitoring snapshots with a drift score in this period yet (`skinlesion monitor`).")
else:
    for window, rows in history.groupby("window_name"):
        st.altair_chart(components.history_chart(
            rows, DRIFT_METRIC, policy.thresholds.get(DRIFT_METRIC),
            title=f"Share of drifted features, {window} windows"), width="stretch")

# 2. this window, feature by feature
health = components.window_health(filters)
st.subheader(f"Features — {filters.label}")
if health.drift is None:
    st.info(f"No drift for this window: {health.drift_skipped}.")
    st.stop()
result = health.drift
table = drift_table(result)
score = health.report.metrics[DRIFT_METRIC]
st.markdown(f"{components.badge(score.status.value)} **{int(table['drifted'].sum())} of "
            f"{int(table['severity'].notna().sum())} tested features drifted** "
            f"(score {components.fmt(score.value)}; {policy.thresholds[DRIFT_METRIC].describe()}) — "
            f"{result.n_current:,} answers against {result.n_reference:,} reference answers of "
            f"{health.reference_version}.")
bars = alt.Chart(table.dropna(subset=["severity"])).mark_bar().encode(
    x=alt.X("severity:Q", title="how far past its threshold (1 = at the threshold)"),
    y=alt.Y("feature:N", sort="-x", title=None),
    color=alt.Color("drifted:N", scale=alt.Scale(domain=[False, True],
                                                  range=[components.STATUS_HEX["green"],
                                                         components.STATUS_HEX["red"]])),
    tooltip=["feature:N", "group:N", "test:N", alt.Tooltip("score:Q", format=".4g"),
             alt.Tooltip("threshold:Q", format=".4g"), "drifted:N"])
rule = alt.Chart().mark_rule(strokeDash=[4, 3]).encode(x=alt.datum(1.0))
st.altair_chart(alt.layer(bars, rule), width="stretch")
st.dataframe(table, hide_index=True, width="stretch",
             column_config={"score": st.column_config.NumberColumn(format="%.4g"),
                            "threshold": st.column_config.NumberColumn(format="%.4g"),
                            "severity": st.column_config.NumberColumn(format="%.2f")})
for note in result.notes:
    st.caption(note)

# 3. one feature's distributions
names = table["feature"].tolist()
feature = result.feature(st.selectbox("Reference vs current distribution of", names, key="drift_feature"))
dist = distribution_frame(feature)
if dist.empty:
    st.info(f"{feature.name}: no distribution to show ({feature.note or 'one side has no values'}).")
elif "category" in dist:
    st.altair_chart(alt.Chart(dist).mark_bar().encode(
        x=alt.X("category:N", title=None, sort=None), xOffset="side:N",
        y=alt.Y("share:Q", axis=alt.Axis(format="%"), title="share"),
        color=alt.Color("side:N", scale=alt.Scale(domain=["reference", "current"],
                                                   range=["#85929e", "#1f5f8b"])),
        tooltip=["side:N", "category:N", alt.Tooltip("share:Q", format=".1%")]), width="stretch")
else:
    st.altair_chart(alt.Chart(dist).mark_rect(opacity=0.55).encode(
        x=alt.X("x0:Q", title=feature.name + (" (distance to the reference mean)"
                                               if feature.kind == "embedding" else "")),
        x2="x1:Q", y=alt.Y("density:Q", stack=None), y2=alt.datum(0),
        color=alt.Color("side:N", scale=alt.Scale(domain=["reference", "current"],
                                                   range=["#85929e", "#1f5f8b"])),
        tooltip=["side:N", alt.Tooltip("x0:Q", format=".4g"), alt.Tooltip("x1:Q", format=".4g"),
                 alt.Tooltip("density:Q", format=".3g")]), width="stretch")
st.caption(f"{feature.name}: {feature.stattest or 'not tested'} = {components.fmt(feature.score)} "
           f"(threshold {components.fmt(feature.threshold)}) — "
           f"{'drifted' if feature.drifted else 'no drift'}. {feature.note}")

# 4. Evidently's full report, on demand (it takes a few seconds)
st.subheader("Full report")
window_key = (filters.start, filters.end, filters.model_version)
if st.button("Build Evidently's data-drift report", key="drift_build_report"):
    with st.spinner("Building the report…"), tempfile.TemporaryDirectory() as tmp:
        try:
            path = drift_report(components.store(), components.models_dir(), filters.start,
                                filters.end, Path(tmp) / "drift.html",
                                model_version=filters.model_version)
        except DataError as err:
            st.error(str(err))
        else:
            st.session_state[_REPORT_KEY] = (window_key, path.read_text(encoding="utf-8"))
saved = st.session_state.get(_REPORT_KEY)
if saved is not None and saved[0] == window_key:
    html = saved[1]
    st.download_button("Download the report (HTML)", html, file_name="skinlesion-drift-report.html",
                       mime="text/html", key="drift_download_report")
    embed.html(html, height=900, scrolling=True)
