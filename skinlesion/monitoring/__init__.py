"""Monitoring: is the served model still healthy, why not, and what to do about it.

Layer 5 (DESIGN.md), beside the store. Nothing here speaks SQL (aggregations are
:class:`skinlesion.store.Store` methods) and nothing imports streamlit.

* :mod:`~skinlesion.monitoring.policy` — the clinic's thresholds (``thresholds.toml``), the
  green/yellow/red status of a value, and the playbook of each colour.
* :mod:`~skinlesion.monitoring.health` — a window's health report: label-based metrics, estimated
  performance, latency, volume (spikes/dips), decision mix, resource use.
* :mod:`~skinlesion.monitoring.estimate` — performance estimated before labels arrive (CBPE).
* :mod:`~skinlesion.monitoring.drift` — data drift against the model version's reference.
* :mod:`~skinlesion.monitoring.snapshots`, :mod:`~skinlesion.monitoring.alerts`,
  :mod:`~skinlesion.monitoring.runner` — stored health snapshots, alerts, ``skinlesion monitor``.
"""
