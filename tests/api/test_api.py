"""The prediction API end to end with TestClient, a tmp DuckDB and a stand-in model."""

from __future__ import annotations

import io
import uuid

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from skinlesion import registry
from skinlesion.api import create_app
from skinlesion.serving import ServingService
from skinlesion.settings import Settings
from skinlesion.store import ServingRoute, Store
from tests.standins import STANDIN_KIND, STANDIN_PATH, save_standin


def jpeg(value: int = 120, size=(64, 48), fmt="JPEG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (value, max(value - 40, 0), max(value - 60, 0))).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.CLASSIFIER_KINDS, STANDIN_KIND, STANDIN_PATH)
    settings = Settings(home=tmp_path, max_upload_bytes=200_000, route_ttl_s=0.0)
    save_standin(settings.models_dir, "main-v1", threshold=0.5)
    save_standin(settings.models_dir, "rules-v1", threshold=0.2, scale=0.5)
    store = Store(settings.db_path)
    store.set_route(ServingRoute(active_version="main-v1", fallback_version="rules-v1"),
                    actor="test", role="ml_lead", reason="set-up")
    key = store.create_api_key("clinic-app")
    service = ServingService(store, settings.models_dir, route_ttl_s=0.0)
    with TestClient(create_app(settings, service=service), raise_server_exceptions=False) as client:
        client.headers["X-API-Key"] = key
        yield client, store, key
    service.close()


def predict(client, image=None, **fields):
    files = {"image": ("lesion.jpg", jpeg() if image is None else image, "image/jpeg")}
    return client.post("/v1/predictions", files=files, data=fields)


def test_prediction_is_answered_and_logged_once(env):
    client, store, _ = env
    r = predict(client, age_approx="55", sex="female", anatom_site_general="posterior torso")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "main-v1" and body["model_role"] == "active"
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-6
    assert body["decision"] in {"refer", "no referral", "uncertain"}
    logged = store.get_prediction(body["request_id"])
    assert logged is not None and logged.source == "api" and logged.sex == "female"
    assert store.count_predictions() == 1
    assert client.get(f"/v1/predictions/{body['request_id']}").json()["p_malignant"] == \
        pytest.approx(body["p_malignant"])


def test_planted_signal_reaches_the_decision(env):
    client, _, _ = env
    dark = predict(client, image=jpeg(40)).json()
    light = predict(client, image=jpeg(230)).json()
    assert dark["p_malignant"] > light["p_malignant"]


@pytest.mark.parametrize(("fields", "field", "allowed"), [
    ({"sex": "unknown-sex"}, "sex", "female"),
    ({"anatom_site_general": "torso"}, "anatom_site_general", "anterior torso"),
    ({"age_approx": "150"}, "age_approx", None),
    ({"age_approx": "old"}, "age_approx", None),
])
def test_bad_metadata_is_422_naming_the_field(env, fields, field, allowed):
    client, store, _ = env
    r = predict(client, **fields)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["field"] == field
    if allowed:
        assert allowed in err["allowed"]
    assert store.count_predictions() == 0


@pytest.mark.parametrize(("image", "status", "words"), [
    (b"", 422, "empty"),
    (b"this is a text file", 422, "not an image"),
    (jpeg()[:200], 422, "truncated"),
    (jpeg(size=(8, 8)), 422, "pixels"),
    (b"x" * 300_000, 413, "limit"),
])
def test_bad_images_are_rejected_and_nothing_is_logged(env, image, status, words):
    client, store, _ = env
    r = predict(client, image=image)
    assert r.status_code == status, r.text
    assert r.json()["error"]["field"] == "image" and words in r.json()["error"]["message"].lower()
    assert store.count_predictions() == 0
    assert client.get("/healthz").status_code == 200


def test_decompression_bomb_is_refused(env):
    client, store, _ = env
    buf = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buf, "PNG")  # ~15 KB on the wire, 100 Mpx decoded
    assert len(buf.getvalue()) < 100_000
    r = predict(client, image=buf.getvalue())
    assert r.status_code == 422 and "decompression bomb" in r.json()["error"]["message"]
    assert store.count_predictions() == 0


