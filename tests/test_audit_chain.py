"""The audit log's hash chain (issue 16, item 9): rewriting, deleting or inserting a row with direct
database access is found, and the first broken row is named; on both backends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from skinlesion.store import Store
from skinlesion.store.route import GENESIS_HASH


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    store = Store(store_url)
    for i in range(5):
        store.append_audit("lead", "ml_lead", "note", target=f"t{i}", reason=f"reason {i}",
                           details={"n": i, "nested": {"b": [1, 2.5], "a": None}})
    yield store
    store.release()


def _tamper(store: Store, sql: str, params: list) -> None:
    """Change the audit log behind the store's back, as someone with database access would."""
    with store.backend.write() as con:
        con.run(sql, params)


def _rows(store: Store):
    return store.query_audit().sort_values("ts").reset_index(drop=True)


def test_an_untouched_chain_verifies(store: Store):
    check = store.verify_audit()
    assert check.intact and (check.rows, check.checked) == (5, 5)
    store.set_route(store.get_route(), actor="lead", role="ml_lead", reason="same route")
    assert store.verify_audit().intact  # actions audited inside other transactions chain too


@pytest.mark.parametrize(("column", "value"), [("reason", "nothing to see"), ("actor", "someone"),
                                               ("target", None)])
def test_a_rewritten_row_is_named(store: Store, column: str, value):
    victim = _rows(store).iloc[2]
    _tamper(store, f"UPDATE audit_log SET {column} = ? WHERE id = ?", [value, victim["id"]])
    check = store.verify_audit()
    assert not check.intact and check.broken_id == victim["id"] and check.checked == 2
    assert "content changed" in check.problem


def test_rewritten_details_are_found(store: Store):
    victim = _rows(store).iloc[4]
    details = '{"n": 40, "nested": {"a": null, "b": [1, 2.5]}}'
    _tamper(store, "UPDATE audit_log SET details = ? WHERE id = ?", [details, victim["id"]])
    assert store.verify_audit().broken_id == victim["id"]


def test_a_deleted_row_breaks_the_link_of_the_next(store: Store):
    rows = _rows(store)
    _tamper(store, "DELETE FROM audit_log WHERE id = ?", [rows.iloc[1]["id"]])
    check = store.verify_audit()
    assert check.broken_id == rows.iloc[2]["id"] and "link" in check.problem


def test_a_row_rehashed_by_hand_still_breaks_the_next_link(store: Store):
    rows = _rows(store)
    _tamper(store, "UPDATE audit_log SET reason = 'x', row_hash = ? WHERE id = ?",
            ["f" * 64, rows.iloc[0]["id"]])
    check = store.verify_audit()
    assert check.broken_id in (rows.iloc[0]["id"], rows.iloc[1]["id"])


def test_rows_from_before_the_chain_are_chained_by_the_next_write(store: Store):
    _tamper(store, "UPDATE audit_log SET prev_hash = NULL, row_hash = NULL", [])
    check = store.verify_audit()
    assert not check.intact and "not chained" in check.problem and check.checked == 0
    store.append_audit("lead", "ml_lead", "note", reason="after the upgrade")
    check = store.verify_audit()
    assert check.intact and check.rows == 6


def test_the_first_row_links_to_the_genesis_hash(store: Store):
    with store.backend.read() as con:
        first = con.one("SELECT prev_hash FROM audit_log ORDER BY seq LIMIT 1")
    assert first[0] == GENESIS_HASH
