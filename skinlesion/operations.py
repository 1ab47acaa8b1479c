"""Operator actions on the serving route, shared by the dashboard and the CLI.

Each action checks the operator's role (skinlesion.auth), validates the new route against the models
folder, and sets it through :meth:`Store.set_route`, which writes the route and its audit row (who,
role, why, the route before and after, and the operation's name under ``details``) in one
transaction. Servers follow the route within seconds (ServingService re-reads it).

- :func:`engage_fallback` / :func:`release_fallback`: answer with the rule-based fallback, or stop.
- :func:`rollback`: back to the active version before the current one, in one action.
- :func:`activate`: serve a version (promote a candidate; a challenger or shadow it was is cleared).
- :func:`restrict`: answer only clear cases (the monitoring plan's red measure), or lift that.
- :func:`archive` / :func:`unarchive`: retire a version that holds no role in the route (it stays on
  disk, listed as archived, and cannot be activated until restored), or restore it.

Also here, for the same screens: :func:`versions_table` (the versions side by side with their roles
in the route) and :func:`resolve_alert` (an operator closing an alert, audited).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from skinlesion.auth import ROLES, can
from skinlesion.errors import PermissionDeniedError, SkinLesionError
from skinlesion.registry import ModelCard, list_versions, resolve_version
from skinlesion.store import DEFAULT_ACTIVE_VERSION, Alert, AuditEntry, ServingRoute, Store

#: the skinlesion.auth action every route change needs
ROUTE_ACTION = "manage_models"


class OperationError(SkinLesionError):
    """A route change that cannot be made as asked (nothing to roll back to, no fallback version,
    already in that state); the message says what to do instead."""


def require(role: str, action: str) -> None:
    """PermissionDeniedError unless ``role`` may take ``action`` (skinlesion.auth.can)."""
    if not can(role, action):
        allowed = " or ".join(r for r in ROLES if can(r, action))
        raise PermissionDeniedError(f"the role {role!r} may not {action.replace('_', ' ')}; this "
                                    f"needs {allowed}")


def fallback_versions(models_dir: Path) -> list[str]:
    """Ids of the rule-based fallback versions in ``models_dir``, newest last."""
    return [card.id for card in list_versions(models_dir) if card.kind == "fallback"]


def _set(store: Store, route: ServingRoute, *, operation: str, actor: str, role: str,
         reason: str) -> AuditEntry:
    """Check the role and the reason, validate ``route`` and make it current (audited)."""
    require(role, ROUTE_ACTION)
    if not reason.strip():
        raise OperationError("give a reason: every route change is audited with why it was made")
    route = ServingRoute.model_validate(route.model_dump())
    return store.set_route(route, actor=actor, role=role, reason=reason.strip(),
                           details={"operation": operation})


def engage_fallback(store: Store, models_dir: Path, *, actor: str, role: str, reason: str,
                    version: str | None = None) -> AuditEntry:
    """Answer every request with the fallback: ``version`` (an id or alias), else the route's
    fallback version, else the newest fallback version in ``models_dir``."""
    require(role, ROUTE_ACTION)
    route = store.get_route()
    if route.fallback_engaged and version is None:
        raise OperationError(f"the fallback {route.fallback_version} is already engaged")
    if version is not None:
        chosen = resolve_version(models_dir, version)
    elif route.fallback_version is not None:
        chosen = resolve_version(models_dir, route.fallback_version)
    else:
        found = fallback_versions(models_dir)
        if not found:
            raise OperationError(f"no fallback version (kind 'fallback') in {models_dir}; register "
                                 "one (skinlesion.model.fallback.fit_fallback) or name the version "
                                 "to use")
        chosen = found[-1]
    return _set(store, route.model_copy(update={"fallback_version": chosen, "fallback_engaged": True}),
                operation="engage_fallback", actor=actor, role=role, reason=reason)


def release_fallback(store: Store, *, actor: str, role: str, reason: str) -> AuditEntry:
    """Answer with the active version again (the fallback version stays set for next time)."""
    require(role, ROUTE_ACTION)
    route = store.get_route()
    if not route.fallback_engaged:
        raise OperationError("the fallback is not engaged; the active version "
                             f"{route.active_version} already answers")
    return _set(store, route.model_copy(update={"fallback_engaged": False}),
                operation="release_fallback", actor=actor, role=role, reason=reason)


def previous_active_version(store: Store) -> str | None:
    """The active version served before the current one (from the route history; the default
    reference version counts as the one before any route was set), or None."""
    current = store.get_route().active_version
    history = store.route_history()["active_version"].tolist() + [DEFAULT_ACTIVE_VERSION]
    return next((v for v in history if v != current), None)


def _promoted(route: ServingRoute, version: str) -> ServingRoute:
    """``route`` with ``version`` active; a challenger or shadow slot it held is emptied."""
    update: dict[str, object] = {"active_version": version}
    if route.challenger_version == version:
        update |= {"challenger_version": None, "challenger_share": 0.0}
    if route.shadow_version == version:
        update["shadow_version"] = None
    return route.model_copy(update=update)


def rollback(store: Store, models_dir: Path, *, actor: str, role: str, reason: str) -> AuditEntry:
    """Make the previously active version active again, in one action."""
    require(role, ROUTE_ACTION)
    previous = previous_active_version(store)
    if previous is None:
        raise OperationError("no earlier active version to roll back to; the route history shows "
                             "only the current one")
    version = resolve_version(models_dir, previous)
    return _set(store, _promoted(store.get_route(), version), operation="rollback", actor=actor,
                role=role, reason=reason)


def activate(store: Store, models_dir: Path, version: str, *, actor: str, role: str,
             reason: str) -> AuditEntry:
    """Serve ``version`` (an id or alias) as the active model: promote a candidate."""
    require(role, ROUTE_ACTION)
    vid = resolve_version(models_dir, version)
    route = store.get_route()
    if route.active_version == vid:
        raise OperationError(f"{vid} is already the active version")
    if vid in store.archived_versions():
        raise OperationError(f"{vid} is archived; restore it first (`skinlesion models unarchive "
                             f"{vid}`)")
    return _set(store, _promoted(route, vid), operation="activate", actor=actor, role=role,
                reason=reason)


def restrict(store: Store, on: bool, *, actor: str, role: str, reason: str) -> AuditEntry:
    """Answer only clear cases (anything not clearly benign is referred), or lift that."""
    require(role, ROUTE_ACTION)
    route = store.get_route()
    if route.restricted_to_clear_cases == on:
        raise OperationError(f"answers are already {'restricted to' if on else 'not restricted to'} "
                             "clear cases")
    return _set(store, route.model_copy(update={"restricted_to_clear_cases": on}),
                operation="restrict" if on else "lift_restriction", actor=actor, role=role,
                reason=reason)


def archive(store: Store, models_dir: Path, version: str, *, actor: str, role: str,
            reason: str) -> AuditEntry:
    """Archive ``version``: a candidate that was not promoted, or a retired model. Refused while
    the version holds a role in the serving route (active, fallback, challenger, shadow)."""
    require(role, ROUTE_ACTION)
    if not reason.strip():
        raise OperationError("give a reason: archiving a version is audited with why")
    vid = resolve_version(models_dir, version)
    roles = route_roles(store.get_route()).get(vid)
    if roles:
        raise OperationError(f"{vid} is {' and '.join(roles)} in the serving route; change the "
                             "route first")
    if vid in store.archived_versions():
        raise OperationError(f"{vid} is already archived")
    return store.set_archived(vid, True, actor=actor, role=role, reason=reason.strip(),
                              details={"operation": "archive"})


def unarchive(store: Store, models_dir: Path, version: str, *, actor: str, role: str,
              reason: str) -> AuditEntry:
    """Restore an archived ``version`` (it may be activated again)."""
    require(role, ROUTE_ACTION)
    if not reason.strip():
        raise OperationError("give a reason: restoring a version is audited with why")
    vid = resolve_version(models_dir, version)
    if vid not in store.archived_versions():
        raise OperationError(f"{vid} is not archived")
    return store.set_archived(vid, False, actor=actor, role=role, reason=reason.strip(),
                              details={"operation": "unarchive"})


#: the card metrics compared side by side (per split), in display order
COMPARED_METRICS: tuple[str, ...] = ("auroc", "pauc_80", "recall", "specificity", "precision",
                                     "balanced_accuracy", "log_loss", "ece")


def route_roles(route: ServingRoute) -> dict[str, list[str]]:
    """The roles each version holds in ``route`` (``active``, ``fallback (engaged)``, ...)."""
    roles: dict[str, list[str]] = {}
    roles.setdefault(route.active_version, []).append("active")
    if route.fallback_version:
        roles.setdefault(route.fallback_version, []).append(
            "fallback (engaged)" if route.fallback_engaged else "fallback")
    if route.challenger_version:
        roles.setdefault(route.challenger_version, []).append(
            f"challenger {route.challenger_share:.0%}")
    if route.shadow_version:
        roles.setdefault(route.shadow_version, []).append("shadow")
    return roles


def versions_table(cards: list[ModelCard], route: ServingRoute,
                   archived: Iterable[str] = ()) -> pd.DataFrame:
    """One row per version, newest first: ``id``, ``role`` (in the route; ``archived`` for the
    ``archived`` versions), ``kind``, ``architecture``, ``created``, ``parent``, ``data`` (its
    name), ``fingerprint`` (first 12 hex digits), ``n_images``, ``threshold`` and
    ``val_<metric>`` / ``test_<metric>`` for
    :data:`COMPARED_METRICS` (NaN where the card lacks it)."""
    roles = route_roles(route)
    for vid in archived:
        roles.setdefault(vid, []).append("archived")
    rows = []
    for card in reversed(cards):
        row = {"id": card.id, "role": ", ".join(roles.get(card.id, [])), "kind": card.kind,
               "architecture": card.architecture, "created": card.created, "parent": card.parent,
               "data": card.data.name, "fingerprint": card.data.fingerprint[:12],
               "n_images": card.data.n_images, "threshold": card.threshold}
        for split in ("val", "test"):
            values = card.metrics.get(split, {})
            for metric in COMPARED_METRICS:
                value = values.get(metric)
                row[f"{split}_{metric}"] = float("nan") if value is None else float(value)
        rows.append(row)
    return pd.DataFrame(rows)


def resolve_alert(store: Store, alert_id: str, *, actor: str, role: str, reason: str) -> Alert:
    """Close an open alert by hand (e.g. a false alarm, or the cause is fixed) and audit it. The
    monitor opens a new alert if the metric is still out of bounds on its next run."""
    require(role, "manage_alerts")
    if not reason.strip():
        raise OperationError("give a reason: closing an alert is audited with why")
    alert = store.resolve_alert(alert_id, message=f"resolved by {actor}: {reason.strip()}")
    store.append_audit(actor, role, "resolve_alert", target=alert.key, reason=reason.strip(),
                       details={"alert_id": alert.id, "status": alert.status})
    return alert
