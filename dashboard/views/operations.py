"""Operations — is the service answering, fast enough, and as often as usual? Inference volume per
hour with spikes and dips marked, latency percentiles, uncertain and referral rates, the error rate
(requests answered with an error), resource use, and the same numbers by source (API, dashboard,
batch, demo)."""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import charts
import components
import queries
from skinlesion.monitoring.health import ERROR_RATE_METRIC, LATENCY_METRIC, error_rate
from skinlesion.store import ERROR_RATE_KINDS, SOURCES

ALL_SOURCES = "all sources"

_, filters = components.page_setup("Operations", filters=True)
components.auto_refresh()
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
    fig = go.Figure([go.Bar(x=part["hour"], y=part["n"], name=name, hovertemplate=(
        f"{charts.HOVER_TIME}<br>{name}: %{{y}} answers<extra></extra>"))
        for name, part in hourly_by_source.groupby("source")])
    expected = volume.dropna(subset=["baseline"])
    fig.add_trace(go.Scatter(x=expected["hour"], y=expected["baseline"], mode="lines",
                             name="expected (same hour, earlier days)",
                             line=dict(color="#1b2631", dash="dash"),
                             hovertemplate=f"{charts.HOVER_TIME}<br>expected %{{y:.0f}}<extra></extra>"))
    odd = volume.dropna(subset=["anomaly"])
    fig.add_trace(go.Scatter(x=odd["hour"], y=odd["n"], mode="markers", name="spike or dip",
                             text=odd["anomaly"], marker=dict(symbol="triangle-down", size=13,
                                                              color=components.STATUS_HEX["red"]),
                             hovertemplate=f"{charts.HOVER_TIME}<br>%{{text}}: %{{y}} answers"
                                           "<extra></extra>"))
    charts.time_axis(fig)
    fig.update_layout(barmode="stack", title="Answers per hour (UTC) by source",
                      yaxis_title="Answers per hour", height=340, margin=dict(t=60, b=10))
    st.plotly_chart(fig, width="stretch", key="operations_volume")
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
        fig = go.Figure([go.Scatter(x=part["hour"], y=part["ms"], mode="lines+markers", name=name,
                                    hovertemplate=f"{charts.HOVER_TIME}<br>{name} %{{y:,.0f}} ms"
                                                  "<extra></extra>")
                         for name, part in lat.groupby("percentile")])
        for bound, colour in ((threshold.green, "yellow"), (threshold.red, "red")):
            fig.add_hline(y=bound, line_dash="dash", line_color=components.STATUS_HEX[colour])
        charts.time_axis(fig)
        fig.update_layout(title="Latency per hour", yaxis_title="Latency (ms)", height=320,
                          margin=dict(t=60, b=10))
        st.plotly_chart(fig, width="stretch", key="operations_latency")
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
        fig = go.Figure([go.Scatter(x=part["hour"], y=part["share"], mode="lines+markers",
                                    name=name, customdata=part[["n"]],
                                    hovertemplate=f"{charts.HOVER_TIME}<br>{name} %{{y:.0%}} of "
                                                  "%{customdata[0]}<extra></extra>")
                         for name, part in rates.groupby("rate")])
        charts.time_axis(fig)
        fig.update_layout(title="Uncertain, referred and failed, per hour",
                          yaxis_title="Share of the hour's answers", yaxis_tickformat=".0%",
                          height=320, margin=dict(t=60, b=10))
        st.plotly_chart(fig, width="stretch", key="operations_rates")
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
