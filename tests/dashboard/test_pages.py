"""The cockpit's monitoring pages on seeded stores (tests/dashboard/conftest.py): they render without
an exception and show the planted statuses, drift and traffic."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from streamlit.testing.v1 import AppTest


def _tile_badges(at: AppTest) -> dict[str, str]:
    """The status badge of each metric tile, by tile label (``:red-background[**RED**]  **Recall**``)."""
    badges = {}
    for md in at.markdown:
        text = md.value
        if text.startswith(":") and "-background[**" in text and "  **" in text:
            badge, label = text.split("  **", 1)
            badges[label.rstrip("*")] = badge.split("[**", 1)[1].split("**]", 1)[0]
    return badges


def _texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def test_overview_shows_the_planted_bad_window_in_red(bad_home, run_page: Callable[..., AppTest]):
    at = run_page("overview")
    assert not at.exception
    badges = _tile_badges(at)
    assert badges["Recall (sensitivity)"] == "RED"
    assert badges["False-negative rate"] == "RED"
    assert badges["Latency p95"] == "GREEN"  # the planted fault is in the labels, not the service
    assert len(badges) == 14  # 11 metrics, uncertain answers, error rate, out-of-distribution share
    assert {"Uncertain answers", "Error rate (failed requests)"} <= set(badges)
    errors = _texts(at.error)
    assert "RED — Unhealthy — act now" in errors
    assert "Driven by: " in errors  # the verdict names its top reasons, in words
    assert "Demo model trained on synthetic data" in errors  # the card's data name says synthetic
    playbook = _texts(at.markdown)
    assert "Switch serving to the fallback model" in playbook
    assert "recall" in playbook and "red" in playbook  # the concrete hints name the breach
    assert any("Open alerts (" in s.value and "(0)" not in s.value for s in at.subheader)


def test_overview_shows_a_healthy_window_in_green(good_home, run_page: Callable[..., AppTest]):
    at = run_page("overview")
    assert not at.exception
    badges = _tile_badges(at)
    assert badges["Recall (sensitivity)"] == "GREEN"
    assert badges["Accuracy (malignant vs benign)"] == "GREEN"
    # label-based tiles show the coverage and lag of their labels (each came an hour after)
    assert "labels 100% (n=80) · median lag 1.0 h" in _texts(at.caption)
    assert "GREEN — Healthy — keep monitoring" in _texts(at.success)
    assert "synthetic" not in _texts(at.error)  # a model trained on real data gets no demo banner
    assert any(s.value == "Open alerts (0)" for s in at.subheader)


def test_performance_page_draws_history_tables_and_curves(bad_home, run_page: Callable[..., AppTest]):
    at = run_page("performance")
    assert not at.exception
    assert any(s.value == "Labelled cases in the window: 80" for s in at.subheader)
    assert len(at.get("plotly_chart")) >= 5  # metric histories and estimated vs realised, in plotly
    assert not at.get("vega_lite_chart")
    per_class = at.dataframe[1].value
    assert set(per_class["class"]) == {"MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"}
    assert len(at.get("image")) == 1  # one figure at a time
    at.radio(key="performance_figure").set_value("ROC curves").run()
    assert not at.exception
    assert len(at.get("image")) == 1


def test_drift_page_names_the_drifted_feature_and_builds_the_report(bad_home,
                                                                    run_page: Callable[..., AppTest]):
    at = run_page("drift")
    assert not at.exception
    table = at.dataframe[0].value.set_index("Feature")  # features in words
    assert bool(table.loc["Brightness", "Drifted"])  # the planted brighter camera
    assert not bool(table.loc["Sex", "Drifted"])
    at.selectbox(key="drift_feature").set_value("brightness").run()
    assert not at.exception
    assert "Brightness: " in _texts(at.caption)
    assert not at.get("download_button")
    at.button(key="drift_build_report").click().run()  # Evidently's full report, on demand
    assert not at.exception
    assert len(at.get("download_button")) == 1


def test_drift_page_breaks_performance_and_drift_down_by_segment(bad_home,
                                                                 run_page: Callable[..., AppTest]):
    at = run_page("drift")
    assert not at.exception
    frames = [d.value for d in at.dataframe]
    by_site = next(f for f in frames if "Reference share" in f and "Anatomical site" in f)
    assert by_site["Reference share"].sum() == pytest.approx(1.0)
    performance = next(f for f in frames if "Sensitivity (95 % interval)" in f)
    assert performance["Labelled"].sum() == 80  # the current window's labelled answers
    at.radio(key="drift_segment").set_value("source").run()
    assert not at.exception
    shares = next(d.value for d in at.dataframe if "Source" in d.value and "Share now" in d.value)
    # the planted mix of the current window: half from the API, a quarter each from the dashboard
    # and batch jobs, where the reference's answers all came from the API: every source shifted
    assert dict(zip(shares["Source"], shares["Share now"], strict=True)) == {
        "api": 0.5, "dashboard": 0.25, "batch": 0.25}
    assert dict(zip(shares["Source"], shares["Reference share"], strict=True)) == {
        "api": 1.0, "dashboard": 0.0, "batch": 0.0}
    assert shares["Shifted"].all()
    at.radio(key="drift_segment").set_value("sex").run()
    sexes = next(d.value for d in at.dataframe if "Sex" in d.value and "Share now" in d.value)
    assert not sexes["Shifted"].any()  # the same mix of men and women as the reference


def test_operations_page_counts_answers_by_source(bad_home, run_page: Callable[..., AppTest]):
    at = run_page("operations")
    assert not at.exception
    by_source = at.dataframe[0].value.set_index("source")
    # the current window holds 80 answers: every other one from the API, a quarter each from the
    # dashboard and batch jobs
    assert by_source.loc["api", "answers"] == 40
    assert by_source.loc["dashboard", "answers"] == 20
    assert by_source.loc["batch", "answers"] == 20
    assert by_source.loc["demo", "answers"] == 0
    # the planted failed API requests (conftest): 4 of 44 API requests, none from other sources
    assert by_source.loc["api", "failed"] == 4
    assert by_source.loc["api", "error rate"] == pytest.approx(4 / 44)
    assert by_source.loc["batch", "error rate"] == 0 and by_source.loc["demo", "failed"] == 0
    assert at.metric[4].value == "5%"  # error rate of all sources: 4 of 84 requests
    assert "4 failed of 84 requests" in _texts(at.caption)
    at.radio(key="operations_source").set_value("batch").run()
    assert not at.exception
    assert at.metric[0].value == "20"
    assert at.metric[4].value == "0%"


def test_sidebar_filters_change_the_window_and_the_model_version(bad_home,
                                                                 run_page: Callable[..., AppTest]):
    at = run_page("operations")
    assert at.metric[0].value == "80"  # last 24 h
    assert at.sidebar.selectbox(key="filter_model").options == ["all returned answers", "reference"]
    at.sidebar.radio(key="filter_window").set_value("7 d").run()
    assert not at.exception
    assert at.metric[0].value == "160"  # both seeded days
    at.sidebar.selectbox(key="filter_model").set_value("reference").run()
    assert not at.exception
    assert at.metric[0].value == "160"
    at.sidebar.radio(key="filter_window").set_value("custom").run()  # today and the 7 days before
    assert not at.exception
    assert at.metric[0].value == "160"
