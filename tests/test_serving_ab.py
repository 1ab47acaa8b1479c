"""Serving under A/B, shadow and tuned thresholds: the split honours the share and is sticky per
image; the shadow answers in the background, logged and never returned; overrides change decisions."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from skinlesion import registry
from skinlesion.schema import Metadata
from skinlesion.serving import ServingService, choose, shadow_choice, traffic_bucket
from skinlesion.store import ServingRoute, Store
from tests.standins import STANDIN_KIND, STANDIN_PATH, save_standin

META = Metadata.from_raw(50, "female", "posterior torso")


def keys(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [hashlib.sha256(rng.bytes(16)).hexdigest() for _ in range(n)]


def png(seed: int, grey: int = 128) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(grey + rng.integers(-10, 11, (40, 48, 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("share", [0.05, 0.2, 0.5])
def test_challenger_gets_its_share_of_1000_images(share):
    route = ServingRoute(active_version="a", challenger_version="b", challenger_share=share)
    arms = [choose(route, k).role for k in keys(1000)]
    assert arms.count("challenger") / 1000 == pytest.approx(share, abs=0.04)
    assert set(arms) == {"active", "challenger"}


def test_split_is_sticky_per_image_and_nested_as_the_share_grows():
    small = ServingRoute(active_version="a", challenger_version="b", challenger_share=0.1)
    large = small.model_copy(update={"challenger_share": 0.3})
    for key in keys(300, seed=1):
        first = choose(small, key)
        assert all(choose(small, key) == first for _ in range(3))
        assert choose(ServingRoute.model_validate(small.model_dump()), key) == first
        if first.role == "challenger":  # raising the share never moves an image back
            assert choose(large, key).role == "challenger"


def test_bucket_is_deterministic_uniform_and_salted():
    ks = keys(2000, seed=2)
    buckets = np.array([traffic_bucket(k, "b") for k in ks])
    assert [traffic_bucket(k, "b") for k in ks[:20]] == list(buckets[:20])
    assert ((buckets >= 0) & (buckets < 1)).all()
    assert np.histogram(buckets, bins=5, range=(0, 1))[0] == pytest.approx([400] * 5, abs=60)
    other = np.array([traffic_bucket(k, "c") for k in ks])
    assert abs(np.corrcoef(buckets, other)[0, 1]) < 0.1  # each challenger draws its own arms


def test_fallback_answers_everything_and_requests_without_a_key_go_to_the_active():
    route = ServingRoute(active_version="a", challenger_version="b", challenger_share=0.9,
                         fallback_version="f", fallback_engaged=True, shadow_version="s",
                         threshold_overrides={"f": 0.2, "s": 0.7})
    assert {choose(route, k).version for k in keys(50)} == {"f"}
    assert choose(route, keys(1)[0]).threshold == 0.2
    released = route.model_copy(update={"fallback_engaged": False})
    assert choose(released).role == "active" and choose(released).threshold is None
    shadow = shadow_choice(route)
    assert (shadow.version, shadow.role, shadow.threshold) == ("s", "shadow", 0.7)
    assert shadow_choice(ServingRoute(active_version="a")) is None


@pytest.fixture
def service(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.CLASSIFIER_KINDS, STANDIN_KIND, STANDIN_PATH)
    for vid in ("main", "new", "shadowed"):
        save_standin(tmp_path / "models", vid, threshold=0.5)
    store = Store(tmp_path / "db.duckdb")
    svc = ServingService(store, tmp_path / "models", route_ttl_s=0.0)
    yield svc
    svc.close()


def route_to(svc: ServingService, **fields) -> None:
    svc.store.set_route(ServingRoute(active_version="main", **fields), actor="t", role="ml_lead",
                        reason="test")


def test_service_answers_each_image_from_its_arm_every_time(service):
    route_to(service, challenger_version="new", challenger_share=0.5)
    images = [png(seed) for seed in range(24)]
    first = [service.predict(img, META, source="api") for img in images]
    again = [service.predict(img, META, source="api") for img in images]
    assert [r.model_version for r in first] == [r.model_version for r in again]
    assert {r.model_role for r in first} == {"active", "challenger"}
    for record in first:
        expected = choose(service.route(), record.image_sha256)
        assert (record.model_version, record.model_role) == (expected.version, expected.role)
    assert service.store.count_predictions(model_role="challenger") == \
        2 * sum(r.model_role == "challenger" for r in first)


def test_shadow_answer_is_logged_not_returned(service):
    route_to(service, shadow_version="shadowed")
    record = service.predict(png(0), META, source="dashboard")
    assert (record.model_version, record.model_role, record.returned) == ("main", "active", True)
    service.drain(timeout=30)
    rows = service.store.query_predictions().set_index("model_role")
    assert set(rows.index) == {"active", "shadow"}
    assert rows.loc["shadow", "model_version"] == "shadowed" and not rows.loc["shadow", "returned"]
    assert rows.loc["shadow", "image_sha256"] == record.image_sha256
    assert rows.loc["shadow", "source"] == "dashboard"


def test_a_failing_shadow_never_reaches_the_caller(service):
    route_to(service, shadow_version="not-on-disk")
    record = service.predict(png(0), META, source="api")
    service.drain(timeout=30)
    assert record.model_version == "main" and service.shadow_failures == 1
    assert service.store.count_predictions() == 1


def test_tuned_threshold_changes_the_decision_and_is_logged(service):
    image = png(3, grey=110)  # the stand-in answers p_malignant ~ 0.57
    route_to(service)
    at_card = service.predict(image, META, source="api")
    assert at_card.threshold == 0.5 and at_card.decision == "refer"
    route_to(service, threshold_overrides={"main": 0.65})
    tuned = service.predict(image, META, source="api")
    assert tuned.p_malignant == pytest.approx(at_card.p_malignant)
    assert tuned.threshold == 0.65 and tuned.decision == "no referral"
    assert service.store.get_prediction(tuned.request_id).threshold == 0.65
