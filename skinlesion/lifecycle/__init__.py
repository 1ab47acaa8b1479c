"""The model lifecycle: everything that changes which model serves, and how new ones are made.

* :mod:`~skinlesion.lifecycle.operations` — operator actions on the serving route (fallback,
  rollback, promote, restrict, archive, A/B challenger, shadow, tuned thresholds), role-checked and
  audited;
* :mod:`~skinlesion.lifecycle.policy` — the retraining policy (schedule, events, active learning,
  training and gate settings);
* :mod:`~skinlesion.lifecycle.spec` — what a retraining job is asked to do, and where it reports;
* :mod:`~skinlesion.lifecycle.data` — the training data of a retrain (original data plus labelled
  production cases) and the recent hold-out;
* :mod:`~skinlesion.lifecycle.gate` — the champion/challenger comparison of a candidate;
* :mod:`~skinlesion.lifecycle.retrain` — one retrain: data, fit, gate, register the candidate;
* :mod:`~skinlesion.lifecycle.jobs` — retraining jobs in their own processes: launch, list, wait,
  cancel; :mod:`~skinlesion.lifecycle.job_process` — what runs inside one;
* :mod:`~skinlesion.lifecycle.triggers` — when retraining launches by itself.

Imported by the monitoring runner, the CLI and the dashboard; imports none of them.
"""
