"""Operations — is the service answering, fast enough, and as often as usual? Inference volume per
hour with spikes and dips marked, latency percentiles, uncertain and referral rates, the error rate
(requests answered with an error), resource use, and the same numbers by source (API, dashboard,
batch, demo)."""

import altair as alt
import pandas as pd
import streamlit as st

import components
import queries
from skinlesion.monitoring.health import ERROR_RATE_METRIC, LATENCY_METRIC, error_rate
from skinlesion.store import ERROR_RATE_KINDS, SOURCES

ALL_SOURCES = "all sources"

_, filters = components.page_setup("Operations", filters=True)
policy = components.policy()
source_choice = st.radio("Source", [ALL_SOURCES, *SOURCES], horizontal=True, key="operations_source")
source = None if source_choice == ALL_SOURCES else source_choice
returned = True if filters.model_version is None else None
health = components.window_health(filters, drift=False, source=source)
report = health.report

# 1. the window in five numbers
latency = report.metrics[LATENCY_METRIC]
cols = st.columns(5)
with cols[0]:
    components.metric_tile("Answers", float(report.n_predictions), "green", kind="count",
                           change=(report.n_predictions - health.previous_volume
                                   if health.previous_volume is not None else None),
                           note=f"{len(report.volume_anomalies)} spike/dip hour(s)", badge_text="volume")
with cols[1]:
    components.metric_tile("Latency p95", latency.value, latency.status.value, kind="ms",
                           change=latency.change, higher_is_better=False,
                           note=f"p50 {components.fmt(report.latency_ms['p50'], 'ms')} · "
                                f"p99 {components.fmt(report.latency_ms['p99'], 'ms')}",
                           help=policy.thresholds[LATENCY_METRIC].describe())
uncertain = report.uncertain_share
refer = report.decisions.get("refer", 0) / report.n_predictions if report.n_predictions else None
with cols[2]:
    components.metric_tile("Uncertain answers", uncertain, "unknown", kind="percent",
                           higher_is_better=False, badge_text="rate",
                           note="poor image, unlike the training images, or not confident")
with cols[3]:
    components.metric_tile("Referred", refer, "unknown", kind="percent", badge_text="rate",
                           note=f"{report.decisions.get('no referral', 0):,} not referred")
errors = report.metrics[ERROR_RATE_METRIC]
with cols[4]:
    components.metric_tile("Error rate", errors.value, errors.status.value, kind="percent",
                           change=errors.change, higher_is_better=False, badge_text="rate",
                           note=f"{errors.note} · {report.failures.get('unauthorized', 0):,} "
                                "without a valid API key (not counted)",
                           help="Prediction requests answered with an error (bad input, no model or "
                                "store to answer, a failure while answering) per request.")

# 2. volume per hour, spikes and dips marked
st.subheader("Answers per hour")
hourly_by_source = queries.hourly_operations(filters.start, filters.end,
                                             model_version=filters.model_version, source=source,
                                             returned=returned, by_source=True)
volume = pd.DataFrame([{"hour": h.hour, "n": h.n, "baseline": h.baseline, "anomaly": h.anomaly}
                       for h in report.volume])
if volume.empty or not volume["n"].sum():
    st.info("No answers in this window.")
else:
    bars = alt.Chart(hourly_by_source).mark_bar(opacity=0.85).encode(
        x=alt.X("hour:T", title=None), y=alt.Y("n:Q", title="answers", stack=True),
        color=alt.Color("source:N", scale=alt.Scale(domain=list(SOURCES))),
        tooltip=[alt.Tooltip("hour:T", format="%d %b %H:00"), "source:N", "n:Q"])
    baseline = alt.Chart(volume.dropna(subset=["baseline"])).mark_line(
        strokeDash=[4, 3], color="#1b2631").encode(x="hour:T", y="baseline:Q")
    marks = alt.Chart(volume.dropna(subset=["anomaly"])).mark_point(
        shape="triangle-down", size=160, filled=True).encode(
        x="hour:T", y="n:Q",
        color=alt.Color("anomaly:N", scale=alt.Scale(domain=["spike", "dip"],
                                                      range=[components.STATUS_HEX["red"], "#1565c0"]),
                        title="anomaly"),
        tooltip=[alt.Tooltip("hour:T", format="%d %b %H:00"), "n:Q",
                 alt.Tooltip("baseline:Q", format=".0f"), "anomaly:N"])
    st.altair_chart(alt.layer(bars, baseline, marks).resolve_scale(color="independent"), width="stretch")
    st.caption("Bars: answers per UTC hour by source; dashed: the expected count (median of the same "
               "hour on previous days); triangles: spikes and dips.")
    for hour in report.volume_anomalies:
        st.caption(f"{components.STATUS_ICONS['yellow']} {hour.describe()}")

# 3. latency percentiles and decision rates over time
hourly = queries.hourly_operations(filters.start, filters.end, model_version=filters.model_version,
                                   source=source, returned=returned)
