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
- :func:`start_challenger` / :func:`stop_challenger`: A/B — a share of the requests (sticky per
  image) answered by a challenger; :func:`start_shadow` / :func:`stop_shadow`: a version answering
  every request in the background, logged and never returned.
- :func:`set_threshold` / :func:`revert_threshold`: a new operating threshold for a version, kept in
  the route as its serving configuration (the model card is not edited); :func:`threshold_study`
  shows the sensitivity/specificity trade-off on recent labelled answers and proposes the threshold
  for a target sensitivity; :func:`threshold_history` lists the changes.

Also here, for the same screens: :func:`versions_table` (the versions side by side with their roles
in the route) and :func:`resolve_alert` (an operator closing an alert, audited).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skinlesion.auth import require
from skinlesion.errors import SkinLesionError
from skinlesion.operating_point import OperatingPoint, operating_point, threshold_for_target, tradeoff
from skinlesion.registry import ModelCard, list_versions, read_card, resolve_version
from skinlesion.store import DEFAULT_ACTIVE_VERSION, Alert, AuditEntry, ServingRoute, Store

#: the skinlesion.auth action every route change needs
ROUTE_ACTION = "manage_models"


class OperationError(SkinLesionError):
    """A route change that cannot be made as asked (nothing to roll back to, no fallback version,
    already in that state); the message says what to do instead."""


def fallback_versions(models_dir: Path) -> list[str]:
    """Ids of the rule-based fallback versions in ``models_dir``, newest last."""
    return [card.id for card in list_versions(models_dir) if card.kind == "fallback"]


def _set(store: Store, route: ServingRoute, *, operation: str, actor: str, role: str,
         reason: str, details: Mapping[str, Any] | None = None) -> AuditEntry:
    """Check the role and the reason, validate ``route`` and make it current (audited, with
    ``details`` beside the operation's name)."""
    require(role, ROUTE_ACTION)
    if not reason.strip():
        raise OperationError("give a reason: every route change is audited with why it was made")
    route = ServingRoute.model_validate(route.model_dump())
    return store.set_route(route, actor=actor, role=role, reason=reason.strip(),
                           details={**(details or {}), "operation": operation})


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
    # before any route is set the default version serves; activating it records the first route
    if route.active_version == vid and not store.route_history(limit=1).empty:
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


# --- A/B and shadow ---------------------------------------------------------------------------------


def _servable(store: Store, models_dir: Path, version: str, slot: str) -> tuple[ServingRoute, str]:
    """The current route and the id of ``version``, checked to be free for the ``slot``
    (challenger or shadow): not the active version, not in the other slot, not archived."""
    vid = resolve_version(models_dir, version)
    route = store.get_route()
    if vid == route.active_version:
        raise OperationError(f"{vid} is the active version; a {slot} is another version compared "
                             "with it")
    other = {"challenger": ("shadow", route.shadow_version),
             "shadow": ("challenger", route.challenger_version)}[slot]
    if vid == other[1]:
        raise OperationError(f"{vid} is already the {other[0]}; stop that first (`skinlesion "
                             f"models {other[0]} off`)")
    if vid in store.archived_versions():
        raise OperationError(f"{vid} is archived; restore it first (`skinlesion models unarchive "
                             f"{vid}`)")
    return route, vid


def start_challenger(store: Store, models_dir: Path, version: str, share: float, *, actor: str,
                     role: str, reason: str) -> AuditEntry:
    """A/B: ``version`` answers ``share`` of the requests (0 < share < 1), chosen by the image's
    content hash so the same image always goes to the same arm; or change the current
    challenger's share."""
    require(role, ROUTE_ACTION)
    if not 0.0 < share < 1.0:
        raise OperationError(f"the challenger's share must lie between 0 and 1, e.g. 0.1 for 10% "
                             f"of the requests, got {share}; to send it every request, activate it")
    route, vid = _servable(store, models_dir, version, "challenger")
    if route.challenger_version == vid and route.challenger_share == share:
        raise OperationError(f"{vid} already answers {share:.0%} of the requests")
    operation = "set_challenger_share" if route.challenger_version == vid else "start_challenger"
    return _set(store, route.model_copy(update={"challenger_version": vid, "challenger_share": share}),
                operation=operation, actor=actor, role=role, reason=reason,
                details={"version": vid, "share": share})


