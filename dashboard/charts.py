"""The cockpit's time-series charts, in plotly: a title, axis titles with units, one date format
(``YYYY-MM-DD HH:MM`` UTC), hover, zoom and range buttons, the policy's green / yellow / red bands
behind the line, and the alerts and operator actions of the period marked on the time axis (as
Grafana annotations). Builders only: a page passes data in and shows the figure with
``st.plotly_chart``.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import plotly.graph_objects as go

from skinlesion.display import PLOTLY_DATE_FORMAT, audit_action, metric_label, metric_name
from skinlesion.monitoring import cockpit
from skinlesion.thresholds import Threshold

STATUS_HEX: dict[str, str] = {"green": "#2e7d32", "yellow": "#f9a825", "red": "#c62828",
                              "unknown": "#9e9e9e"}
EVENT_COLOURS = {"alert": "#c62828", "action": "#1565c0"}
#: audit actions that change what serves or how (marked on the time series); sign-ins are not
MARKED_ACTIONS = frozenset({"set_route", "set_threshold", "revert_threshold", "launch_retraining",
                            "acknowledge_alert", "silence_alert", "assign_alert", "resolve_alert",
                            "archive", "unarchive"})
HOVER_TIME = f"%{{x|{PLOTLY_DATE_FORMAT}}} UTC"
RANGE_BUTTONS = [dict(count=1, label="1 d", step="day", stepmode="backward"),
                 dict(count=7, label="7 d", step="day", stepmode="backward"),
                 dict(count=30, label="30 d", step="day", stepmode="backward"),
                 dict(step="all", label="all")]


def events(alerts: pd.DataFrame, audit: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """The marks of a time series: alerts opened (on ``metric`` only, when given) and the operator
    actions of :data:`MARKED_ACTIONS`, as rows ``ts, kind (alert | action), text``."""
    rows = []
    for _, a in alerts.iterrows():
        if metric is None or a["metric"] == metric:
            rows.append((a["opened_at"], "alert",
                         f"Alert opened: {metric_name(a['metric'])} {a['status']} ({a['scope']})"))
    for _, e in audit.iterrows():
        if e["action"] in MARKED_ACTIONS:
            rows.append((e["ts"], "action", f"{audit_action(e['action'], e['details'])} — "
                                            f"{e['actor']}" + (f": {e['reason']}" if e["reason"]
                                                              else "")))
    return pd.DataFrame(rows, columns=["ts", "kind", "text"])


def time_axis(fig: go.Figure) -> None:
    """The time axis of every chart: UTC, one date format, range buttons."""
    fig.update_xaxes(title_text="Time (UTC)", tickformat="%Y-%m-%d<br>%H:%M", hoverformat=PLOTLY_DATE_FORMAT,
                     rangeselector=dict(buttons=RANGE_BUTTONS), type="date")


def _mark(fig: go.Figure, marks: pd.DataFrame | None, y: float) -> None:
    """Dotted vertical lines at each event and a hoverable marker at the top of the plot."""
    if marks is None or marks.empty:
        return
    for kind, group in marks.groupby("kind"):
        for ts in group["ts"]:
            fig.add_shape(type="line", x0=ts, x1=ts, yref="paper", y0=0, y1=1, layer="below",
                          line=dict(color=EVENT_COLOURS[kind], width=1, dash="dot"))
        fig.add_trace(go.Scatter(
            x=group["ts"], y=[y] * len(group), mode="markers", name="alerts" if kind == "alert"
            else "operator actions", text=group["text"],
            marker=dict(symbol="triangle-down", size=11, color=EVENT_COLOURS[kind]),
            hovertemplate=f"{HOVER_TIME}<br>%{{text}}<extra></extra>"))


def history_figure(frame: pd.DataFrame, metric: str, threshold: Threshold | None, *,
                   title: str | None = None, kind: str = "ratio",
                   marks: pd.DataFrame | None = None, height: int = 300) -> go.Figure:
    """A metric over time from snapshot rows (``ts``, ``value``, ``estimated``,
    ``effective_status``): the realised value as a line with points coloured by status, the
    estimate dashed, over the bands of its ``threshold``, with ``marks`` (see :func:`events`)."""
    frame = frame.sort_values("ts")
    low, high = cockpit.chart_range(pd.concat([frame["value"], frame["estimated"]]), threshold,
                                    ratio=kind == "ratio")
    fig = go.Figure()
    if threshold is not None:
        for _, band in cockpit.threshold_bands(threshold, low, high).iterrows():
            fig.add_hrect(y0=band["y0"], y1=band["y1"], fillcolor=STATUS_HEX[band["status"]],
                          opacity=0.12, line_width=0, layer="below")
    number = ",.0f" if kind in ("ms", "count") else ".3f"
    fig.add_trace(go.Scatter(
        x=frame["ts"], y=frame["value"], mode="lines+markers", name="realised (labels)",
        line=dict(color="#1b2631"), connectgaps=False,
        marker=dict(size=8, color=[STATUS_HEX.get(str(s), STATUS_HEX["unknown"])
                                   for s in frame["effective_status"]]),
        customdata=frame[["effective_status"]].fillna("unknown"),
        hovertemplate=f"{HOVER_TIME}<br>realised %{{y:{number}}} (%{{customdata[0]}})<extra></extra>"))
    if frame["estimated"].notna().any():
        fig.add_trace(go.Scatter(
            x=frame["ts"], y=frame["estimated"], mode="lines", name="estimated (no labels yet)",
            line=dict(color="#5d6d7e", dash="dash"),
            hovertemplate=f"{HOVER_TIME}<br>estimated %{{y:{number}}}<extra></extra>"))
    _mark(fig, marks, high)
    time_axis(fig)
    fig.update_yaxes(title_text=metric_label(metric), range=[low, high])
    fig.update_layout(title=title or metric_name(metric), height=height, hovermode="closest",
                      margin=dict(l=10, r=10, t=60, b=10),
                      legend=dict(orientation="h", yanchor="top", y=-0.25, x=0))
    return fig


def bars_figure(categories: list[str], values: list[float], *, title: str, x_title: str,
                colours: list[str], reference_line: float | None = None,
                hover: Mapping[str, list] | None = None, height: int | None = None) -> go.Figure:
    """Horizontal bars, one per category (top to bottom in the given order), with an optional
    dotted reference line."""
    fig = go.Figure(go.Bar(x=values, y=categories, orientation="h", marker_color=colours,
                           customdata=list(zip(*hover.values(), strict=True)) if hover else None,
                           hovertemplate="%{y}: %{x:.3g}" + "".join(
                               f"<br>{name} %{{customdata[{i}]}}" for i, name in
                               enumerate(hover or {})) + "<extra></extra>"))
    if reference_line is not None:
        fig.add_vline(x=reference_line, line_dash="dot", line_color="#1b2631")
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=title, xaxis_title=x_title, height=height or max(260, 28 * len(categories)),
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig



def shares_figure(frame: pd.DataFrame, *, title: str, value_title: str,
                  sides: Mapping[str, str]) -> go.Figure:
    """Grouped horizontal bars of shares: one row per ``value`` of ``frame``, one bar per column
    named in ``sides`` (column -> legend name); values shaded where ``frame["shifted"]``."""
    colours = {"reference_share": "#85929e", "current_share": "#1f5f8b"}
    fig = go.Figure([go.Bar(y=frame["value"], x=frame[column], name=name, orientation="h",
                            marker_color=colours.get(column),
                            hovertemplate="%{y}: %{x:.1%}<extra>" + name + "</extra>")
                     for column, name in sides.items() if frame[column].notna().any()])
    for i, value in enumerate(frame["value"]):
        if frame["shifted"].iloc[i]:
            fig.add_annotation(y=value, x=float(frame[list(sides)].max(axis=1).iloc[i]),
                               text="shifted", showarrow=False, xanchor="left", xshift=6,
                               font=dict(color="#c62828"))
    fig.update_yaxes(autorange="reversed", title=value_title)
    fig.update_xaxes(tickformat=".0%", title="Share of answers")
    fig.update_layout(title=title, barmode="group", height=max(260, 50 * len(frame)),
                      margin=dict(l=10, r=10, t=50, b=10), legend_title_text="")
    return fig


def threshold_figure(curve: pd.DataFrame, serving: float, proposed: float | None) -> go.Figure:
    """Sensitivity and specificity (``curve``: threshold, sensitivity, specificity) over the
    operating threshold, as steps, with the serving threshold (solid) and the proposed one
    (dashed)."""
    fig = go.Figure([go.Scatter(x=curve["threshold"], y=curve[measure], name=measure.capitalize(),
                                mode="lines", line=dict(shape="hv", color=colour),
                                hovertemplate="threshold %{x:.3f}: %{y:.3f}<extra>"
                                + measure + "</extra>")
                     for measure, colour in (("sensitivity", "#c62828"),
                                             ("specificity", "#1f5f8b"))])
    for which, at, dash in (("serving", serving, "solid"), ("proposed", proposed, "dash")):
        if at is not None:
            fig.add_vline(x=at, line_color="#1b2631", line_dash=dash, line_width=2,
                          annotation_text=f"{which} {at:.3f}", annotation_position="top")
    fig.update_xaxes(range=[0, 1], title="Threshold on the probability of malignancy")
    fig.update_yaxes(range=[0, 1.05], title="Share of labelled cases")
    fig.update_layout(title="Sensitivity and specificity by threshold", height=320,
                      margin=dict(l=10, r=10, t=60, b=10), legend_title_text="")
    return fig