if not hourly.empty:
    left, right = st.columns(2)
    with left:
        st.subheader("Latency per hour")
        lat = hourly.melt(id_vars=["hour"], value_vars=["latency_p50_ms", "latency_p95_ms",
                                                        "latency_p99_ms"],
                          var_name="percentile", value_name="ms")
        lat["percentile"] = lat["percentile"].str.extract(r"latency_(p\d+)_ms", expand=False)
        threshold = policy.thresholds[LATENCY_METRIC]
        rules = alt.Chart(pd.DataFrame({"ms": [threshold.green, threshold.red],
                                        "status": ["yellow", "red"]})).mark_rule(strokeDash=[4, 3]).encode(
            y="ms:Q", color=alt.Color("status:N", scale=components.status_scale(), legend=None))
        lines = alt.Chart(lat).mark_line(point=True).encode(
            x=alt.X("hour:T", title=None), y=alt.Y("ms:Q", title="ms"), color="percentile:N",
            tooltip=[alt.Tooltip("hour:T", format="%d %b %H:00"), "percentile:N",
                     alt.Tooltip("ms:Q", format=",.0f")])
        st.altair_chart(alt.layer(rules, lines).resolve_scale(color="independent"), width="stretch")
        st.caption(f"Dashed lines: the p95 bounds of the policy ({threshold.describe()}).")
    with right:
        st.subheader("Uncertain, referred and failed, per hour")
        answered = hourly[hourly["n"] > 0]
        rates = answered.assign(uncertain=answered["uncertain"] / answered["n"],
                                referred=answered["refer"] / answered["n"])
        rates = pd.concat([
            rates.melt(id_vars=["hour", "n"], value_vars=["uncertain", "referred"], var_name="rate",
                       value_name="share"),
            hourly.assign(rate="failed (error rate)")[["hour", "n", "rate", "error_rate"]].rename(
                columns={"error_rate": "share"})])
        st.altair_chart(alt.Chart(rates).mark_line(point=True).encode(
            x=alt.X("hour:T", title=None), y=alt.Y("share:Q", axis=alt.Axis(format="%"), title=None),
            color="rate:N", tooltip=[alt.Tooltip("hour:T", format="%d %b %H:00"), "rate:N",
                                     alt.Tooltip("share:Q", format=".0%"), "n:Q"]), width="stretch")
    st.caption("Uncertain and referred: shares of the hour's answers. Failed: prediction requests "
               "answered with an error (bad input, no model or store to answer, a failure while "
               "answering) per request; requests without a valid API key are not counted.")

# 4. by source
st.subheader("By source")
rows = []
for name in SOURCES:
    summary = queries.window_summary(filters.start, filters.end, model_version=filters.model_version,
                                     source=name, returned=returned)
    failures = queries.failure_counts(filters.start, filters.end, model_version=filters.model_version,
                                      source=name)
    n = summary["n"]
    failed = sum(failures[k] for k in ERROR_RATE_KINDS)
    rows.append({"source": name, "answers": n, "failed": failed, "error rate": error_rate(failed, n),
                 "latency p50 (ms)": summary["latency_p50_ms"],
                 "latency p95 (ms)": summary["latency_p95_ms"], "latency p99 (ms)": summary["latency_p99_ms"],
                 "uncertain": summary["decisions"]["uncertain"] / n if n else None,
                 "referred": summary["decisions"]["refer"] / n if n else None})
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
             column_config={"uncertain": st.column_config.ProgressColumn(format="percent", min_value=0,
                                                                         max_value=1),
                            "referred": st.column_config.ProgressColumn(format="percent", min_value=0,
                                                                        max_value=1),
                            "error rate": st.column_config.ProgressColumn(format="percent", min_value=0,
                                                                          max_value=1),
                            **{c: st.column_config.NumberColumn(format="%.0f") for c in (
                                "latency p50 (ms)", "latency p95 (ms)", "latency p99 (ms)")}})

# 5. resource use
st.subheader("Resource use")
res = report.resources
if res is None:
    st.info("Resource use was not measured.")
else:
    cols = st.columns(4)
    cols[0].metric("CPU", f"{res.cpu_percent:.0f}%")
    cols[1].metric("Memory", f"{res.memory_percent:.0f}%",
                   help=f"{res.memory_used_mb:,.0f} of {res.memory_total_mb:,.0f} MB")
    cols[2].metric("This process", f"{res.process_rss_mb:,.0f} MB")
    cols[3].metric("GPU memory", "—" if res.gpu_memory_used_mb is None
                   else f"{res.gpu_memory_used_mb:,.0f} / {res.gpu_memory_total_mb:,.0f} MB")
    st.caption(f"This host, measured {res.measured_at:%H:%M:%S} UTC (the dashboard's host; the API's "
               "own resource use is on its Prometheus endpoint).")
