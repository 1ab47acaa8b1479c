"""The cockpit's entry point: the sign-in gate and the role check every page goes through."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.dashboard.conftest import DASHBOARD, PASSWORD


def _sign_in(at: AppTest, name: str, password: str) -> AppTest:
    at.text_input(key="sign_in_name").input(name)
    at.text_input(key="sign_in_password").input(password)
    return at.button[0].click().run()


def test_wrong_password_is_refused_and_the_right_one_opens_the_overview(good_home: Path):
    at = AppTest.from_file(str(DASHBOARD / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert [t.value for t in at.title] == ["skinlesion cockpit"]  # the sign-in form, nothing else
    at = _sign_in(at, "ops", "not the password")
    assert "Wrong user name or password." in [e.value for e in at.error]
    assert "skinlesion_user" not in at.session_state
    assert [t.value for t in at.title] == ["skinlesion cockpit"]
    at = _sign_in(at, "nobody", PASSWORD)  # unknown names get the same answer
    assert "Wrong user name or password." in [e.value for e in at.error]
    at = _sign_in(at, "ops", PASSWORD)
    assert not at.exception
    assert at.session_state["skinlesion_user"].role == "viewer"
    assert [t.value for t in at.title] == ["Overview"]


def test_a_role_may_not_follow_a_link_to_a_page_it_cannot_open(good_home: Path):
    """A viewer's link to Predict (clinicians and ML leads only) lands on the Overview."""
    at = AppTest.from_file(str(DASHBOARD / "app.py"), default_timeout=60).run()
    at = _sign_in(at.switch_page("views/predict.py").run(), "ops", PASSWORD)
    assert not at.exception
    assert [t.value for t in at.title] == ["Overview"]


def test_without_users_the_gate_says_how_to_add_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SKINLESION_HOME", str(tmp_path))
    at = AppTest.from_file(str(DASHBOARD / "app.py"), default_timeout=30).run()
    assert not at.exception
    assert any("skinlesion users add" in e.value for e in at.error)
    assert not at.text_input


def _gated_page() -> None:
    import components

    components.require_role("manage_models")
    import streamlit as st

    st.success("model actions")


@pytest.mark.parametrize(("role", "allowed"), [("viewer", False), ("clinician", False), ("ml_lead", True)])
def test_require_role_lets_only_permitted_roles_through(good_home: Path, role: str, allowed: bool):
    from skinlesion.auth import User

    at = AppTest.from_function(_gated_page, default_timeout=30)
    at.session_state["skinlesion_user"] = User(name="someone", role=role)
    at.run()
    assert not at.exception
    assert bool(at.success) is allowed
    if not allowed:
        assert "this needs ml_lead" in at.error[0].value
