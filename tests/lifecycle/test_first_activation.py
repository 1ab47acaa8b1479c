"""The first deployment (issue 16, item 11): before any route is set the default version serves;
activating it records the route and audits it instead of refusing; once set, activating the active
version again is refused."""

from __future__ import annotations

import pytest

from skinlesion import registry
from skinlesion.lifecycle.operations import OperationError, activate
from skinlesion.store import DEFAULT_ACTIVE_VERSION, Store
from tests.standins import STANDIN_KIND, STANDIN_PATH, save_standin


def test_activating_the_default_version_on_a_fresh_store_is_recorded_and_audited(tmp_path,
                                                                                  monkeypatch):
    monkeypatch.setitem(registry.CLASSIFIER_KINDS, STANDIN_KIND, STANDIN_PATH)
    save_standin(tmp_path / "models", DEFAULT_ACTIVE_VERSION)
    store = Store(tmp_path / "db.duckdb")
    assert store.get_route().active_version == DEFAULT_ACTIVE_VERSION  # serves by default
    entry = activate(store, tmp_path / "models", DEFAULT_ACTIVE_VERSION, actor="ana", role="ml_lead",
                     reason="first deployment")
    audit = store.query_audit(action="set_route")
    assert audit["id"].tolist() == [entry.id] and audit["reason"].tolist() == ["first deployment"]
    with pytest.raises(OperationError, match="already the active version"):
        activate(store, tmp_path / "models", DEFAULT_ACTIVE_VERSION, actor="ana", role="ml_lead",
                 reason="again")
