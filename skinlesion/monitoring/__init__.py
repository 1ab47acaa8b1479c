"""Monitoring: is the served model still healthy, why not, and what to do about it.

Layer 6 (DESIGN.md, docs/ARCHITECTURE.md), above the store and beside :mod:`skinlesion.lifecycle`,
which it may call (the runner fires the retraining triggers) and which never imports it. Nothing
here speaks SQL (aggregations are :class:`skinlesion.store.Store` methods) and nothing imports
streamlit.

* :mod:`~skinlesion.monitoring.policy` — the clinic's monitoring plan (``thresholds.toml``: the
  bands of :mod:`skinlesion.thresholds`, windows, alerting, the retraining policy) and the
  playbook of each colour.
* :mod:`~skinlesion.monitoring.health` — a window's health report: label-based metrics, estimated
  performance, latency, volume (spikes/dips), decision mix, resource use.
* :mod:`~skinlesion.monitoring.estimate` — performance estimated before labels arrive (CBPE).
* :mod:`~skinlesion.monitoring.drift` — data drift against the model version's reference (the
  only module that imports evidently), with what it compares in
  :mod:`~skinlesion.monitoring.drift_features` and what it says in
  :mod:`~skinlesion.monitoring.drift_results`.
* :mod:`~skinlesion.monitoring.alerts`, :mod:`~skinlesion.monitoring.runner` — alerts, and one
  monitoring run (snapshot, alerts, notifications, retraining triggers) or a loop of them
  (``skinlesion monitor``).
"""
