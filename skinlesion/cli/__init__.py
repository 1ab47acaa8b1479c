"""The one ``skinlesion`` command (console script ``skinlesion = "skinlesion.cli:app"``).

One module per sub-app: :mod:`~skinlesion.cli.data` (synth, data fetch),
:mod:`~skinlesion.cli.models` (models list/show/alias/diff), :mod:`~skinlesion.cli.training` (train,
tune, distill), :mod:`~skinlesion.cli.evaluation` (evaluate, predict, score),
:mod:`~skinlesion.cli.serving` (serve, apikey, labels), :mod:`~skinlesion.cli.lifecycle` (the route
commands of ``models``, retrain, jobs), :mod:`~skinlesion.cli.monitoring` (monitor),
:mod:`~skinlesion.cli.apps` (users, dashboard, demo), :mod:`~skinlesion.cli.audit` (audit verify)
and :mod:`~skinlesion.cli.store` (store migrate); the option types and helpers they share are in
:mod:`~skinlesion.cli.options`.

Each command validates its input, calls one library function and prints; progress goes to stderr,
results (e.g. a new version id) to stdout; project errors exit with code 2. Commands import the
library they call inside their body: the CLI is the top layer (nothing imports it, so this hides
no cycle), and ``skinlesion jobs list`` should not wait for torch and evidently to load.
"""

from __future__ import annotations

import typer

from skinlesion.cli import (apps, audit, data, evaluation, lifecycle, models, monitoring, serving, store,
                            training)

app = typer.Typer(help="Skin-lesion classifier: data, training, evaluation, serving, monitoring.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
for commands in (data.app, training.app, evaluation.app, serving.app, lifecycle.app,
                 monitoring.app, apps.app):
    app.add_typer(commands)
app.add_typer(data.data_app, name="data")
app.add_typer(models.models_app, name="models")
app.add_typer(serving.apikey_app, name="apikey")
app.add_typer(serving.labels_app, name="labels")
app.add_typer(lifecycle.jobs_app, name="jobs")
app.add_typer(apps.users_app, name="users")
app.add_typer(audit.audit_app, name="audit")
app.add_typer(store.store_app, name="store")
