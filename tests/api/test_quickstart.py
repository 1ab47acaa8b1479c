"""The README's API quick start runs as written (issue 16, item 11): under ``set -e`` on a fresh
home (the shipped reference model, an empty store), it creates a key, activates the reference
version (audited, although it already served by default), starts the server and gets an answer."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from skinlesion.store import Store

ROOT = Path(__file__).resolve().parents[2]


def quickstart_block() -> str:
    """The first bash block of the README's "The prediction API" section."""
    section = ROOT.joinpath("README.md").read_text().split("## The prediction API", 1)[1]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_the_readme_api_quick_start_runs_verbatim_and_is_audited(tmp_path: Path):
    home = tmp_path / "clone"
    home.mkdir()
    (home / ".venv").symlink_to(ROOT / ".venv")
    (home / "models").symlink_to(ROOT / "models")
    pixels = Image.new("RGB", (320, 240), (200, 150, 130))
    pixels.paste((90, 50, 40), (120, 80, 200, 160))
    buf = io.BytesIO()
    pixels.save(buf, "JPEG")
    (home / "lesion.jpg").write_bytes(buf.getvalue())
    port = str(_free_port())
    script = "set -euo pipefail\n" + quickstart_block().replace("8000", port) + "kill %1\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKINLESION_")}
    proc = subprocess.Popen(["bash", "-c", script], cwd=home, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    answer = json.loads(out.strip().splitlines()[-1])
    assert answer["model_version"] == "reference" and answer["decision"]
    audit = Store(home / "data" / "skinlesion.duckdb").query_audit()
    activated = audit[audit["action"] == "set_route"]
    assert activated["reason"].tolist() == ["first deployment"]
    assert "create_api_key" in set(audit["action"])
