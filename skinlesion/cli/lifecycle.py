"""The model lifecycle from the shell: route changes (``skinlesion models activate|rollback|fallback|
restrict|challenger|shadow|threshold|archive|unarchive``), ``skinlesion retrain`` and ``skinlesion
jobs list|show|cancel``. Every change runs as the ml_lead under the login name, audited with its
reason, through :mod:`skinlesion.lifecycle`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from skinlesion.cli.models import models_app
from skinlesion.cli.options import PolicyFile, Reason, actor, fail, on_off, open_store, settings
from skinlesion.errors import SkinLesionError

if TYPE_CHECKING:
    from types import ModuleType

    from rich.table import Table

    from skinlesion.lifecycle.operations import ThresholdStudy
    from skinlesion.operating_point import OperatingPoint
    from skinlesion.store import JobRecord

app = typer.Typer()
jobs_app = typer.Typer(help="Background retraining jobs: list, show, cancel.", no_args_is_help=True)

JobId = Annotated[str, typer.Argument(help="Job id (or its first characters).")]

#: a route change: (the operations module, the store, the models folder, who acts) -> its audit row
RouteChange = Callable[["ModuleType", Any, Path, dict[str, str]], object]


def _route_action(change: RouteChange) -> None:
    """Run a :mod:`skinlesion.lifecycle.operations` route change as the ml_lead on this server
    (audited under the login name) and print the new route; project errors exit with code 2."""
    from skinlesion.lifecycle import operations

    store = open_store()
    try:
        change(operations, store, settings().models_dir, {"actor": actor(), "role": "ml_lead"})
    except SkinLesionError as err:
        raise fail(err) from err
    typer.echo(store.get_route().model_dump_json(indent=2))


# --- the serving route ----------------------------------------------------------------------------------


@models_app.command("activate")
def models_activate(version: Annotated[str, typer.Argument(help="Version id or alias to serve.")],
                    reason: Reason) -> None:
    """Make a version the active model: promote a candidate (audited; servers follow within
    seconds)."""
    _route_action(lambda ops, store, models, who: ops.activate(store, models, version,
                                                              reason=reason, **who))


@models_app.command("rollback")
def models_rollback(reason: Reason) -> None:
    """Serve the previously active version again, in one step (audited)."""
    _route_action(lambda ops, store, models, who: ops.rollback(store, models, reason=reason, **who))


@models_app.command("fallback")
def models_fallback(state: Annotated[str, typer.Argument(help="on | off")], reason: Reason,
                    version: Annotated[str | None, typer.Option(
                        help="Fallback version to use (default: the route's, else the newest "
                        "fallback version).")] = None) -> None:
    """Switch answers to the rule-based fallback model, or back (audited)."""
    if on_off(state):
        _route_action(lambda ops, store, models, who: ops.engage_fallback(
            store, models, version=version, reason=reason, **who))
    else:
        _route_action(lambda ops, store, models, who: ops.release_fallback(store, reason=reason,
                                                                          **who))


@models_app.command("restrict")
def models_restrict(state: Annotated[str, typer.Argument(help="on | off")], reason: Reason) -> None:
    """Answer only clear cases (everything else is referred), or lift that (audited)."""
    on = on_off(state)
    _route_action(lambda ops, store, models, who: ops.restrict(store, on, reason=reason, **who))


@models_app.command("challenger")
def models_challenger(version: Annotated[str, typer.Argument(help="Version id or alias, or 'off'.")],
                      reason: Reason,
                      share: Annotated[float | None, typer.Option(
                          help="Share of the requests it answers, between 0 and 1 (e.g. 0.1).")
                                       ] = None) -> None:
    """A/B test: a challenger answers a share of the requests, the same image always by the same
    arm; 'off' ends it (audited; servers follow within seconds)."""
    if version == "off":
        _route_action(lambda ops, store, models, who: ops.stop_challenger(store, reason=reason,
                                                                         **who))
        return
    if share is None:
        raise fail(ValueError("give --share, e.g. --share 0.1 for 10% of the requests"))
    _route_action(lambda ops, store, models, who: ops.start_challenger(
        store, models, version, share, reason=reason, **who))


@models_app.command("shadow")
def models_shadow(version: Annotated[str, typer.Argument(help="Version id or alias, or 'off'.")],
                  reason: Reason) -> None:
    """Shadow: a version answers every request in the background, its answers logged (role
    shadow) and never returned; 'off' stops it (audited)."""
    if version == "off":
        _route_action(lambda ops, store, models, who: ops.stop_shadow(store, reason=reason, **who))
    else:
        _route_action(lambda ops, store, models, who: ops.start_shadow(store, models, version,
                                                                      reason=reason, **who))


@models_app.command("archive")
def models_archive(version: Annotated[str, typer.Argument(help="Version id or alias to archive.")],
                   reason: Reason) -> None:
    """Archive a version that serves no role (e.g. a candidate not promoted); audited."""
    _route_action(lambda ops, store, models, who: ops.archive(store, models, version,
                                                             reason=reason, **who))


@models_app.command("unarchive")
def models_unarchive(version: Annotated[str, typer.Argument(help="Version id or alias to restore.")],
                     reason: Reason) -> None:
    """Restore an archived version; audited."""
    _route_action(lambda ops, store, models, who: ops.unarchive(store, models, version,
                                                               reason=reason, **who))


# --- the operating threshold ----------------------------------------------------------------------------


def _point(label: str, point: OperatingPoint) -> str:
    return (f"{label} {point.threshold:.4f}: sensitivity {point.sensitivity:.3f}, specificity "
            f"{point.specificity:.3f}")


def _check_threshold_flags(sensitivity: float | None, value: float | None, revert: bool,
                           card: bool, dry_run: bool, reason: str | None) -> None:
    chosen = [flag for flag, on in (("--sensitivity", sensitivity is not None),
                                    ("--value", value is not None), ("--revert", revert),
                                    ("--card", card)) if on]
    if len(chosen) > 1 or (not chosen and not dry_run):
        raise fail(ValueError("give one of --sensitivity, --value, --revert or --card (or "
                              "--dry-run to only look)"))
    if not dry_run and not (reason or "").strip():
        raise fail(ValueError("give --reason: every threshold change is audited with why"))


def _show_study(study: ThresholdStudy, days: float, sensitivity: float | None) -> None:
    typer.echo(f"{study.version}: {study.n} labelled answers ({study.current.n_malignant} "
               f"malignant) in the last {days:g} days")
    typer.echo(_point("serving threshold" + (" (tuned)" if study.tuned else " (card)"),
                      study.current))
    if study.proposed is not None:
        typer.echo(_point(f"proposed for sensitivity ≥ {sensitivity:g}", study.proposed))


@models_app.command("threshold")
def models_threshold(
        version: Annotated[str, typer.Argument(help="Version id or alias.")],
        sensitivity: Annotated[float | None, typer.Option(
            help="Target sensitivity: the largest threshold reaching it on the labelled "
            "answers.")] = None,
        value: Annotated[float | None, typer.Option(help="A threshold to serve at (0-1).")] = None,
        revert: Annotated[bool, typer.Option("--revert", help="Back to the threshold before the "
                                             "current one.")] = False,
        card: Annotated[bool, typer.Option("--card", help="Back to the model card's threshold.")
                        ] = False,
        days: Annotated[float, typer.Option(min=0.01, help="Labelled answers of the last DAYS "
                                            "days.")] = 30.0,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the trade-off (and the "
                                              "proposal); change nothing.")] = False,
        reason: Annotated[str | None, typer.Option(help="Why (audited); needed unless "
                                                   "--dry-run.")] = None) -> None:
    """The operating threshold of a version: its sensitivity/specificity on recent labelled
    answers, and a new threshold served from now on (a serving configuration in the route,
    audited and reversible; the model card is not edited)."""
    from skinlesion.lifecycle.operations import threshold_study

    _check_threshold_flags(sensitivity, value, revert, card, dry_run, reason)
    study = None
    if sensitivity is not None or dry_run:
        end = datetime.now(UTC)
        try:
            study = threshold_study(open_store(), settings().models_dir, version,
                                    end - timedelta(days=days), end,
                                    target_sensitivity=sensitivity)
        except SkinLesionError as err:
            raise fail(err) from err
        _show_study(study, days, sensitivity)
    if dry_run:
        return
    if study is not None and study.proposed is not None:
        _route_action(lambda ops, s, m, who: ops.set_threshold(
            s, m, version, study.proposed.threshold, reason=reason, evidence=study.evidence(),
            **who))
    elif value is not None or card:
        _route_action(lambda ops, s, m, who: ops.set_threshold(s, m, version, value, reason=reason,
                                                               **who))
    else:
        _route_action(lambda ops, s, m, who: ops.revert_threshold(s, m, version, reason=reason,
                                                                  **who))


# --- retraining jobs ------------------------------------------------------------------------------------


def _print_job(job: JobRecord, *, log_tail: int = 0) -> None:
    from skinlesion.lifecycle.gate import gate_table

    typer.echo(f"job {job.id}  {job.status}  {job.progress:.0%}  {job.message}")
    typer.echo(f"  {job.kind} of {job.model} · trigger {job.trigger} · by {job.requested_by} "
               f"({job.role}) · queued {job.created_at:%Y-%m-%d %H:%M:%S} UTC"
               + (f" · reason: {job.reason}" if job.reason else ""))
    if job.error:
        typer.echo(f"  error: {job.error}")
    if job.result.get("version"):
        typer.echo(f"  candidate {job.result['version']} (not active: promote it with `skinlesion "
                   f"models activate {job.result['version']} --reason ...`)")
        typer.echo(gate_table(job.result["gate"]).to_string(index=False, float_format="%.3f"))
    if log_tail:
        for line in open_store().job_log(job.id, tail=log_tail)["line"]:
            typer.echo(f"  | {line}")


@app.command()
def retrain(reason: Reason,
            trigger: Annotated[str, typer.Option(help="manual | scheduled | event | "
                                                 "active_learning")] = "manual",
            data: Annotated[Path | None, typer.Option(
                help="The active version's original dataset folder (default: the folder its card "
                "names).")] = None,
            mode: Annotated[str | None, typer.Option(help="head | finetune (default: the "
                                                     "policy's).")] = None,
            epochs: Annotated[int | None, typer.Option(min=1, help="Epochs (default: the "
                                                       "policy's).")] = None,
            wait: Annotated[bool, typer.Option("--wait", help="Follow the job until it ends; exit 1 "
                                               "unless it succeeded.")] = False,
            policy_file: PolicyFile = None) -> None:
    """Retrain the active model in a background job (its original data + labelled production
    cases with kept images); the new version is a candidate, compared with the active one. Prints
    the job id last (with --wait: the candidate's id)."""
    from skinlesion.lifecycle import jobs
    from skinlesion.lifecycle.spec import active_spec
    from skinlesion.monitoring.policy import load_policy

    current, store = settings(), open_store()
    overrides = {k: v for k, v in {"mode": mode, "epochs": epochs}.items() if v is not None}
    try:
        spec = active_spec(store, load_policy(policy_file).retraining,
                           models_dir=current.models_dir, cache_dir=current.cache_dir,
                           data_dir=str(data.resolve()) if data else None, **overrides)
        job = jobs.launch_retrain(store, spec, actor=actor(), role="ml_lead", reason=reason,
                                  trigger=trigger)
    except (SkinLesionError, ValueError) as err:
        raise fail(err) from err
    typer.echo(f"retraining {spec.base_version} in job {job.id} (pid {job.pid}); follow it with "
               f"`skinlesion jobs show {job.id[:8]}`", err=True)
    if not wait:
        typer.echo(job.id)
        return
    job = jobs.wait(store, job.id, on_update=lambda j: typer.echo(
        f"{j.status:9} {j.progress:5.0%} {j.message}", err=True))
    _print_job(job)
    if job.status != "succeeded":
        raise typer.Exit(code=1)
    typer.echo(job.result["version"])


@jobs_app.command("list")
def jobs_list(limit: Annotated[int, typer.Option(min=1, help="Newest jobs shown.")] = 20) -> None:
    """Retraining jobs, newest first: a table that fits the terminal (80 columns too); the message
    wraps, nothing is cut. ``skinlesion jobs show ID`` has the rest."""
    from rich.console import Console

    from skinlesion.lifecycle.jobs import refresh

    store = open_store()
    Console().print(jobs_table([refresh(store, job) for job in store.list_jobs(limit=limit)]))


def jobs_table(jobs: list[JobRecord]) -> Table:
    """The jobs as a compact rich table that fits 80 columns: the job (first 8 characters of its
    id, when it was queued), its status with progress, the model it retrains, and why and by whom
    it ran with its message (or error) and the candidate it produced, which wrap."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("job, queued UTC", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("model", overflow="fold")
    table.add_column("trigger, by: message", overflow="fold", min_width=24)
    for job in jobs:
        status = job.status if job.is_finished else f"{job.status} {job.progress:.0%}"
        note = job.error or job.message
        what = f"{job.trigger}, {job.requested_by}" + (f": {note}" if note else "")
        if job.result.get("version"):
            what += f"\ncandidate {job.result['version']}"
        table.add_row(f"{job.id[:8]}\n{job.created_at:%Y-%m-%d %H:%M}", status, job.model, what)
    return table


@jobs_app.command("show")
def jobs_show(job_id: JobId,
              log: Annotated[int, typer.Option(min=0, help="Last log lines shown.")] = 20) -> None:
    """A job's status, progress, result (the candidate and its comparison with the active model)
    and log tail."""
    from skinlesion.lifecycle.jobs import find_job

    try:
        job = find_job(open_store(), job_id)
    except SkinLesionError as err:
        raise fail(err) from err
    _print_job(job, log_tail=log)


@jobs_app.command("cancel")
def jobs_cancel(job_id: JobId, reason: Reason) -> None:
    """Cancel a queued or running job (it stops at its next step or epoch)."""
    from skinlesion.lifecycle.jobs import cancel_job

    try:
        job = cancel_job(open_store(), job_id, actor=actor(), role="ml_lead", reason=reason)
    except SkinLesionError as err:
        raise fail(err) from err
    typer.echo(f"job {job.id}: {job.status}" + (" (stopping)" if not job.is_finished else ""))


@jobs_app.command("run", hidden=True)
def jobs_run(job_id: Annotated[str, typer.Argument(help="Job id.")],
             store: Annotated[str, typer.Option(
                 help="The store holding the job: duckdb:///PATH or "
                 "postgresql://USER@HOST:PORT/DB (its password in PGPASSWORD or ~/.pgpass).")]
             ) -> None:
    """Run a queued job in this process (what a launched job's background process does)."""
    from skinlesion.lifecycle.job_process import run_job
    from skinlesion.store import Store

    try:
        job = run_job(Store(store, busy_timeout_s=settings().busy_timeout_s), job_id)
    except SkinLesionError as err:
        raise fail(err) from err
    typer.echo(f"job {job.id}: {job.status}")
    if job.status != "succeeded":
        raise typer.Exit(code=1)
