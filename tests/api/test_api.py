"""The prediction API end to end with TestClient, a tmp DuckDB and a stand-in model."""

from __future__ import annotations

import io
import logging
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from skinlesion import registry
from skinlesion.api import create_app
from skinlesion.data.images import MAX_PIXELS, MIN_SIDE
from skinlesion.errors import StoreBusyError
from skinlesion.monitoring.health import ERROR_RATE_METRIC, compute_health
from skinlesion.monitoring.policy import Policy
from skinlesion.serving import ServingService
from skinlesion.settings import Settings
from skinlesion.store import FailureRecord, ServingRoute, Store
from skinlesion.thresholds import Status
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
    ]})
    assert r.status_code == 201 and r.json() == {"stored": 2, "matched": 2}
    joined = store.labelled_predictions().set_index("request_id")["diagnosis"]
    assert joined[first["request_id"]] == "MEL" and joined[second["request_id"]] == "NV"
    bad = client.post("/v1/labels", json={"labels": [{"request_id": first["request_id"],
                                                      "diagnosis": "melanoma"}]})
    assert bad.status_code == 422


def test_unknown_request_id_is_404(env):
    client, _, _ = env
    assert client.get(f"/v1/predictions/{uuid.uuid4()}").status_code == 404
    assert client.get("/v1/predictions/not-a-uuid").status_code == 422


def _break_the_model(monkeypatch):
    from tests import standins

    def boom(self, images, metadata):
        raise RuntimeError("CUDA exploded")

    monkeypatch.setattr(standins.BrightnessClassifier, "predict_proba", boom)


def test_model_failure_is_500_with_request_id_and_server_stays_up(env, monkeypatch, caplog):
    client, store, _ = env
    _break_the_model(monkeypatch)
    with caplog.at_level(logging.ERROR, logger="skinlesion.api"):
        r = predict(client)
    assert r.status_code == 500
    request_id = r.json()["error"]["request_id"]
    logged = [rec for rec in caplog.records if request_id in rec.getMessage()]
    assert logged and logged[0].exc_info is not None  # the id reaches the log, with the traceback
    assert "CUDA exploded" in str(logged[0].exc_info[1])
    assert store.count_predictions() == 0
    failure = store.query_failures().iloc[0]
    assert (failure["request_id"], failure["kind"], failure["http_status"]) == (request_id, "error", 500)
    assert client.get("/healthz").status_code == 200


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the Prometheus sample ``name`` with exactly ``labels``, or None."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def test_metrics_have_counts_and_latency_without_request_ids(env, monkeypatch):
    client, store, _ = env
    body = predict(client).json()
    predict(client, sex="nonsense")
    assert client.post("/v1/labels", json={"labels": [{"request_id": body["request_id"],
                                                        "diagnosis": "MEL"}]}).status_code == 201
    assert client.post("/v1/labels", json={"labels": []}).status_code == 422
    store.set_route(ServingRoute(active_version="ghost-v9"), actor="test", role="ml_lead",
                    reason="a version that is not there")
    assert predict(client).status_code == 503
    store.set_route(ServingRoute(active_version="main-v1"), actor="test", role="ml_lead", reason="back")
    _break_the_model(monkeypatch)
    assert predict(client).status_code == 500
    text = client.get("/metrics").text
    total = "skinlesion_requests_total"
    assert _sample(text, total, endpoint="predictions", model_version="main-v1", outcome="ok") == 1
    assert _sample(text, total, endpoint="predictions", model_version="none", outcome="rejected") == 1
    assert _sample(text, total, endpoint="predictions", model_version="none", outcome="unavailable") == 1
    assert _sample(text, total, endpoint="predictions", model_version="none", outcome="error") == 1
    assert _sample(text, total, endpoint="labels", model_version="none", outcome="ok") == 1
    assert _sample(text, total, endpoint="labels", model_version="none", outcome="rejected") == 1
    latency = "skinlesion_request_latency_seconds_count"
    assert _sample(text, latency, endpoint="predictions", model_version="main-v1", outcome="ok") == 1
    assert _sample(text, latency, endpoint="predictions", model_version="none", outcome="error") == 1
    assert _sample(text, latency, endpoint="predictions", model_version="none", outcome="rejected") == 1
    assert body["request_id"] not in text and "nonsense" not in text
    assert dict(store.query_failures()["kind"].value_counts()) == {"rejected": 1, "unavailable": 1,
                                                                    "error": 1}


