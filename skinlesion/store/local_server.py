"""A throwaway local PostgreSQL server (tests, ``make bench``, ``make test-scale``): Debian's
``postgresql`` package, ``initdb`` and ``pg_ctl`` in a temporary folder, run as the unprivileged
``postgres`` user when called as root (PostgreSQL refuses to run as root), listening on loopback
only, trusting local connections. Each user gets a fresh database. Not for production: there the
database is the operators' (see deploy/README.md)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
_SUPERUSER = "skinlesion"


def unavailable_reason() -> str | None:
    """Why no server can be started here, or None."""
    if not _BIN_DIRS or not (_BIN_DIRS[0] / "initdb").exists():
        return ("PostgreSQL is not installed (Debian package `postgresql`; `make test` installs it "
                "with apt-get where it can)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without `runuser` to start PostgreSQL as the postgres user"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Server:
    port: int
    folder: Path

    def url(self, database: str) -> str:
        return f"postgresql://{_SUPERUSER}@127.0.0.1:{self.port}/{database}"

    @contextmanager
    def database(self) -> Iterator[str]:
        """A fresh, empty database for one test (dropped afterwards); yields its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        try:
            yield self.url(name)
        finally:
            with psycopg.connect(self.url("postgres"), autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@contextmanager
def running_server() -> Iterator[Server]:
    """Start a server in a temporary folder; stop it and remove the folder afterwards."""
    bin_dir = _BIN_DIRS[0]
    folder = Path(tempfile.mkdtemp(prefix="skinlesion-pg-"))
    data, log = folder / "data", folder / "server.log"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    port = free_port()
    subprocess.run(_as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-U", _SUPERUSER, "-A", "trust",
                                 "-E", "UTF8", "--no-sync"]), check=True, capture_output=True)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=300"
    subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
                                 "-w", "start"]), check=True, capture_output=True)
    try:
        yield Server(port=port, folder=folder)
    finally:
        subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       check=False, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
