"""Overview: an estimate is the headline while no labels exist (marked "estimated", with its band),
and a bad window with the fallback serving reads "mitigated" with the playbook moved on."""

from __future__ import annotations

from collections.abc import Callable

from streamlit.testing.v1 import AppTest

from skinlesion.monitoring.estimate import BAND_LEVEL
from skinlesion.store import ServingRoute, Store
from tests.dashboard.conftest import _seed, _use


def _texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def test_without_labels_the_headline_is_the_estimate_with_its_band(
        unlabelled_home, run_page: Callable[..., AppTest]):
    at = run_page("overview")
    assert not at.exception
    headlines = {m.label: m.value for m in at.metric}
    assert headlines["Recall (sensitivity)"].startswith("≈ ")
    assert headlines["AUROC"].startswith("≈ ")
    captions = _texts(at.caption)
    assert "**estimated** (too few labels)" in captions
    assert f"{BAND_LEVEL:.0%} band" in captions


def test_a_bad_window_with_the_fallback_serving_reads_mitigated(
        tmp_path, monkeypatch, run_page: Callable[..., AppTest], _standin_kind):
    home = _seed(tmp_path / "home", agreement=0.55, data_name="ISIC 2019 training")
    Store(home / "data" / "skinlesion.duckdb").set_route(
        ServingRoute(active_version="reference", fallback_version="reference",
                     fallback_engaged=True), actor="lead", role="ml_lead", reason="recall red",
        details={"operation": "engage_fallback"})
    _use(home, monkeypatch)
    at = run_page("overview")
    assert not at.exception
    verdict = _texts(at.info)
    assert "MITIGATED — The fallback reference answers every request since" in verdict
    assert "(set by lead: recall red)" in verdict and "Driven by:" in verdict
    playbook = _texts(at.markdown)
    assert "Switch serving to the fallback model" not in playbook
    assert "Investigate the cause" in playbook and "Release the mitigation" in playbook


def test_auto_refresh_reloads_the_page_and_is_kept_in_the_url(
        unlabelled_home, run_page: Callable[..., AppTest]):
    at = run_page("overview")
    assert not any("window.location.reload" in str(h.proto.body) for h in at.get("html"))
    at = at.toggle(key="auto_refresh").set_value(True).run()
    assert any("window.location.reload(), 60000" in str(h.proto.body) for h in at.get("html"))
    assert at.query_params["refresh"] in ("on", ["on"])
