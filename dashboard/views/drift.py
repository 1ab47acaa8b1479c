"""Drift — are today's cases like the ones the model was validated on? The drift score over time,
which features drifted in the sidebar's window (and by how much), the reference and current
distributions of a chosen feature, performance and drift by segment (site, age band, sex, source),
and Evidently's full report, shown in the page and downloadable."""

import tempfile
from datetime import timedelta
from pathlib import Path

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
import streamlit.components.v1 as embed

import charts
import components
import queries
from skinlesion.display import feature_name
from skinlesion.errors import DataError
from skinlesion.monitoring.cockpit import distribution_frame, drift_report, drift_table
from skinlesion.monitoring.drift import DriftResult
from skinlesion.monitoring.health import DRIFT_METRIC
from skinlesion.monitoring.runner import DRIFT_SAMPLE_SIZE
from skinlesion.monitoring.segments import (ALPHA, MIN_SHARE_CHANGE, SEGMENTS, segment_drift,
                                            segment_performance)

HISTORY = {"30 d": timedelta(days=30), "90 d": timedelta(days=90), "1 y": timedelta(days=365)}
#: Evidently's report of the last request, kept per browser session: (window key, html).
_REPORT_KEY = "drift_report_html"
SIDES = {"reference": "#85929e", "current": "#1f5f8b"}
TABLE_COLUMNS = {"feature": "Feature", "group": "Kind", "test": "Test", "score": "Distance",
                 "threshold": "Drift bound", "drifted": "Drifted", "severity": "Severity",
                 "note": "Note"}
SEGMENT_NAMES = {"anatom_site_general": "Anatomical site", "age_band": "Age band", "sex": "Sex",
                 "source": "Source"}

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
    marks = charts.events(queries.alerts(filters.end - HISTORY[span], filters.end),
                          queries.audit(filters.end - HISTORY[span], None), DRIFT_METRIC)
    for window, rows in history.groupby("window_name"):
        st.plotly_chart(charts.history_figure(
            rows, DRIFT_METRIC, policy.thresholds.get(DRIFT_METRIC),
            title=f"Share of drifted features, {window} windows", marks=marks), width="stretch",
            key=f"drift_history_{window}")

# 2. this window, feature by feature; 3. one feature's distributions
health = components.window_health(filters)
st.subheader(f"Features — {filters.label}")


def band(row: pd.Series, metric: str) -> str:
    """A share with its interval ("0.82 (0.70–0.90)"), or "—" without cases."""
    if pd.isna(row[metric]):
        return components.fmt(None)
    return f"{row[metric]:.2f} ({row[metric + '_low']:.2f}–{row[metric + '_high']:.2f})"


def features(result: DriftResult) -> None:
    table = drift_table(result)
    score = health.report.metrics[DRIFT_METRIC]
    st.markdown(f"{components.badge(score.status.value)} **{int(table['drifted'].sum())} of "
                f"{int(table['severity'].notna().sum())} tested features drifted** "
                f"(score {components.fmt(score.value)}; {policy.thresholds[DRIFT_METRIC].describe()}) — "
                f"{result.n_current:,} answers against {result.n_reference:,} reference answers of "
                f"{health.reference_version}.")
    tested = table.dropna(subset=["severity"]).sort_values("severity", ascending=False)
    st.plotly_chart(charts.bars_figure(
        [feature_name(f) for f in tested["feature"]], tested["severity"].tolist(),
        title="Drift by feature", x_title="Change relative to its threshold (1 = at the threshold)",
        colours=[components.STATUS_HEX["red" if d else "green"] for d in tested["drifted"]],
        reference_line=1.0, hover={"score": [f"{v:.4g}" for v in tested["score"]],
                                   "threshold": [f"{v:.4g}" for v in tested["threshold"]]}),
        width="stretch", key="drift_severity")
    st.dataframe(table.assign(feature=[feature_name(f) for f in table["feature"]])
                 .rename(columns=TABLE_COLUMNS), hide_index=True, width="stretch",
                 column_config={"Distance": st.column_config.NumberColumn(format="%.4g"),
                                "Drift bound": st.column_config.NumberColumn(format="%.4g"),
                                "Severity": st.column_config.NumberColumn(format="%.2f"),
                                "Note": st.column_config.TextColumn(width="large")})
    for note in result.notes:
        st.caption(note)

    # 3. one feature's distributions
    names = table["feature"].tolist()
    feature = result.feature(st.selectbox("Reference vs current distribution of", names,
                                          format_func=feature_name, key="drift_feature"))
    dist = distribution_frame(feature)
    if dist.empty:
        st.info(f"{feature.name}: no distribution to show ({feature.note or 'one side has no values'}).")
    elif "category" in dist:
        fig = px.bar(dist, x="category", y="share", color="side", barmode="group",
                     color_discrete_map=SIDES, title=f"{feature_name(feature.name)}: reference vs current",
                     labels={"category": feature_name(feature.name), "share": "Share of answers",
                             "side": ""})
        fig.update_yaxes(tickformat=".0%")
        st.plotly_chart(fig, width="stretch", key="drift_distribution")
    else:
        mids = dist.assign(x=(dist["x0"] + dist["x1"]) / 2, width=dist["x1"] - dist["x0"])
        fig = go.Figure([go.Bar(x=part["x"], y=part["density"], width=part["width"], name=side,
                                marker_color=SIDES[side], opacity=0.55)
                         for side, part in mids.groupby("side")])
        fig.update_layout(barmode="overlay", title=f"{feature_name(feature.name)}: reference vs current",
                          xaxis_title=feature_name(feature.name) + (
                              " (distance to the reference mean)" if feature.kind == "embedding" else ""),
                          yaxis_title="Density")
        st.plotly_chart(fig, width="stretch", key="drift_distribution")
    st.caption(f"{feature_name(feature.name)}: {feature.stattest or 'not tested'} = {components.fmt(feature.score)} "
               f"(threshold {components.fmt(feature.threshold)}) — "
               f"{'drifted' if feature.drifted else 'no drift'}. {feature.note}")


