"""``skinlesion monitor``: health snapshots, alerts, notifications and the retraining triggers, once
or on a cadence (:mod:`skinlesion.monitoring.runner`), with the gauges for Prometheus."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from skinlesion.cli.options import DataDir, ModelsDir, PolicyFile, fail, models_folder, open_store, settings
from skinlesion.errors import SkinLesionError

if TYPE_CHECKING:
    from skinlesion.monitoring.exporter import HealthExporter
    from skinlesion.monitoring.runner import SnapshotResult
    from skinlesion.store import Store

app = typer.Typer()

_STATUS_COLOURS = {"green": typer.colors.GREEN, "yellow": typer.colors.YELLOW, "red": typer.colors.RED}


def _show(result: SnapshotResult) -> None:
    """One line per run (coloured by its status), then the retraining triggers that fired."""
    typer.secho(result.summary(), fg=_STATUS_COLOURS.get(result.snapshot.status))
    for outcome in result.retraining:
        typer.echo(outcome.describe())


def _check_flags(once: bool, every: str | None, metrics_port: int | None, runs: int | None,
                 webhook: str | None) -> None:
    if once == (every is not None):
        raise fail(ValueError("give either --once or --every INTERVAL (e.g. --every 15m)"))
    if once and (metrics_port is not None or runs is not None):
        raise fail(ValueError("--metrics-port and --runs go with --every, not --once"))
    if webhook is not None and not webhook.startswith(("http://", "https://")):
        raise fail(ValueError(f"--webhook must be an http(s) URL, got {webhook!r}"))


def _serve_gauges(exporter: HealthExporter, store: Store, window: str, port: int,
                  host: str) -> None:
    """Serve the health gauges on ``host:port`` (/metrics), filled from the latest snapshot."""
    try:
        bound = exporter.serve(port, addr=host)
    except OSError as err:
        raise fail(OSError(f"cannot serve the gauges on {host}:{port} ({err}); choose another "
                           "--metrics-port")) from err
    exporter.update(store.latest_snapshot(window), store.open_alerts())
    typer.echo(f"gauges on http://{host}:{bound}/metrics", err=True)


@app.command()
def monitor(once: Annotated[bool, typer.Option("--once", help="Run once and exit.")] = False,
            every: Annotated[str | None, typer.Option(help="Run now and then on this cadence until "
                                                      "Ctrl-C: 30s, 15m, 1h, 1d.")] = None,
            window: Annotated[str, typer.Option(help="Health window ending at each run: one the "
                                                "policy names (24h, 7d, 30d) or a duration (12h).")
                              ] = "24h",
            webhook: Annotated[str | None, typer.Option(
                help="POST a JSON body to this URL for every alert opened, escalated or resolved "
                "(retried on the next run when it fails).")] = None,
            metrics_port: Annotated[int | None, typer.Option(
                min=0, max=65535, help="Serve the health gauges for Prometheus on this port "
                "(/metrics).")] = None,
            metrics_host: Annotated[str, typer.Option(help="Interface for --metrics-port.")
                                    ] = "127.0.0.1",
            runs: Annotated[int | None, typer.Option(min=1, help="With --every: stop after this "
                                                     "many runs.")] = None,
            policy_file: PolicyFile = None, models_dir: ModelsDir = None,
            retrain: Annotated[bool, typer.Option(
                "--retrain/--no-retrain", help="Launch retraining jobs on the policy's triggers "
                "(schedule, events, active learning) after each run.")] = True) -> None:
    """Snapshot the service's health (metrics, drift, worst status), update alerts and notify;
    prints one line per run; then launches retraining when a trigger of the policy is due. Give
    --once, or --every to keep monitoring."""
    from skinlesion.monitoring.alerts import WebhookNotifier
    from skinlesion.monitoring.exporter import HealthExporter
    from skinlesion.monitoring.policy import load_policy
    from skinlesion.monitoring.runner import parse_interval, run_every, run_once, window_length

    _check_flags(once, every, metrics_port, runs, webhook)
    try:
        interval = parse_interval(every) if every is not None else None
        policy = load_policy(policy_file)
        window_length(policy, window)
        store = open_store()
    except (SkinLesionError, ValueError) as err:
        raise fail(err) from err
    run = {"window": window, "notifier": WebhookNotifier(webhook) if webhook else None,
           "retrain_cache_dir": settings().cache_dir if retrain else None}
    folder = models_folder(models_dir)
    if interval is None:
        try:
            _show(run_once(store, folder, policy, **run))
        except SkinLesionError as err:
            raise fail(err) from err
        return
    exporter, callbacks = HealthExporter(), [_show]
    if metrics_port is not None:
        _serve_gauges(exporter, store, window, metrics_port, metrics_host)
        callbacks.append(lambda result: exporter.update(result.snapshot, result.open_alerts))
    try:
        run_every(store, folder, policy, every=interval, on_result=callbacks, runs=runs,
                  on_error=lambda err: typer.secho(f"run failed: {err}; retrying next run", err=True,
                                                   fg=typer.colors.RED), **run)
    except KeyboardInterrupt:
        typer.echo("monitor stopped", err=True)
    finally:
        exporter.close()


@app.command("validate-monitoring")
def validate_monitoring(
        data: DataDir,
        version: Annotated[str, typer.Option(help="Model version to validate (its test split, from "
                                             "its manifest, is replayed).")] = "reference",
        out: Annotated[Path, typer.Option(help="Results (JSON).")] = Path("bench/monitoring_validation.json"),
        windows: Annotated[int, typer.Option(min=2, help="Days replayed per scenario.")] = 30,
        per_window: Annotated[int, typer.Option(min=10, help="Answers per day.")] = 300,
        test_images: Annotated[int | None, typer.Option(min=10, help="Test images replayed (a seeded "
                                                        "subset; default: the whole test split).")] = None,
        acquisition_images: Annotated[int | None, typer.Option(min=10, help="Test images replayed under "
                                                               "each acquisition shift (a seeded subset; "
                                                               "default: all replayed ones).")] = None,
        scenario: Annotated[list[str] | None, typer.Option(help="Only these scenarios (repeat).")] = None,
        seed: int = 0, models_dir: ModelsDir = None, policy_file: PolicyFile = None) -> None:
    """Replay a labelled image folder through the real Predictor and store as daily traffic, healthy
    and under named shifts, run the monitor on each day and report false alarms, detection, the
    features named, the estimates' error and band coverage, and the OOD gate (answers cached under
    the cache folder: a rerun costs no model time)."""
    from skinlesion.monitoring.policy import load_policy
    from skinlesion.monitoring.replay import results_table
    from skinlesion.monitoring.replay import validate_monitoring as replay

    try:
        results = replay(data, models_folder(models_dir), settings().cache_dir / "monitoring-validation",
                         version=version, policy=load_policy(policy_file), windows=windows,
                         per_window=per_window, seed=seed, scenarios=scenario,
                         test_images=test_images, acquisition_images=acquisition_images)
    except (SkinLesionError, ValueError) as err:
        raise fail(err) from err
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=float) + "\n")
    typer.echo(results_table(results))
    typer.echo(str(out), err=True)
