"""Words instead of identifiers: one table of display names for what the cockpit shows.

Metrics (``pauc_80`` → "Partial AUC above 80 % sensitivity"), their units, features of the drift
monitor (``mean_r`` → "Mean red level"), health columns (``estimated_status``), audit actions and
route operations (``set_route``/``engage_fallback`` → "Switched to the fallback model") and the
sentence an audit entry reads as. Anything not in a table is turned into words by
:func:`humanize`, so a raw identifier never reaches a page. Pure: no Streamlit, no store.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

#: What a missing value shows (with :data:`MISSING_HELP` as its tooltip).
MISSING = "—"
MISSING_HELP = "No value: not measured in this window, or not known for this record."
#: The one date format of the cockpit (UTC), and its plotly ``tickformat``/hover equivalent.
DATE_FORMAT = "%Y-%m-%d %H:%M UTC"
PLOTLY_DATE_FORMAT = "%Y-%m-%d %H:%M"

#: metric id -> (display name, unit or "" for a plain ratio/number)
METRICS: dict[str, tuple[str, str]] = {
    "accuracy": ("Accuracy (malignant vs benign)", ""),
    "precision": ("Precision (positive predictive value)", ""),
    "recall": ("Recall (sensitivity)", ""),
    "sensitivity": ("Sensitivity", ""),
    "specificity": ("Specificity", ""),
    "f1": ("F1 score", ""),
    "fnr": ("False-negative rate", ""),
    "auroc": ("AUROC", ""),
    "pauc_80": ("Partial AUC above 80 % sensitivity", ""),
    "log_loss": ("Log loss (malignant vs benign)", ""),
    "log_loss_multiclass": ("Log loss (8 classes)", ""),
    "balanced_accuracy": ("Balanced accuracy (8 classes)", ""),
    "ece": ("Calibration error (ECE)", ""),
    "ece_15": ("Calibration error (ECE, 15 bins)", ""),
    "drift_score": ("Data drift (share of features drifted)", ""),
    "ood_share": ("Out-of-distribution share", ""),
    "uncertain_share": ("Uncertain answers", ""),
    "error_rate": ("Error rate (failed requests)", ""),
    "latency_p50_ms": ("Latency p50", "ms"),
    "latency_p95_ms": ("Latency p95", "ms"),
    "latency_p99_ms": ("Latency p99", "ms"),
    "volume": ("Volume", "answers"),
    "label_coverage": ("Label coverage", ""),
    "label_lag_hours": ("Label lag (median)", "h"),
    "sensitivity_at_specificity_80": ("Sensitivity at 80 % specificity", ""),
}

#: feature id of the drift monitor / prediction log -> display name
FEATURES: dict[str, str] = {
    "age_approx": "Age (approx.)",
    "sex": "Sex",
    "anatom_site_general": "Anatomical site",
    "width": "Image width (px)",
    "height": "Image height (px)",
    "brightness": "Brightness",
    "contrast": "Contrast",
    "saturation": "Colour saturation",
    "mean_r": "Mean red level",
    "mean_g": "Mean green level",
    "mean_b": "Mean blue level",
    "sharpness": "Sharpness",
    "texture_distance": "Image texture (distance to the training images)",
    "predicted_class": "Predicted class",
    "p_malignant": "Probability of malignancy",
    "embedding": "Image content (model embedding)",
    "decision": "Decision",
    "model_version": "Model version",
    "model_role": "Model role",
    "source": "Source",
    "latency_ms": "Latency (ms)",
}

#: health-report and table columns -> display name
COLUMNS: dict[str, str] = {
    "ts": "Time (UTC)",
    "value": "Value",
    "status": "Status",
    "estimated": "Estimated value",
    "estimated_status": "Estimated status",
    "effective_status": "Status",
    "previous_value": "Previous window",
    "previous_estimated": "Previous estimate",
    "change": "Change",
    "n": "Cases",
    "note": "Note",
    "actor": "Who",
    "role": "Role",
    "action": "Action",
    "target": "On",
    "reason": "Why",
    "details": "Details",
    "metric": "Metric",
    "feature": "Feature",
    "severity": "Severity",
    "message": "Message",
    "opened_at": "Opened (UTC)",
    "resolved_at": "Resolved (UTC)",
    "acknowledged_by": "Acknowledged by",
    "acknowledged_at": "Acknowledged (UTC)",
    "silenced_until": "Silenced until (UTC)",
    "assignee": "Assigned to",
    "request_id": "Request",
    "image_sha256": "Image (hash)",
    "diagnosis": "Diagnosis",
    "labelled_by": "Labelled by",
    "active_version": "Active model",
    "fallback_version": "Fallback model",
    "fallback_engaged": "Fallback engaged",
    "challenger_version": "Challenger",
    "challenger_share": "Challenger share of traffic",
    "shadow_version": "Shadow model",
    "restricted": "Restricted to clear cases",
    "threshold": "Operating threshold",
    **FEATURES,
}

#: audit actions and route operations -> what was done, in words (past tense)
ACTIONS: dict[str, str] = {
    "set_route": "Changed the serving route",
    "engage_fallback": "Switched to the fallback model",
    "release_fallback": "Switched back from the fallback model",
    "rollback": "Rolled back to the previous model",
    "activate": "Activated a model version",
    "restrict": "Restricted answers to clear cases",
    "lift_restriction": "Lifted the restriction to clear cases",
    "start_challenger": "Started an A/B test with a challenger",
    "set_challenger_share": "Changed the challenger's share of traffic",
    "stop_challenger": "Stopped the A/B test",
    "start_shadow": "Started a shadow model",
    "stop_shadow": "Stopped the shadow model",
    "set_threshold": "Changed the operating threshold",
    "revert_threshold": "Reverted the operating threshold",
    "archive": "Archived a model version",
    "unarchive": "Restored an archived model version",
    "create_api_key": "Created an API key",
    "revoke_api_key": "Revoked an API key",
    "label": "Labelled a case",
    "import_labels": "Imported labels",
    "launch_retraining": "Launched retraining",
    "cancel_job": "Cancelled a job",
    "resolve_alert": "Resolved an alert",
    "acknowledge_alert": "Acknowledged an alert",
    "silence_alert": "Silenced an alert",
    "unsilence_alert": "Lifted an alert's silence",
    "assign_alert": "Assigned an alert",
    "open_alert": "Alert opened",
    "sign_in": "Signed in",
    "sign_out": "Signed out",
    "sign_in_failed": "Failed sign-in",
    "action_refused": "Action refused (role)",
    "predict": "Asked for a prediction",
}

STATUSES: dict[str, str] = {"green": "Healthy", "yellow": "Watch", "red": "Act now",
                            "unknown": "Not enough data", "mitigated": "Mitigated"}
ROLES: dict[str, str] = {"viewer": "Viewer (clinical operations)", "clinician": "Clinician",
                         "ml_lead": "ML lead"}


def humanize(identifier: str) -> str:
    """An identifier nobody named, in words: ``foo_bar_ms`` → "Foo bar ms"."""
    words = str(identifier).replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:] if words else MISSING


def metric_name(metric: str) -> str:
    return METRICS[metric][0] if metric in METRICS else humanize(metric)


def metric_unit(metric: str) -> str:
    return METRICS[metric][1] if metric in METRICS else ""


def metric_label(metric: str) -> str:
    """The name with its unit, for an axis title: "Latency p95 (ms)"."""
    unit = metric_unit(metric)
    return f"{metric_name(metric)} ({unit})" if unit else metric_name(metric)


def feature_name(feature: str) -> str:
    if feature in FEATURES:
        return FEATURES[feature]
    if feature.startswith("p_") and feature[2:].isupper():
        return f"Probability of {feature[2:]}"
    return humanize(feature)


def column_name(column: str) -> str:
    return COLUMNS.get(column) or METRICS.get(column, (None,))[0] or humanize(column)


def action_name(action: str) -> str:
    return ACTIONS.get(action) or humanize(action)


def status_name(status: str) -> str:
    return STATUSES.get(status) or humanize(status)


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or \
        (isinstance(value, str) and value.strip().lower() in ("", "none", "nan", "unknown"))


def format_value(value: Any, *, decimals: int = 3) -> str:
    """A cell for display: ``—`` when missing, datetimes in :data:`DATE_FORMAT`, floats rounded
    (whole numbers without decimals), booleans as yes/no, identifiers kept."""
    if is_missing(value):
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.strftime(DATE_FORMAT)
    if isinstance(value, float):
        return f"{value:.0f}" if value.is_integer() else f"{value:.{decimals}f}"
    return str(value)


def _route_words(route: Mapping[str, Any]) -> str:
    parts = [f"active model {route.get('active_version') or MISSING}"]
    if route.get("fallback_engaged"):
        parts.append(f"fallback {route.get('fallback_version')} serving")
    if route.get("restricted"):
        parts.append("restricted to clear cases")
    if route.get("challenger_version"):
        share = route.get("challenger_share")
        parts.append(f"challenger {route['challenger_version']}"
                     + (f" on {share:.0%} of traffic" if isinstance(share, int | float) else ""))
    if route.get("shadow_version"):
        parts.append(f"shadow {route['shadow_version']}")
    return ", ".join(parts)


def details_sentence(details: Mapping[str, Any] | None) -> str:
    """An audit entry's ``details`` as a sentence (never JSON): the route after a route change,
    then the other entries as "Name: value" pairs."""
    if not details:
        return MISSING
    parts = []
    if isinstance(details.get("route"), Mapping):
        parts.append("Route now: " + _route_words(details["route"]) + ".")
    for key, value in details.items():
        if key in ("route", "previous", "previous_route", "operation"):
            continue
        if isinstance(value, Mapping):
            value = ", ".join(f"{humanize(k).lower()} {format_value(v)}" for k, v in value.items())
        elif isinstance(value, list | tuple):
            value = ", ".join(format_value(v) for v in value)
        parts.append(f"{humanize(key)}: {format_value(value)}.")
    return " ".join(parts) or MISSING


def audit_action(action: str, details: Mapping[str, Any] | None) -> str:
    """What an audit entry did: a route change reads as its operation ("Switched to the fallback
    model"), every other action as its own words."""
    operation = (details or {}).get("operation")
    return action_name(operation) if isinstance(operation, str) else action_name(action)


def audit_sentence(entry: Mapping[str, Any]) -> str:
    """One audit entry as a sentence: "lead (ML lead) switched to the fallback model on
    reference — red recall."."""
    what = audit_action(str(entry.get("action", "")), entry.get("details"))
    who = entry.get("actor") or MISSING
    role = ROLES.get(str(entry.get("role")), "")
    sentence = f"{who}{f' ({role})' if role else ''}: {what}"
    if not is_missing(entry.get("target")):
        sentence += f" — {entry['target']}"
    if not is_missing(entry.get("reason")):
        sentence += f". Why: {entry['reason']}"
    return sentence + "."


#: lower-case identifiers that read as raw names in a sentence (``fnr`` but not ``recall``)
_RAW_WORDS = {"ece", "fnr", "auroc", "f1"}


def _identifier_pattern() -> re.Pattern[str]:
    names = [k for k in (*METRICS, *FEATURES) if "_" in k or k in _RAW_WORDS]
    return re.compile(r"\b(" + "|".join(sorted(map(re.escape, names), key=len, reverse=True))
                      + r")\b")


_IDENTIFIER = _identifier_pattern()


def in_words(text: str) -> str:
    """A sentence written by the library (a playbook hint, an alert message) with the metric and
    feature identifiers in it replaced by their names: "Drifted features: mean_r, age_approx." →
    "Drifted features: Mean red level, Age (approx.)."."""
    return _IDENTIFIER.sub(lambda m: FEATURES.get(m.group(1)) or metric_name(m.group(1)), text)
