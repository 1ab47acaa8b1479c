"""Small SQL builders shared by the aggregate modules (parameterised; column names fixed by callers)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from skinlesion.errors import DataError
from skinlesion.records import utc


def cols(names: Iterable[str], alias: str | None = None) -> str:
    """``names`` quoted (PostgreSQL keeps the case of ``p_MEL`` only when quoted), comma-separated."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(f'{prefix}"{name}"' for name in names)


def where(start: datetime | None, end: datetime | None, filters: Mapping[str, object],
          alias: str) -> tuple[str, list[object]]:
    """A ``WHERE`` over ``[start, end)`` of ``alias.ts`` and equality filters (None = no filter).

    Filter keys are column names fixed by the calling function, never user input."""
    clauses: list[str] = []
    params: list[object] = []
    if start is not None:
        clauses.append(f"{alias}.ts >= ?")
        params.append(utc(start))
    if end is not None:
        clauses.append(f"{alias}.ts < ?")
        params.append(utc(end))
    for column, value in filters.items():
        if value is not None:
            clauses.append(f"{alias}.{column} = ?")
            params.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def equals(filters: Mapping[str, object], *extra: str) -> tuple[str, list[object]]:
    """``WHERE`` over equality ``filters`` (None = no filter) and ``extra`` clauses."""
    clauses = [f"{column} = ?" for column, value in filters.items() if value is not None]
    params: list[object] = [value for value in filters.values() if value is not None]
    clauses.extend(extra)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def limit(value: int | None) -> str:
    if value is None:
        return ""
    if value < 0:
        raise DataError(f"must be 0 or more, got {value}", field="limit")
    return f" LIMIT {int(value)}"


def json_dict(value: object) -> dict[str, Any]:
    """A JSON column's object as a dict: DuckDB returns text, psycopg the parsed value; NULL -> {}."""
    if isinstance(value, str):
        return json.loads(value)
    return dict(value) if isinstance(value, Mapping) else {}


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
