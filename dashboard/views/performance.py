"""Performance — how well the model does on labelled cases: each metric over time against its
threshold bands (realised, and estimated before labels arrive), then, for the sidebar's window,
estimated vs realised, the per-class table, the confusion matrix, ROC and calibration curves."""

from datetime import timedelta

import plotly.express as px
import streamlit as st

import charts
import components
import queries
from skinlesion import plots
from skinlesion.display import metric_name
from skinlesion.monitoring.cockpit import estimated_vs_realised, labelled_arrays, per_class_table

#: Metrics charted over time, in display order: (metric, title, kind).
HISTORY_METRICS = tuple((m, metric_name(m), "ratio") for m in (
    "recall", "fnr", "precision", "accuracy", "auroc", "pauc_80", "log_loss", "f1", "ece",
    "balanced_accuracy"))
HISTORY = {"30 d": timedelta(days=30), "90 d": timedelta(days=90), "1 y": timedelta(days=365)}
FIGURES = {"Confusion matrix": lambda y, p, malignant: plots.confusion_matrix_figure(y, p),
           "ROC curves": plots.roc_figure, "Calibration": plots.calibration_figure}
#: Below this many labelled cases the curves say little; they are not drawn.
MIN_CURVE_CASES = 10

_, filters = components.page_setup("Performance", filters=True)
policy = components.policy()

# 1. metrics over time, from the monitor's snapshots
st.subheader("Over time")
left, right = st.columns([1, 1])
span = left.radio("History", list(HISTORY), horizontal=True, key="performance_history")
snapshots = queries.snapshots(filters.end - HISTORY[span], filters.end,
                              model_version=filters.model_version)
if snapshots.empty:
    st.info("No monitoring snapshots in this period yet. They are written by `skinlesion monitor "
            "--every 1h` (or `--once`).")
else:
    windows = sorted(snapshots["window_name"].unique())
    window = right.selectbox("Health window of each snapshot", windows,
                             index=windows.index("24h") if "24h" in windows else 0,
                             key="performance_window")
    chosen = snapshots[snapshots["window_name"] == window]
    shown = [m for m in HISTORY_METRICS if m[0] in set(chosen["metric"])]
    period_alerts = queries.alerts(filters.end - HISTORY[span], filters.end)
    period_audit = queries.audit(filters.end - HISTORY[span], None)
    columns = st.columns(2)
    for i, (metric, title, kind) in enumerate(shown):
        rows = chosen[chosen["metric"] == metric]
        columns[i % 2].plotly_chart(
            charts.history_figure(rows, metric, policy.thresholds.get(metric), title=title,
                                  kind=kind, marks=charts.events(period_alerts, period_audit,
                                                                 metric)),
            width="stretch", key=f"history_{metric}")
    st.caption("Line and dots: realised (from labels), dots coloured by status; dashed: estimated "
               "from the calibrated probabilities; background: the policy's green / yellow / red "
               "bands; red triangles: alerts opened on the metric; blue: operator actions.")

# 2. the sidebar's window in detail
health = components.window_health(filters, drift=False)
report = health.report
st.subheader(f"Estimated vs realised — {filters.label}")
table = estimated_vs_realised(report)
table["metric"] = [metric_name(m) for m in table["metric"]]
long = table.melt(id_vars=["metric"], value_vars=["realised", "estimated"], var_name="kind").dropna()
if long.empty:
    st.info("No performance numbers in this window (no answers).")
else:
    dots = px.scatter(long, x="value", y="metric", color="kind", symbol="kind",
                      color_discrete_map={"realised": "#1b2631", "estimated": "#85929e"},
                      labels={"value": "Value", "metric": "", "kind": ""},
                      title="Estimated (from probabilities) vs realised (from labels)")
    dots.update_traces(marker_size=12, hovertemplate="%{y}: %{x:.3f}")
    st.plotly_chart(dots, width="stretch", key="performance_estimated_vs_realised")
st.dataframe(table, hide_index=True, width="stretch",
             column_config={c: st.column_config.NumberColumn(format="%.3f")
                            for c in ("realised", "estimated", "gap")})

labelled = queries.labelled_predictions(filters.start, filters.end,
                                        model_version=filters.model_version,
                                        returned=True if filters.model_version is None else None)
st.subheader(f"Labelled cases in the window: {len(labelled):,}")
if len(labelled) < MIN_CURVE_CASES:
    st.info(f"Fewer than {MIN_CURVE_CASES} labelled cases in this window: no per-class table or "
            "curves. Choose a longer window, or label the review queue.")
else:
    y, probs = labelled_arrays(labelled)
    st.markdown("**Per class** (one class against the rest; recall change against the window before)")
    st.dataframe(per_class_table(labelled, report), hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in (
                     "sensitivity", "specificity", "auc", "pauc_80", "ap", "previous_recall",
                     "recall_change")})
    # one figure at a time: each takes a second or two to draw
    figure = st.radio("Figure", list(FIGURES), horizontal=True, key="performance_figure")
    components.figure(FIGURES[figure](y, probs, malignant=policy.malignant))