def stop_challenger(store: Store, *, actor: str, role: str, reason: str) -> AuditEntry:
    """End the A/B test: the active version answers every request again."""
    require(role, ROUTE_ACTION)
    route = store.get_route()
    if route.challenger_version is None:
        raise OperationError("no challenger is set; the active version answers every request")
    return _set(store, route.model_copy(update={"challenger_version": None, "challenger_share": 0.0}),
                operation="stop_challenger", actor=actor, role=role, reason=reason,
                details={"version": route.challenger_version})


def start_shadow(store: Store, models_dir: Path, version: str, *, actor: str, role: str,
                 reason: str) -> AuditEntry:
    """``version`` answers every request in the background: logged (role ``shadow``), never
    returned to the caller. Replaces the current shadow."""
    require(role, ROUTE_ACTION)
    route, vid = _servable(store, models_dir, version, "shadow")
    if route.shadow_version == vid:
        raise OperationError(f"{vid} is already the shadow")
    return _set(store, route.model_copy(update={"shadow_version": vid}), operation="start_shadow",
                actor=actor, role=role, reason=reason,
                details={"version": vid, "replaced": route.shadow_version})


def stop_shadow(store: Store, *, actor: str, role: str, reason: str) -> AuditEntry:
    """Stop the shadow model."""
    require(role, ROUTE_ACTION)
    route = store.get_route()
    if route.shadow_version is None:
        raise OperationError("no shadow version is set")
    return _set(store, route.model_copy(update={"shadow_version": None}), operation="stop_shadow",
                actor=actor, role=role, reason=reason, details={"version": route.shadow_version})


# --- operating threshold ------------------------------------------------------------------------------

#: the fewest labelled answers a threshold is tuned on (below, the trade-off is noise)
MIN_TUNING_CASES = 30


@dataclass(frozen=True)
class ThresholdStudy:
    """The sensitivity/specificity trade-off of one version on its labelled answers of
    ``[start, end)``: ``curve`` (:func:`skinlesion.operating_point.tradeoff`), ``current`` (at the
    threshold it serves with: the route's override, else its card's), ``card_threshold``,
    ``tuned`` (whether an override is in force) and, for a ``target_sensitivity``, the
    ``proposed`` operating point."""

    version: str
    start: datetime | None
    end: datetime | None
    n: int
    curve: pd.DataFrame
    card_threshold: float
    tuned: bool
    current: OperatingPoint
    target_sensitivity: float | None = None
    proposed: OperatingPoint | None = None

    def evidence(self) -> dict[str, Any]:
        """What the audit row records beside a threshold set from this study."""
        return {"window": [t.isoformat() if t else None for t in (self.start, self.end)],
                "n_labelled": self.n, "target_sensitivity": self.target_sensitivity,
                "before": self.current.model_dump(),
                "after": self.proposed.model_dump() if self.proposed else None}


def threshold_study(store: Store, models_dir: Path, version: str, start: datetime | None = None,
                    end: datetime | None = None, *, target_sensitivity: float | None = None,
                    min_cases: int = MIN_TUNING_CASES) -> ThresholdStudy:
    """The trade-off of ``version`` (an id or alias) on its labelled answers in ``[start, end)``
    (every role it answered in, shadow included: a candidate can be tuned before it serves),
    malignant as its card defines it; with ``target_sensitivity``, the threshold proposed for it."""
    if target_sensitivity is not None and not 0.0 < target_sensitivity <= 1.0:
        raise OperationError(f"the target sensitivity must lie in (0, 1], e.g. 0.95, got "
                             f"{target_sensitivity}")
    vid = resolve_version(models_dir, version)
    card = read_card(Path(models_dir) / vid)
    labelled = store.labelled_predictions(start, end, model_version=vid)
    truth = labelled["diagnosis"].isin(card.malignant).to_numpy(dtype=bool)
    n_malignant = int(truth.sum())
    if len(labelled) < min_cases or n_malignant == 0 or n_malignant == len(labelled):
        raise OperationError(
            f"{vid} has {len(labelled)} labelled answers ({n_malignant} malignant) in the window; "
            f"tuning its threshold needs at least {min_cases}, with malignant and benign cases: "
            "choose a longer window or label more cases (review queue, `skinlesion labels import`)")
    score = labelled["p_malignant"].to_numpy(dtype=np.float64)
    override = store.get_route().threshold_for(vid)
    current = operating_point(truth, score, card.threshold if override is None else override)
    proposed = (threshold_for_target(truth, score, target_sensitivity)
                if target_sensitivity is not None else None)
    return ThresholdStudy(vid, start, end, len(labelled), tradeoff(truth, score), card.threshold,
                          override is not None, current, target_sensitivity, proposed)


