"""What stands before the routes (issue 16, items 4-6 and 10): strict images, the pixel budget, the
key checked before the body is read, rate limits, unauthorized requests counted but never written,
revoked keys refused within the cache's second."""

from __future__ import annotations

import asyncio
import io
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from skinlesion import registry
from skinlesion.api import create_app
from skinlesion.api.guards import DecodeBusy, KeyVerifier, PixelBudget
from skinlesion.errors import DataError
from skinlesion.serving import ServingService
from skinlesion.settings import Settings
from skinlesion.store import ServingRoute, Store
from tests.api.test_api import _sample, env, jpeg, predict  # noqa: F401 (fixture)
from tests.standins import STANDIN_KIND, STANDIN_PATH, save_standin


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def make_client(tmp_path, monkeypatch):
    """A factory of API clients over one store, with settings overridden per call."""
    monkeypatch.setitem(registry.CLASSIFIER_KINDS, STANDIN_KIND, STANDIN_PATH)
    home = tmp_path
    save_standin(home / "models", "main-v1", threshold=0.5)
    store = Store(home / "data" / "skinlesion.duckdb")
    store.set_route(ServingRoute(active_version="main-v1"), actor="t", role="ml_lead", reason="x")
    key = store.create_api_key("clinic-app")
    opened = []

    def make(**overrides):
        settings = Settings(home=home, route_ttl_s=0.0, **overrides)
        service = ServingService(store, settings.models_dir, route_ttl_s=0.0)
        client = TestClient(create_app(settings, service=service), raise_server_exceptions=False)
        client.__enter__()
        client.headers["X-API-Key"] = key
        opened.append((client, service))
        return client

    yield make, store, key
    for client, service in opened:
        client.__exit__(None, None, None)
        service.close()


# --- item 4: greyscale and high-bit-depth images are answered uncertain, with the reason ---


@pytest.mark.parametrize(("image", "reason"), [
    (Image.fromarray(np.random.default_rng(1).integers(40, 200, (48, 64), dtype=np.uint8)), "greyscale"),
    (Image.fromarray(np.random.default_rng(2).integers(9000, 60000, (48, 64), dtype=np.uint16)),
     "high-bit-depth"),
    (Image.fromarray(np.random.default_rng(3).integers(40, 200, (48, 64), dtype=np.uint8)).convert("RGB"),
     "greyscale"),
])
def test_greyscale_and_16_bit_images_are_uncertain_with_the_reason(env, image, reason):
    client, store, _ = env
    r = predict(client, image=png(image))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["decision"] == "uncertain" and reason in body["decision_reason"]
    assert store.get_prediction(body["request_id"]).decision == "uncertain"
    colour = predict(client, image=jpeg(230)).json()  # the planted control: a colour image is decided
    assert colour["decision"] != "uncertain" or "greyscale" not in colour["decision_reason"]


def test_an_oversized_form_field_is_refused_naming_it_and_recorded(env):
    client, store, _ = env
    r = predict(client, sex="f" * 5000)
    assert r.status_code == 422 and r.json()["error"]["field"] == "sex"
    failure = store.query_failures().iloc[0]
    assert (failure["kind"], failure["field"], failure["http_status"]) == ("rejected", "sex", 422)


def test_the_servers_own_503_is_counted(env):
    client, store, _ = env
    store.set_route(ServingRoute(active_version="ghost-v9"), actor="t", role="ml_lead", reason="x")
    r = predict(client)
    assert r.status_code == 503 and r.headers["Retry-After"]
    assert _sample(client.get("/metrics").text, "skinlesion_requests_total", endpoint="predictions",
                   model_version="none", outcome="unavailable") == 1


# --- item 5: a bound on the pixels decoded at once ---


def test_pixel_budget_makes_requests_wait_then_refuses():
    budget = PixelBudget(100)
    with budget.hold(60, wait_s=0.1):
        with pytest.raises(DecodeBusy) as busy:
            with budget.hold(60, wait_s=0.05):
                pass
        assert busy.value.retry_after_s >= 1
        with budget.hold(40, wait_s=0.05):  # what fits goes through at once
            assert budget.in_use == 100
    released = threading.Event()

    def hold_briefly():
        with budget.hold(100, wait_s=1):
            released.wait(5)

    holder = threading.Thread(target=hold_briefly)
    holder.start()
    while budget.in_use == 0:
        time.sleep(0.001)
    threading.Timer(0.05, released.set).start()
    with budget.hold(1000, wait_s=5):  # capped at the whole budget; waits for the holder
        assert budget.in_use == 100
    holder.join()
    assert budget.in_use == 0


def test_a_request_waits_for_the_decode_budget_then_gets_503_with_retry_after(make_client):
    make, store, _ = make_client
    client = make(decode_wait_s=0.05)
    budget = client.app.state.pixel_budget
    with budget.hold(budget.capacity, wait_s=1):
        r = predict(client)
    assert r.status_code == 503 and r.json()["error"]["field"] == "image"
    assert int(r.headers["Retry-After"]) >= 1
    assert store.count_predictions() == 0
    assert predict(client).status_code == 200  # room again: answered


