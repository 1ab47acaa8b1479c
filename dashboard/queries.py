"""The dashboard's reads of the store: typed functions, each one :class:`~skinlesion.store.Store`
query, cached for ``components.QUERY_TTL_S`` seconds.

Pages call these instead of the store (so a type checker sees every query and its arguments, and a
page refresh within the TTL does not hit the database again). Every cache key includes the database
path, so two homes never share entries; :func:`components.clear_caches` forgets them all after an
action changed the store. Arguments must be hashable (datetimes, strings, numbers, None).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

import pandas as pd
import streamlit as st

import components
from components import QUERY_TTL_S
from skinlesion.store import Alert, AlertAction, Store

P = ParamSpec("P")
R = TypeVar("R")


def cached_query(query: Callable[Concatenate[Store, P], R]) -> Callable[P, R]:
    """``query(store, ...)`` run on the current settings' store and cached per database file."""

    def run(db_path: str, args: tuple, kwargs: tuple) -> R:
        return query(components.store(), *args, **dict(kwargs))

    # st.cache_data keys a function by its qualified name and source: name each query's own cache
    run.__qualname__ = run.__name__ = f"{query.__name__}_cached"
    cached = st.cache_data(ttl=QUERY_TTL_S, show_spinner=False)(run)

    @functools.wraps(query)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return cached(components.settings().store_url, args, tuple(sorted(kwargs.items())))

    return call


# --- alerts and audit ------------------------------------------------------------------------------------


@cached_query
def open_alerts(store: Store) -> list[Alert]:
    """The alerts not yet resolved, oldest first."""
    return store.open_alerts()


@cached_query
def alerts(store: Store, start: datetime, end: datetime, *, include_resolved: bool = True
           ) -> pd.DataFrame:
    """Alerts active at some time in ``[start, end)``, newest first."""
    return store.query_alerts(start, end, include_resolved=include_resolved)


@cached_query
def alert_actions(store: Store, alert_ids: tuple[str, ...]) -> list[AlertAction]:
    """What operators did about ``alert_ids`` (acknowledge, silence, assign), oldest first."""
    return store.alert_actions(list(alert_ids))


@cached_query
def audit(store: Store, start: datetime, end: datetime, *, actor: str | None = None,
          action: str | None = None) -> pd.DataFrame:
    """Audit entries in ``[start, end)`` (of ``actor``, of ``action``), newest first."""
    return store.query_audit(start, end, actor=actor, action=action)


@cached_query
def route_history(store: Store, *, limit: int | None = None) -> pd.DataFrame:
    """Every route set, newest first, with who set it and why."""
    return store.route_history(limit=limit)


# --- health over time ------------------------------------------------------------------------------------


@cached_query
def snapshots(store: Store, start: datetime, end: datetime, *, metric: str | None = None,
              model_version: str | None = None) -> pd.DataFrame:
    """Snapshot metrics taken in ``[start, end)``, oldest first."""
    return store.query_snapshots(start, end, metric=metric, model_version=model_version)


@cached_query
def labelled_predictions(store: Store, start: datetime, end: datetime, *,
                         model_version: str | None = None, returned: bool | None = None
                         ) -> pd.DataFrame:
    """Answers in ``[start, end)`` with their latest label."""
    return store.labelled_predictions(start, end, model_version=model_version, returned=returned)


@cached_query
def sample_predictions(store: Store, start: datetime, end: datetime, *, n: int,
                       model_version: str | None = None, returned: bool | None = None
                       ) -> pd.DataFrame:
    """At most ``n`` answers of ``[start, end)`` drawn uniformly (seeded), oldest first."""
    return store.sample_predictions(start, end, n=n, model_version=model_version,
                                    returned=returned)


# --- operations ------------------------------------------------------------------------------------------


@cached_query
def hourly_operations(store: Store, start: datetime, end: datetime, *,
                      model_version: str | None = None, source: str | None = None,
                      returned: bool | None = None, by_source: bool = False) -> pd.DataFrame:
    """Answers, latency and failures per UTC hour of ``[start, end)``."""
    return store.hourly_operations(start, end, model_version=model_version, source=source,
                                   returned=returned, by_source=by_source)


@cached_query
def window_summary(store: Store, start: datetime, end: datetime, *,
                   model_version: str | None = None, source: str | None = None,
                   returned: bool | None = None) -> dict[str, Any]:
    """Operational numbers of the answers in ``[start, end)`` (count, latency, decisions)."""
    return store.window_summary(start, end, model_version=model_version, source=source,
                                returned=returned)


@cached_query
def failure_counts(store: Store, start: datetime, end: datetime, *,
                   model_version: str | None = None, source: str | None = None) -> dict[str, int]:
    """Failed prediction requests in ``[start, end)`` by kind."""
    return store.failure_counts(start, end, model_version=model_version, source=source)


# --- review ----------------------------------------------------------------------------------------------


@cached_query
def review_cases(store: Store, start: datetime | None = None, end: datetime | None = None, *,
                 labelled: bool | None = None, order: Literal["risk", "newest"] = "risk",
                 model_version: str | None = None, source: str | None = None,
                 simulated: bool | None = None, limit: int | None = None) -> pd.DataFrame:
    """Returned answers in ``[start, end)`` for the review screens, in ``order``."""
    return store.review_cases(start, end, labelled=labelled, order=order,
                              model_version=model_version, source=source, simulated=simulated,
                              limit=limit)
