"""The rules that must hold when several writers race (replicas, monitors, launchers on several
hosts), on each backend: one unfinished job per model, one open alert per key, one claim per
trigger, every route change audited with the route it replaced."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from skinlesion.errors import JobConflictError
from skinlesion.store import Alert, JobRecord, ServingRoute, Store

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
RACERS = 8


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    store = Store(store_url)
    yield store
    store.release()


def _race(store_url: str, work: Callable[[Store, int], object]) -> list[object]:
    """Run ``work(store, i)`` in RACERS threads released at once (each with its own Store on the
    URL); returns what each returned or raised."""
    barrier = threading.Barrier(RACERS)
    outcomes: list[object] = [None] * RACERS

    def run(i: int) -> None:
        racer = Store(store_url)
        barrier.wait(30)
        try:
            outcomes[i] = work(racer, i)
        except JobConflictError as err:
            outcomes[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(RACERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return outcomes


def test_racing_launchers_store_one_unfinished_job(store: Store, store_url: str) -> None:
    def launch(racer: Store, i: int) -> JobRecord:
        return racer.create_job(JobRecord(model="v1", trigger="manual", requested_by=f"lead-{i}",
                                          role="ml_lead"), is_live=lambda _: True)

    outcomes = _race(store_url, launch)
    launched = [o for o in outcomes if isinstance(o, JobRecord)]
    assert len(launched) == 1
    assert sum(isinstance(o, JobConflictError) for o in outcomes) == RACERS - 1
    assert [j.id for j in store.list_jobs(model="v1")] == [launched[0].id]


def test_racing_monitors_open_one_alert_per_key(store: Store, store_url: str) -> None:
    def raise_alert(racer: Store, i: int) -> Alert:
        return racer.upsert_alert(Alert(metric="recall", scope="24h", status="red", opened_at=T0,
                                        last_seen_at=T0, last_event_at=T0, message=f"monitor {i}"))

    outcomes = _race(store_url, raise_alert)
    open_alerts = store.open_alerts()
    assert len(open_alerts) == 1
    assert {o.id for o in outcomes} == {open_alerts[0].id}  # every racer got the one stored


def test_a_trigger_is_claimed_once(store: Store, store_url: str) -> None:
    outcomes = _race(store_url, lambda racer, i: racer.claim_trigger("alert:42", "event",
                                                                     details={"by": i}))
    assert sorted(outcomes) == [False] * (RACERS - 1) + [True]
    assert len(store.list_triggers()) == 1


def test_racing_route_changes_each_audit_the_route_they_replaced(store: Store, store_url: str) -> None:
    outcomes = _race(store_url, lambda racer, i: racer.set_route(
        ServingRoute(active_version=f"v{i}"), actor=f"lead-{i}", role="ml_lead", reason="race"))
    assert len(outcomes) == RACERS
    history = store.route_history()  # newest first
    actives = history["active_version"].tolist()
    audits = store.query_audit(action="set_route")  # newest first, the same order
    previous = [d["previous"]["active_version"] for d in audits["details"]]
    # the changes form one chain: each replaced exactly the one before it
    assert previous == [*actives[1:], "reference"]
    assert store.get_route().active_version == actives[0]
