"""The API under A/B and shadow: the client gets the active (or its sticky challenger's) answer, the
shadow's answer is logged beside it and never returned."""

from __future__ import annotations

from skinlesion.store import ServingRoute
from tests.api.test_api import env, jpeg, predict  # noqa: F401 (fixture)


def set_route(store, **fields) -> None:
    store.set_route(ServingRoute(active_version="main-v1", fallback_version="rules-v1", **fields),
                    actor="test", role="ml_lead", reason="test")


def test_shadow_answer_is_logged_but_the_client_gets_the_active_one(env):
    client, store, _ = env
    set_route(store, shadow_version="rules-v1")
    r = predict(client, image=jpeg(90))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model_version"], body["model_role"]) == ("main-v1", "active")
    client.app.state.service.drain(timeout=30)
    rows = store.query_predictions().set_index("model_role")
    assert sorted(rows.index) == ["active", "shadow"]
    assert rows.loc["active", "request_id"] == body["request_id"] and rows.loc["active", "returned"]
    assert rows.loc["shadow", "model_version"] == "rules-v1" and not rows.loc["shadow", "returned"]
    assert rows.loc["shadow", "image_sha256"] == body["image_sha256"]
    assert rows.loc["shadow", "threshold"] == 0.2  # the shadow decides at its own threshold
    assert client.get(f"/v1/predictions/{body['request_id']}").json()["model_version"] == "main-v1"


def test_challenger_answers_are_sticky_per_image_through_the_api(env):
    client, store, _ = env
    set_route(store, challenger_version="rules-v1", challenger_share=0.5)
    images = [jpeg(v) for v in range(60, 200, 7)]
    first = [predict(client, image=img).json()["model_version"] for img in images]
    again = [predict(client, image=img).json()["model_version"] for img in images]
    assert first == again and set(first) == {"main-v1", "rules-v1"}
    roles = store.query_predictions().groupby("model_version")["model_role"].unique()
    assert list(roles["rules-v1"]) == ["challenger"] and list(roles["main-v1"]) == ["active"]
