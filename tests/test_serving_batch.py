"""A batch sent to a version by name: the role it answers in is the one the route gives it."""

from __future__ import annotations

import pytest

from skinlesion.serving import batch_choice, role_of
from skinlesion.store import ServingRoute

ROUTE = ServingRoute(active_version="a", fallback_version="f", challenger_version="c",
                     challenger_share=0.1, shadow_version="s")


@pytest.mark.parametrize(("version", "role"), [
    ("a", "active"), ("c", "challenger"), ("s", "shadow"), ("f", "fallback"), ("x", "offline")])
def test_each_version_answers_in_its_role_in_the_route(version, role):
    assert role_of(ROUTE, version) == role


def test_the_engaged_fallback_is_the_fallback_and_the_active_stays_active():
    engaged = ROUTE.model_copy(update={"fallback_engaged": True})
    assert (role_of(engaged, "f"), role_of(engaged, "a")) == ("fallback", "active")


def test_a_batch_choice_carries_the_routes_threshold_and_restriction():
    route = ROUTE.model_copy(update={"restricted_to_clear_cases": True,
                                     "threshold_overrides": {"x": 0.3}})
    choice = batch_choice(route, "x")
    assert (choice.version, choice.role, choice.restricted, choice.threshold) == ("x", "offline",
                                                                                  True, 0.3)
    assert batch_choice(route, "a").threshold is None
