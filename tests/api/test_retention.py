"""Image retention (``Settings.retain_images``): the API built from the settings keeps the uploaded
image under ``data/images`` and logs its path when retention is on; otherwise only its hash."""

from __future__ import annotations

import hashlib
import io

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from skinlesion import registry
from skinlesion.api import create_app
from skinlesion.settings import Settings
from skinlesion.store import ServingRoute, Store
from tests.standins import STANDIN_KIND, STANDIN_PATH, save_standin


def png() -> bytes:
    pixels = np.random.default_rng(0).integers(60, 200, (48, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def answer(tmp_path, monkeypatch, retain: bool):
    """Post one image to an app built from settings with ``retain_images=retain``; returns the
    settings, the image bytes and the logged row."""
    monkeypatch.setitem(registry.CLASSIFIER_KINDS, STANDIN_KIND, STANDIN_PATH)
    settings = Settings(home=tmp_path, retain_images=retain)
    save_standin(settings.models_dir, "main-v1")
    store = Store(settings.db_path)
    store.set_route(ServingRoute(active_version="main-v1"), actor="t", role="ml_lead", reason="x")
    key = store.create_api_key("clinic-app")
    image = png()
    with TestClient(create_app(settings)) as client:
        r = client.post("/v1/predictions", headers={"X-API-Key": key},
                        files={"image": ("lesion.png", image, "image/png")})
    assert r.status_code == 200, r.text
    return settings, image, store.get_prediction(r.json()["request_id"])


def test_retention_on_keeps_the_image_under_data(tmp_path, monkeypatch):
    settings, image, logged = answer(tmp_path, monkeypatch, retain=True)
    sha = hashlib.sha256(image).hexdigest()
    kept = settings.data_dir / "images" / f"{sha}.png"
    assert logged.image_sha256 == sha and logged.image_path == str(kept)
    assert np.array_equal(np.asarray(Image.open(kept)), np.asarray(Image.open(io.BytesIO(image))))


def test_retention_off_keeps_only_the_hash(tmp_path, monkeypatch):
    settings, image, logged = answer(tmp_path, monkeypatch, retain=False)
    assert logged.image_sha256 == hashlib.sha256(image).hexdigest()
    assert logged.image_path is None
    assert not (settings.data_dir / "images").exists()
    assert not any(p.suffix in {".png", ".jpg"} for p in settings.home.rglob("*"))


def test_retention_is_off_unless_the_environment_switches_it_on(monkeypatch, tmp_path):
    monkeypatch.setenv("SKINLESION_HOME", str(tmp_path))
    assert Settings().retention_dir is None
    monkeypatch.setenv("SKINLESION_RETAIN_IMAGES", "true")
    assert Settings().retention_dir == tmp_path / "data" / "images"