def set_threshold(store: Store, models_dir: Path, version: str, threshold: float | None, *,
                  actor: str, role: str, reason: str,
                  evidence: Mapping[str, Any] | None = None) -> AuditEntry:
    """Serve ``version`` at ``threshold`` from now on (None: back to its card's threshold). A new
    serving configuration in the route, audited with the previous value and ``evidence`` (e.g.
    :meth:`ThresholdStudy.evidence`); the model card stays as trained."""
    require(role, ROUTE_ACTION)
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise OperationError(f"the threshold is compared with p_malignant and must lie in [0, 1], "
                             f"got {threshold}")
    vid = resolve_version(models_dir, version)
    card = read_card(Path(models_dir) / vid)
    return _set_threshold(store, vid, threshold, card.threshold, operation="set_threshold"
                          if threshold is not None else "reset_threshold",
                          actor=actor, role=role, reason=reason, evidence=evidence)


def _set_threshold(store: Store, vid: str, threshold: float | None, card_threshold: float, *,
                   operation: str, actor: str, role: str, reason: str,
                   evidence: Mapping[str, Any] | None = None) -> AuditEntry:
    route = store.get_route()
    previous = route.threshold_for(vid)
    if previous == threshold:
        raise OperationError(f"{vid} already serves at "
                             + (f"the threshold {threshold:.4f}" if threshold is not None
                                else f"its card's threshold {card_threshold:.4f}"))
    overrides = {v: t for v, t in route.threshold_overrides.items() if v != vid}
    if threshold is not None:
        overrides[vid] = threshold
    return _set(store, route.model_copy(update={"threshold_overrides": overrides}),
                operation=operation, actor=actor, role=role, reason=reason,
                details={"version": vid, "threshold": threshold, "previous_threshold": previous,
                         "card_threshold": card_threshold, **(evidence or {})})


def threshold_history(store: Store, version: str) -> pd.DataFrame:
    """The threshold changes of ``version`` (an id), newest first: ``ts``, ``threshold`` (None:
    its card's), ``actor``, ``reason``."""
    history = store.route_history()
    values = [overrides.get(version) for overrides in history["threshold_overrides"]]
    changed = [value != older for value, older in zip(values, [*values[1:], None], strict=True)]
    out = history.assign(threshold=pd.Series(values, index=history.index, dtype=object))
    return out.loc[changed, ["ts", "threshold", "actor", "reason"]].reset_index(drop=True)


def revert_threshold(store: Store, models_dir: Path, version: str, *, actor: str, role: str,
                     reason: str) -> AuditEntry:
    """Serve ``version`` at the threshold it had before the current one (its card's, if it was
    never tuned before), in one action; audited like any change."""
    require(role, ROUTE_ACTION)
    vid = resolve_version(models_dir, version)
    history = threshold_history(store, vid)["threshold"].tolist()
    if not history:
        raise OperationError(f"{vid} serves at its card's threshold and was never tuned; nothing "
                             "to revert")
    previous = history[1] if len(history) > 1 else None
    card = read_card(Path(models_dir) / vid)
    return _set_threshold(store, vid, previous, card.threshold, operation="revert_threshold",
                          actor=actor, role=role, reason=reason)


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
    name), ``fingerprint`` (first 12 hex digits), ``n_images``, ``threshold`` (the card's),
    ``tuned_threshold`` (the route's override, NaN when none) and ``val_<metric>`` /
    ``test_<metric>`` for
    :data:`COMPARED_METRICS` (NaN where the card lacks it)."""
    roles = route_roles(route)
    for vid in archived:
        roles.setdefault(vid, []).append("archived")
    rows = []
    for card in reversed(cards):
        row = {"id": card.id, "role": ", ".join(roles.get(card.id, [])), "kind": card.kind,
               "architecture": card.architecture, "created": card.created, "parent": card.parent,
               "data": card.data.name, "fingerprint": card.data.fingerprint[:12],
               "n_images": card.data.n_images, "threshold": card.threshold,
               "tuned_threshold": route.threshold_overrides.get(card.id, float("nan"))}
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
