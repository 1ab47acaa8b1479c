"""``python -m skinlesion``: the ``skinlesion`` command (how background jobs start their process)."""

from skinlesion.cli import app

app(prog_name="skinlesion")