def test_a_decode_budget_below_the_largest_image_is_refused(make_client):
    make, _, _ = make_client
    with pytest.raises(DataError, match="decode_budget_px"):
        make(decode_budget_px=1000)


# --- item 6: the key before the body, counted not written, rate limits ---


def _call(app, headers: dict[str, str], body: bytes) -> tuple[int, list[str]]:
    """Send one POST /v1/predictions to the ASGI app directly; returns the status and the log of
    what the app did with the body ("read" per receive call)."""
    log: list[str] = []
    sent: list[dict] = []

    async def receive():
        log.append("read")
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/v1/predictions", "raw_path": b"/v1/predictions",
             "query_string": b"", "root_path": "", "client": ("203.0.113.7", 5000),
             "server": ("testserver", 80),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], log


@pytest.mark.parametrize(("key", "status"), [(None, 401), ("skl_wrong", 403)])
def test_the_key_is_checked_before_the_body_is_read(make_client, key, status):
    make, store, _ = make_client
    client = make()
    headers = {"Content-Type": "multipart/form-data; boundary=x", "Content-Length": "10000000"}
    if key:
        headers["X-API-Key"] = key
    code, log = _call(client.app, headers, b"x" * 100)
    assert code == status and log == []  # refused without reading a byte
    assert store.query_failures().empty


def test_a_declared_oversized_body_is_refused_before_it_is_read(make_client):
    make, _, key = make_client
    client = make()
    headers = {"Content-Type": "multipart/form-data; boundary=x", "Content-Length": "999999999",
               "X-API-Key": key}
    assert _call(client.app, headers, b"x") == (413, [])


def test_unauthorized_requests_are_counted_in_prometheus_never_written(make_client):
    make, store, _ = make_client
    client = make(auth_failures_per_address="1000/minute")
    client.headers["X-API-Key"] = "skl_guess"
    for _ in range(30):
        assert predict(client).status_code == 403
    del client.headers["X-API-Key"]
    assert predict(client).status_code == 401
    text = client.get("/metrics").text
    assert _sample(text, "skinlesion_refused_total", reason="unknown_key") == 30
    assert _sample(text, "skinlesion_refused_total", reason="missing_key") == 1
    assert _sample(text, "skinlesion_requests_total", endpoint="predictions", model_version="none",
                   outcome="unauthorized") == 31
    assert store.query_failures().empty


def test_failed_key_checks_lock_the_address_out_for_the_window(make_client):
    make, store, key = make_client
    client = make(auth_failures_per_address="3/minute")
    client.headers["X-API-Key"] = "skl_guess"
    assert [predict(client).status_code for _ in range(4)] == [403, 403, 403, 429]
    client.headers["X-API-Key"] = key
    r = predict(client)  # even the right key: no more guessing from this address for a while
    assert r.status_code == 429 and r.json()["error"]["field"] == "X-API-Key"
    assert 0 < int(r.headers["Retry-After"]) <= 60
    assert store.count_predictions() == 0 and store.query_failures().empty


def test_rate_limit_per_address(make_client):
    make, _, _ = make_client
    client = make(rate_limit_per_address="3/minute")
    assert [predict(client).status_code for _ in range(4)] == [200, 200, 200, 429]
    text = client.get("/metrics").text
    assert _sample(text, "skinlesion_refused_total", reason="address_rate") == 1
    assert _sample(text, "skinlesion_requests_total", endpoint="predictions", model_version="none",
                   outcome="throttled") == 1


def test_rate_limit_per_key_leaves_other_keys_alone(make_client):
    make, store, _ = make_client
    client = make(rate_limit_per_key="2/minute")
    assert [predict(client).status_code for _ in range(3)] == [200, 200, 429]
    client.headers["X-API-Key"] = store.create_api_key("second-app")
    assert predict(client).status_code == 200


def test_bad_rate_limit_settings_are_refused_naming_the_setting(make_client):
    make, _, _ = make_client
    with pytest.raises(DataError, match="rate_limit_per_key"):
        make(rate_limit_per_key="lots")


# --- item 10: revoked keys ---


def test_a_key_revoked_elsewhere_stops_working_within_the_cache_ttl(make_client):
    make, store, _ = make_client
    client = make(key_cache_ttl_s=0.2)
    client.headers["X-API-Key"] = store.create_api_key("to-revoke")
    assert predict(client).status_code == 200  # checked and cached
    Store(str(store.url)).revoke_api_key(
        "to-revoke", actor="t", role="admin", reason="leaked")  # as another process would
    time.sleep(0.25)
    assert predict(client).status_code == 403


def test_key_cache_ttl_over_a_second_is_refused():
    with pytest.raises(DataError, match="within a second"):
        KeyVerifier(lambda key: None, ttl_s=5)


def test_a_key_revoked_in_this_process_stops_working_at_once(make_client):
    make, store, _ = make_client
    client = make(key_cache_ttl_s=1.0)
    client.headers["X-API-Key"] = store.create_api_key("to-revoke-here")
    assert predict(client).status_code == 200  # checked and cached for a second
    client.app.state.service.store.revoke_api_key("to-revoke-here", actor="t", role="admin",
                                                  reason="leaked")
    assert predict(client).status_code == 403  # no wait: this process revoked it
