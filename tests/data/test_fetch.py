"""skinlesion.data.fetch against a local HTTP server (127.0.0.1 only) serving a tiny ISIC set."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import socket
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from skinlesion.cli import app
from skinlesion.data import fetch as fetch_mod
from skinlesion.data.fetch import CATALOGUE, fetch_dataset, unpack_zip
from skinlesion.errors import FetchError

ZIP = "ISIC_2019_Training_Input.zip"
GT = "ISIC_2019_Training_GroundTruth.csv"
META = "ISIC_2019_Training_Metadata.csv"
IMAGES = ["ISIC_0000000", "ISIC_0000001", "ISIC_0000002"]
DIAGNOSES = ["MEL", "NV", "BCC"]


def _jpeg(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(buf, format="JPEG")
    return buf.getvalue()


def _published_files() -> dict[str, bytes]:
    """A tiny ISIC 2019 release: a zip of 3 JPEGs under its top folder, ground truth, metadata."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, image in enumerate(IMAGES):
            zf.writestr(f"ISIC_2019_Training_Input/{image}.jpg", _jpeg((60 * i, 100, 200 - 50 * i)))
        zf.writestr("ISIC_2019_Training_Input/LICENSE.txt", "CC BY-NC 4.0\n")
        zf.writestr("__MACOSX/ISIC_2019_Training_Input/._ISIC_0000000.jpg", b"junk")
    classes = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
    gt = "image," + ",".join(classes) + "\n" + "".join(
        image + "," + ",".join("1.0" if c == d else "0.0" for c in classes) + "\n"
        for image, d in zip(IMAGES, DIAGNOSES))
    meta = ("image,age_approx,anatom_site_general,lesion_id,sex\n"
            "ISIC_0000000,55.0,anterior torso,BCN_0000001,male\n"
            "ISIC_0000001,30.0,lower extremity,BCN_0000002,female\n"
            "ISIC_0000002,,head/neck,,\n")
    return {ZIP: buf.getvalue(), GT: gt.encode(), META: meta.encode()}


