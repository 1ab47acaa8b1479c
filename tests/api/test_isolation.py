"""Clients are isolated (issue 16, items 2 and 3): every answer records the key that asked (its name,
never the key); a client reads and labels only its own answers (404 for others', as for answers
that do not exist) unless its key has the ``labeller`` or ``admin`` scope; who labelled is the key's
client, never text from the body."""

from __future__ import annotations

import uuid

import pytest

from skinlesion.errors import DataError
from skinlesion.store import ServingRoute
from tests.api.test_api import env, jpeg, predict  # noqa: F401 (fixture)


@pytest.fixture
def two_clients(env):
    client, store, key_a = env
    key_b = store.create_api_key("clinic-b")
    answer_a = predict(client, image=jpeg(70)).json()
    client.headers["X-API-Key"] = key_b
    answer_b = predict(client, image=jpeg(210)).json()
    client.headers["X-API-Key"] = key_a
    return client, store, key_a, key_b, answer_a, answer_b


def test_every_answer_records_the_key_name_never_the_key(two_clients):
    client, store, key_a, key_b, answer_a, answer_b = two_clients
    logged = store.query_predictions().set_index("request_id")["api_client"]
    assert logged[answer_a["request_id"]] == "clinic-app" and logged[answer_b["request_id"]] == "clinic-b"
    everything = store.query_predictions().astype(str).to_numpy().ravel()
    assert not any(key_a in v or key_b in v for v in everything)


def test_a_client_reads_only_its_own_answers(two_clients):
    client, _, _, _, answer_a, answer_b = two_clients
    assert client.get(f"/v1/predictions/{answer_a['request_id']}").status_code == 200
    other = client.get(f"/v1/predictions/{answer_b['request_id']}")
    missing = client.get(f"/v1/predictions/{uuid.uuid4()}")
    assert other.status_code == missing.status_code == 404  # others' answers look absent
    assert other.json()["error"]["field"] == "request_id"
    assert other.json()["error"]["message"].split(" with request id")[0] == \
        missing.json()["error"]["message"].split(" with request id")[0]


@pytest.mark.parametrize("target", ["request_id", "image_sha256"])
def test_a_client_labels_only_its_own_answers(two_clients, target):
    client, store, _, _, answer_a, answer_b = two_clients
    refused = client.post("/v1/labels", json={"labels": [
        {target: answer_a[target], "diagnosis": "MEL"}, {target: answer_b[target], "diagnosis": "NV"}]})
    assert refused.status_code == 404 and refused.json()["error"]["field"] == f"labels.1.{target}"
    assert store.labelled_predictions().empty  # nothing of the batch was stored
    own = client.post("/v1/labels", json={"labels": [{target: answer_a[target], "diagnosis": "MEL"}]})
    assert own.status_code == 201 and own.json() == {"stored": 1, "matched": 1}


@pytest.mark.parametrize(("scopes", "reads", "labels"), [
    (("labeller",), False, True), (("admin",), True, True), ((), False, False)])
def test_scopes_let_a_labelling_or_admin_client_reach_every_answer(two_clients, scopes, reads, labels):
    client, store, _, _, answer_a, answer_b = two_clients
    client.headers["X-API-Key"] = store.create_api_key(f"lab-{'-'.join(scopes) or 'none'}",
                                                        scopes=scopes)
    assert (client.get(f"/v1/predictions/{answer_b['request_id']}").status_code == 200) is reads
    r = client.post("/v1/labels", json={"labels": [{"request_id": answer_a["request_id"],
                                                    "diagnosis": "MEL"},
                                                   {"request_id": str(uuid.uuid4()), "diagnosis": "BCC"}]})
    assert (r.status_code == 201) is labels
    if labels:
        assert r.json() == {"stored": 2, "matched": 1}  # a label may arrive before its answer


def test_unknown_scopes_are_refused(env):
    _, store, _ = env
    with pytest.raises(Exception, match="unknown API key scope root"):
        store.create_api_key("x", scopes=("root",))


def test_who_labelled_is_the_key_never_body_text(two_clients):
    client, store, _, _, answer_a, _ = two_clients
    r = client.post("/v1/labels", json={"labels": [{"request_id": answer_a["request_id"],
                                                    "diagnosis": "MEL",
                                                    "labelled_by": "patient John Smith DOB 1970-01-01"}]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "labels.0.labelled_by"
    ok = client.post("/v1/labels", json={"labels": [{"request_id": answer_a["request_id"],
                                                     "diagnosis": "MEL"}]})
    assert ok.status_code == 201
    labelled = store.labelled_predictions()
    assert labelled["labelled_by"].tolist() == ["clinic-app"]
    assert not store.labelled_predictions().astype(str).apply(
        lambda c: c.str.contains("John")).any().any()


def test_audit_reasons_are_bounded_and_the_action_is_not_taken(env):
    _, store, _ = env
    with pytest.raises(DataError, match="at most 500") as err:
        store.append_audit("lead", "ml_lead", "note", reason="x" * 501)
    assert err.value.field == "reason"
    before = store.get_route()
    with pytest.raises(DataError, match="at most 500"):
        store.set_route(ServingRoute(active_version="rules-v1"), actor="lead", role="ml_lead",
                        reason="patient " * 100)
    assert store.get_route() == before and store.query_audit(action="note").empty
