"""Readiness tells the truth (issue 16, item 7): /readyz is 503 with the reason when the store cannot
write or no model can load, and a store failure while answering is a 503 with the reason, counted."""

from __future__ import annotations

import duckdb
import pytest

from skinlesion.errors import StoreError
from skinlesion.store import ServingRoute, Store
from tests.api.test_api import _sample, env, predict  # noqa: F401 (fixture)


def _read_only(*args, **kwargs):
    raise StoreError("the store cannot write (IO Error: Read-only file system)")


def test_readyz_is_503_when_the_store_cannot_write(env, monkeypatch):
    client, store, _ = env
    assert client.get("/readyz").json()["store_writable"] is True
    monkeypatch.setattr(store, "check_writable", _read_only)
    r = client.get("/readyz")
    assert r.status_code == 503 and "Read-only file system" in r.json()["reason"]
    assert r.headers["Retry-After"]


def test_readyz_is_503_when_no_model_can_load(env):
    client, store, _ = env
    store.set_route(ServingRoute(active_version="ghost-v9"), actor="t", role="ml_lead", reason="x")
    r = client.get("/readyz")
    assert r.status_code == 503 and "ghost-v9" in r.json()["reason"]


def test_a_store_failure_while_answering_is_503_with_the_reason_and_counted(env, monkeypatch):
    client, store, _ = env
    monkeypatch.setattr(store, "log_predictions", _read_only)
    r = predict(client)
    assert r.status_code == 503, r.text
    assert "Read-only file system" in r.json()["error"]["message"] and r.headers["Retry-After"]
    assert _sample(client.get("/metrics").text, "skinlesion_requests_total", endpoint="predictions",
                   model_version="main-v1", outcome="unavailable") == 1
    monkeypatch.undo()
    assert store.count_predictions() == 0 and predict(client).status_code == 200


def test_a_duckdb_file_that_cannot_be_written_is_a_store_error(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    with pytest.raises(StoreError, match="cannot write .*Read-only file system"):
        with store.backend.write():
            raise duckdb.IOException("IO Error: Read-only file system")
    store.check_writable()  # a real probe on a writable store passes