def test_missing_image_field_names_it(env):
    client, _, _ = env
    r = client.post("/v1/predictions", data={"sex": "male"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "image"


def test_auth_missing_wrong_and_revoked_keys(env):
    client, store, key = env
    assert predict(client).status_code == 200
    del client.headers["X-API-Key"]
    assert predict(client).status_code == 401
    client.headers["X-API-Key"] = "skl_wrong"
    assert predict(client).status_code == 403
    other = store.create_api_key("old-app")
    client.headers["X-API-Key"] = other
    client.app.state.key_cache = {}
    store.revoke_api_key("old-app", actor="test", role="admin", reason="rotated")
    assert predict(client).status_code == 403
    assert client.get("/healthz").status_code == 200  # health needs no key


def test_route_switch_to_fallback_takes_effect_without_restart(env):
    client, store, _ = env
    assert predict(client).json()["model_version"] == "main-v1"
    store.set_route(ServingRoute(active_version="main-v1", fallback_version="rules-v1",
                                 fallback_engaged=True), actor="lead", role="ml_lead",
                    reason="model red")
    body = predict(client).json()
    assert (body["model_version"], body["model_role"]) == ("rules-v1", "fallback")
    assert client.get("/readyz").json()["model_role"] == "fallback"


def test_restricted_mode_refers_everything_not_clearly_benign(env):
    client, store, _ = env
    store.set_route(ServingRoute(active_version="main-v1", restricted_to_clear_cases=True),
                    actor="lead", role="ml_lead", reason="red")
    mid = predict(client, image=jpeg(190)).json()  # p_malignant ~0.37: below 0.5, not clear
    assert mid["decision"] == "refer" and "restricted" in mid["decision_reason"]


def test_labels_join_by_request_id_and_by_image_hash(env):
    client, store, _ = env
    first = predict(client, image=jpeg(60)).json()
    second = predict(client, image=jpeg(200)).json()
    r = client.post("/v1/labels", json={"labels": [
        {"request_id": first["request_id"], "diagnosis": "MEL"},
        {"image_sha256": second["image_sha256"], "diagnosis": "NV", "source": "review"},
        {"request_id": str(uuid.uuid4()), "diagnosis": "BCC"},
    ]})
    assert r.status_code == 201 and r.json() == {"stored": 3, "matched": 2}
    joined = store.labelled_predictions().set_index("request_id")["diagnosis"]
    assert joined[first["request_id"]] == "MEL" and joined[second["request_id"]] == "NV"
    bad = client.post("/v1/labels", json={"labels": [{"request_id": first["request_id"],
                                                      "diagnosis": "melanoma"}]})
    assert bad.status_code == 422


def test_unknown_request_id_is_404(env):
    client, _, _ = env
    assert client.get(f"/v1/predictions/{uuid.uuid4()}").status_code == 404
    assert client.get("/v1/predictions/not-a-uuid").status_code == 422


def test_model_failure_is_500_with_request_id_and_server_stays_up(env, monkeypatch):
    client, store, _ = env
    from tests import standins

    def boom(self, images, metadata):
        raise RuntimeError("CUDA exploded")

    monkeypatch.setattr(standins.BrightnessClassifier, "predict_proba", boom)
    r = predict(client)
    assert r.status_code == 500 and r.json()["error"]["request_id"]
    assert store.count_predictions() == 0
    assert client.get("/healthz").status_code == 200


def test_metrics_have_counts_and_latency_without_request_ids(env):
    client, _, _ = env
    body = predict(client).json()
    predict(client, sex="nonsense")
    text = client.get("/metrics").text
    assert 'skinlesion_requests_total{endpoint="predictions",model_version="main-v1",outcome="ok"} 1.0' in text
    assert 'outcome="rejected"' in text
    assert "skinlesion_request_latency_seconds_bucket" in text
    assert body["request_id"] not in text


def test_readyz_reports_model_and_store(env):
    client, _, _ = env
    body = client.get("/readyz").json()
    assert body["status"] == "ready" and body["model_version"] == "main-v1"