class _Server(ThreadingHTTPServer):
    """Serves ``files`` by name under any path, honouring Range unless ``ignore_range``; can answer
    503 (``fail_next[name]`` times) or cut a body short (``cut_next[name]`` = bytes sent)."""

    daemon_threads = True

    def __init__(self, files: dict[str, bytes]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = files
        self.ignore_range = False
        self.fail_next: dict[str, int] = {}
        self.cut_next: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        srv = self.server
        name = self.path.rsplit("/", 1)[-1]
        rng = self.headers.get("Range")
        with srv.lock:
            srv.requests.append((name, rng))
            failing = srv.fail_next.get(name, 0) > 0
            if failing:
                srv.fail_next[name] -= 1
            cut = srv.cut_next.pop(name, None)
        if failing:
            self.send_error(503)
            return
        body = srv.files.get(name)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if rng and not srv.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        self.wfile.write(payload if cut is None else payload[:cut])
        if cut is not None:
            self.close_connection = True


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback requests must not be sent to a proxy configured in the environment."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def published() -> dict[str, bytes]:
    return _published_files()


@pytest.fixture
def server(published: dict[str, bytes]) -> Iterator[_Server]:
    srv = _Server(published)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def base_url(server: _Server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/2019"


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL nothing listens on: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/2019"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fetch(out: Path, base_url: str, **kwargs) -> Path:
    kwargs.setdefault("backoff_s", 0.0)
    return fetch_dataset("isic2019", out, base_url=base_url, progress=False, **kwargs)


def _assert_layout(out: Path, published: dict[str, bytes]) -> None:
    images = sorted(p.stem for p in (out / "ISIC_2019_Training_Input").glob("*.jpg"))
    assert images == IMAGES
    assert (out / GT).read_bytes() == published[GT]
    assert (out / META).read_bytes() == published[META]
    assert not list(out.glob("*.part"))
    assert not (out / "__MACOSX").exists()
    assert not (out / "ISIC_2019_Training_Input" / "__MACOSX").exists()


def test_full_fetch_builds_the_isic2019_layout(tmp_path, server, base_url, published):
    out = _fetch(tmp_path / "isic", base_url)

    _assert_layout(out, published)
    assert (out / "ISIC_2019_Training_Input" / "LICENSE.txt").exists()  # top folder flattened
    assert not (out / ZIP).exists()  # archive removed after unpacking by default
    records = json.loads((out / "checksums.json").read_text())
    assert {name: r["sha256"] for name, r in records.items()} == {
        name: _sha(data) for name, data in published.items()}
    assert records[ZIP]["unpacked_to"] == "ISIC_2019_Training_Input"
    assert records[GT]["size"] == len(published[GT])


def test_fetched_layout_reads_as_a_dataset(tmp_path, server, base_url):
    readers = pytest.importorskip("skinlesion.data.readers")
    out = _fetch(tmp_path / "isic", base_url)

    df = readers.read_dataset(out, format="isic2019")
    assert sorted(df["image"]) == IMAGES
    assert dict(zip(df["image"], df["diagnosis"])) == dict(zip(IMAGES, DIAGNOSES))


def test_keep_archive_keeps_the_zip(tmp_path, server, base_url, published):
    out = _fetch(tmp_path / "isic", base_url, keep_archives=True)
    assert (out / ZIP).read_bytes() == published[ZIP]


def test_truncated_part_is_resumed_with_a_range_request(tmp_path, server, base_url, published):
    out = tmp_path / "isic"
    out.mkdir()
    half = len(published[ZIP]) // 2
    (out / f"{ZIP}.part").write_bytes(published[ZIP][:half])

    _fetch(out, base_url)

    assert (ZIP, f"bytes={half}-") in server.requests
    assert [r for r in server.requests if r[0] == ZIP] == [(ZIP, f"bytes={half}-")]
    _assert_layout(out, published)
    assert json.loads((out / "checksums.json").read_text())[ZIP]["sha256"] == _sha(published[ZIP])


def test_complete_part_is_finished_without_downloading_again(tmp_path, server, base_url,
                                                             published):
    out = tmp_path / "isic"
    out.mkdir()
    (out / f"{ZIP}.part").write_bytes(published[ZIP])  # interrupted just before the rename

    _fetch(out, base_url)

    assert [r for r in server.requests if r[0] == ZIP] == [(ZIP, f"bytes={len(published[ZIP])}-")]
    _assert_layout(out, published)


def test_server_ignoring_range_restarts_the_download(tmp_path, server, base_url, published):
    server.ignore_range = True
    out = tmp_path / "isic"
    out.mkdir()
    (out / f"{ZIP}.part").write_bytes(b"x" * 100)  # not a prefix of the file: must be discarded

    _fetch(out, base_url)

    _assert_layout(out, published)
    assert json.loads((out / "checksums.json").read_text())[ZIP]["sha256"] == _sha(published[ZIP])


def test_connection_cut_mid_body_is_retried_and_resumed(tmp_path, server, base_url, published):
    server.cut_next[ZIP] = 300

    _fetch(tmp_path / "isic", base_url)

    assert [r for r in server.requests if r[0] == ZIP] == [(ZIP, None), (ZIP, "bytes=300-")]
    _assert_layout(tmp_path / "isic", published)


def test_transient_server_errors_are_retried(tmp_path, server, base_url, published):
    server.fail_next[GT] = 2

    _fetch(tmp_path / "isic", base_url)

    assert [r for r in server.requests if r[0] == GT] == [(GT, None)] * 3
    _assert_layout(tmp_path / "isic", published)


def test_persistent_server_errors_give_up_naming_the_file(tmp_path, server, base_url):
    server.fail_next[GT] = 10
    out = tmp_path / "isic"

    with pytest.raises(FetchError, match=f"{GT}: download .* failed 3 times .*HTTP 503"):
        _fetch(out, base_url, retries=2)
    assert not (out / GT).exists()


def test_checksum_mismatch_names_the_file_and_leaves_no_file(tmp_path, server, base_url):
    spec = CATALOGUE["isic2019"]
    wrong = dataclasses.replace(spec, files=tuple(
        dataclasses.replace(f, sha256="0" * 64) if f.name == GT else f for f in spec.files))
    out = tmp_path / "isic"

    with pytest.raises(FetchError, match=f"{GT}: checksum mismatch"):
        fetch_dataset(wrong, out, base_url=base_url, progress=False, backoff_s=0.0)
    assert not (out / GT).exists()
    assert not (out / f"{GT}.part").exists()


def test_catalogue_size_mismatch_is_an_error(tmp_path, server, base_url, published):
    spec = CATALOGUE["isic2019"]
    wrong = dataclasses.replace(spec, files=tuple(
        dataclasses.replace(f, size=len(published[META]) + 1) if f.name == META else f
        for f in spec.files))

    with pytest.raises(FetchError, match=f"{META}: the server offers {len(published[META])} bytes"):
        fetch_dataset(wrong, tmp_path / "isic", base_url=base_url, progress=False)
    assert not (tmp_path / "isic" / META).exists()


def test_unreachable_server_fails_at_once_with_manual_instructions(tmp_path, closed_port_url,
                                                                   monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr(fetch_mod.time, "sleep", sleeps.append)

    with pytest.raises(FetchError) as info:
        _fetch(tmp_path / "isic", closed_port_url, backoff_s=30.0)

    message = str(info.value)
    assert "network is unreachable" in message
    assert "by hand" in message
    assert "https://challenge.isic-archive.com/data/#2019" in message
    assert "CC BY-NC 4.0" in message
    for name in (ZIP, GT, META, "ISIC_2019_Training_Input/*.jpg"):
        assert name in message
    assert sleeps == []  # no retry loop before giving up


def test_second_fetch_skips_completed_files(tmp_path, server, base_url, published):
    out = _fetch(tmp_path / "isic", base_url)
    n_requests = len(server.requests)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}

    _fetch(out, base_url)

    assert len(server.requests) == n_requests
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()
            if p.name != "checksums.json"} == {p: m for p, m in mtimes.items()
                                                if p.name != "checksums.json"}


def test_files_copied_by_hand_are_verified_and_unpacked_offline(tmp_path, published,
                                                                closed_port_url):
    out = tmp_path / "isic"
    out.mkdir()
    for name, data in published.items():
        (out / name).write_bytes(data)

    _fetch(out, closed_port_url)

    _assert_layout(out, published)
    records = json.loads((out / "checksums.json").read_text())
    assert records[GT]["sha256"] == _sha(published[GT])


def test_changed_file_no_longer_matches_its_record(tmp_path, server, base_url, published):
    out = _fetch(tmp_path / "isic", base_url)
    (out / GT).write_bytes(published[GT].replace(b"1.0", b"0.5"))  # same size, other content
    records = json.loads((out / "checksums.json").read_text())
    records[GT]["size"] += 1  # the record no longer vouches for the file: it is hashed again
    (out / "checksums.json").write_text(json.dumps(records))

    with pytest.raises(FetchError, match=f"{GT}: checksum mismatch"):
        _fetch(out, base_url)


def test_unpack_refuses_members_outside_the_destination(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("top/ok.jpg", b"x")
        zf.writestr("top/../../evil.txt", b"x")

    with pytest.raises(FetchError, match="outside the destination"):
        unpack_zip(archive, tmp_path / "dest", progress=False)
    assert not (tmp_path / "dest").exists()
    assert not (tmp_path.parent / "evil.txt").exists()


def test_corrupt_archive_is_an_error_naming_it(tmp_path):
    archive = tmp_path / ZIP
    archive.write_bytes(b"not a zip at all")

    with pytest.raises(FetchError, match=f"{ZIP}: not a valid zip archive"):
        unpack_zip(archive, tmp_path / "ISIC_2019_Training_Input", progress=False)


def test_cli_fetch_writes_the_layout(tmp_path, server, base_url, published):
    result = CliRunner().invoke(app, ["data", "fetch", "isic2019", "--out", str(tmp_path / "d"),
                                      "--base-url", base_url])

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str((tmp_path / "d").resolve())
    _assert_layout(tmp_path / "d", published)


def test_cli_unknown_dataset_lists_the_known_ones(tmp_path):
    result = CliRunner().invoke(app, ["data", "fetch", "isic2099", "--out", str(tmp_path)])

    assert result.exit_code != 0
    assert "unknown dataset 'isic2099'" in result.output
    assert "known datasets: isic2019" in result.output


def test_cli_unreachable_network_exits_non_zero_with_the_manual_route(tmp_path, closed_port_url):
    result = CliRunner().invoke(app, ["data", "fetch", "isic2019", "--out", str(tmp_path),
                                      "--base-url", closed_port_url])

    assert result.exit_code != 0
    assert "network is unreachable" in result.output
    assert "https://challenge.isic-archive.com/data/#2019" in result.output


def test_stalled_name_lookup_fails_at_once_with_manual_instructions(tmp_path, monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(fetch_mod.socket, "getaddrinfo", lambda *a, **k: release.wait(30))
    try:
        with pytest.raises(FetchError, match="network is unreachable(.|\n)*by hand"):
            fetch_dataset("isic2019", tmp_path / "isic", base_url="http://isic.invalid/2019",
                          connect_timeout_s=0.2, progress=False)
    finally:
        release.set()