def test_store_busy_is_503_counted_with_its_model_version_but_not_recorded(env, monkeypatch):
    client, store, _ = env

    def busy(record):
        raise StoreBusyError("the store stayed locked")

    monkeypatch.setattr(client.app.state.service, "log", busy)
    r = predict(client)
    assert r.status_code == 503 and r.json()["error"]["request_id"]
    text = client.get("/metrics").text
    assert _sample(text, "skinlesion_requests_total", endpoint="predictions", model_version="main-v1",
                   outcome="unavailable") == 1
    assert store.query_failures().empty  # the locked store is what failed: no row to write there


def test_rejected_requests_are_recorded_without_patient_data_unauthorized_only_counted(env):
    client, store, _ = env
    assert predict(client, sex="nonsense", age_approx="47").status_code == 422
    del client.headers["X-API-Key"]
    assert predict(client).status_code == 401
    failures = store.query_failures().set_index("kind")
    assert list(failures.index) == ["rejected"]  # a request without a key costs no database write
    assert _sample(client.get("/metrics").text, "skinlesion_requests_total", endpoint="predictions",
                   model_version="none", outcome="unauthorized") == 1
    assert set(failures.columns) == {"request_id", "ts", "source", "model_version", "http_status",
                                     "field"}
    rejected = failures.loc["rejected"]
    assert (rejected["http_status"], rejected["field"], rejected["source"]) == (422, "sex", "api")
    assert rejected["model_version"] is None
    stored = set(failures.reset_index().drop(columns=["request_id", "ts"]).astype(str).to_numpy().ravel())
    assert not stored & {"nonsense", "47", "47.0"}  # nothing the client sent is kept
    assert store.count_predictions() == 0


def test_error_rate_of_the_health_report_counts_failed_requests(env):
    client, store, _ = env
    start = datetime.now(UTC) - timedelta(minutes=1)
    for _ in range(3):
        assert predict(client).status_code == 200
    assert predict(client, image=b"not an image").status_code == 422
    client.headers["X-API-Key"] = "skl_wrong"
    assert predict(client).status_code == 403  # not a service failure, and not even recorded
    store.log_failure(FailureRecord(http_status=500, kind="error", model_version="main-v1",
                                    source="batch"))  # planted: another source
    end = datetime.now(UTC) + timedelta(minutes=1)
    report = compute_health(store, start, end, policy=Policy(), resources=False)
    assert report.metrics[ERROR_RATE_METRIC].value == pytest.approx(2 / 5)
    assert report.metrics[ERROR_RATE_METRIC].n == 5
    assert report.failures == {"rejected": 1, "unauthorized": 0, "unavailable": 0, "error": 1}
    api = compute_health(store, start, end, policy=Policy(), source="api", resources=False)
    assert api.metrics[ERROR_RATE_METRIC].value == pytest.approx(1 / 4)
    batch = compute_health(store, start, end, policy=Policy(), source="batch", resources=False)
    assert batch.metrics[ERROR_RATE_METRIC].value == 1.0  # one failure, no answers
    assert report.metrics[ERROR_RATE_METRIC].status is Status.UNKNOWN  # no threshold in the policy


def test_bad_input_errors_name_the_allowed_values(env):
    client, _, _ = env
    age = predict(client, age_approx="150").json()["error"]
    assert (age["field"], age["allowed"]["min"], age["allowed"]["max"]) == ("age_approx", 0, 120)
    expected_image = {"formats": ["JPEG", "PNG"], "max_bytes": 200_000, "max_pixels": MAX_PIXELS,
                      "min_side_px": MIN_SIDE}
    too_big = predict(client, image=b"x" * 300_000).json()["error"]
    too_small = predict(client, image=jpeg(size=(8, 8))).json()["error"]
    missing = client.post("/v1/predictions", data={"sex": "male"}).json()["error"]
    for err in (too_big, too_small, missing):
        assert err["field"] == "image" and err["allowed"] == expected_image


def test_readyz_reports_model_and_store(env):
    client, _, _ = env
    body = client.get("/readyz").json()
    assert body["status"] == "ready" and body["model_version"] == "main-v1"