if health.drift is None:
    st.info(f"No drift for this window: {health.drift_skipped}.")
else:
    features(health.drift)

# 4. performance and drift by segment
st.subheader(f"By segment — {filters.label}")
segment = st.radio("Segment", SEGMENTS, format_func=SEGMENT_NAMES.get, horizontal=True,
                   key="drift_segment")
current = queries.sample_predictions(filters.start, filters.end, n=DRIFT_SAMPLE_SIZE,
                                     model_version=filters.model_version,
                                     returned=True if filters.model_version is None else None)
reference, no_reference = components.reference_answers(health.reference_version)
if current.empty:
    st.info("No answers in this window.")
else:
    shares = segment_drift(current, reference, segment)
    st.plotly_chart(charts.shares_figure(
        shares, title=f"{SEGMENT_NAMES[segment]}: share of answers, reference vs this window",
        value_title=SEGMENT_NAMES[segment],
        sides={"reference_share": f"reference ({health.reference_version})",
               "current_share": "this window"}), width="stretch", key="drift_segment_shares")
    st.dataframe(shares.drop(columns=["p_value"]).rename(columns={
        "value": SEGMENT_NAMES[segment], "reference_share": "Reference share",
        "current_share": "Share now", "change": "Change", "shifted": "Shifted",
        "reference_p_malignant": "Mean P(malignant), reference",
        "current_p_malignant": "Mean P(malignant), now"}), hide_index=True, width="stretch",
        column_config={c: st.column_config.NumberColumn(format="percent") for c in (
            "Reference share", "Share now", "Change")} | {
            c: st.column_config.NumberColumn(format="%.3f") for c in (
                "Mean P(malignant), reference", "Mean P(malignant), now")})
    st.caption(f"{len(current):,} answers of the window (a uniform sample of at most "
               f"{DRIFT_SAMPLE_SIZE:,}). A value shifted when its share changed by at least "
               f"{MIN_SHARE_CHANGE:.0%} and beyond chance for samples of these sizes (chi-square, "
               f"p < {ALPHA}). " + (no_reference if reference is None else
                                    "The reference does not record this segment."
                                    if segment not in reference and segment != "age_band"
                                    else ""))
labelled = queries.labelled_predictions(filters.start, filters.end,
                                        model_version=filters.model_version,
                                        returned=True if filters.model_version is None else None)
performance = segment_performance(labelled, segment, malignant=policy.malignant)
if performance.empty:
    st.info("No labelled answers in this window: no performance by segment.")
else:
    st.dataframe(pd.DataFrame({
        SEGMENT_NAMES[segment]: performance["value"],
        "Labelled": performance["labelled"], "Malignant": performance["malignant"],
        "Sensitivity (95 % interval)": [band(r, "sensitivity") for _, r in performance.iterrows()],
        "Specificity (95 % interval)": [band(r, "specificity") for _, r in performance.iterrows()],
        "AUROC": performance["auroc"]}), hide_index=True, width="stretch",
        column_config={"AUROC": st.column_config.NumberColumn(format="%.3f")})
    st.caption("Performance of the call the clinic got (any decision but “no referral” counts as "
               "called malignant), on the labelled answers of the window; the intervals (Wilson, "
               "95 %) show how little a small segment says.")

# 5. Evidently's full report, on demand (it takes a few seconds), in the page and to download
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
