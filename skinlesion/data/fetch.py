"""Download published datasets and unpack them into the layout the dataset readers expect.

``fetch_dataset("isic2019", out)`` fetches each file of the catalogue entry: it streams into
``<file>.part`` (resuming a partial one with an HTTP Range request, restarting when the server
ignores Range), retries transient failures with exponential backoff, verifies the size and the
sha256 (against the catalogue when it publishes one, else against an earlier record), renames the
file into place only when complete, records what it got in ``<out>/checksums.json`` and unzips
archives into their layout folder (dropping the zip's own top folder). Finished files are skipped,
so an interrupted fetch is completed by running it again, and files downloaded by hand into
``out`` are verified and unpacked without any network.

With no network the fetch fails at once (short connect timeout) with a FetchError that says how to
get the files by hand.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import shutil
import socket
import sys
import threading
import time
import urllib.request
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from skinlesion.errors import FetchError

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
CHUNK_BYTES = 1 << 20
CHECKSUMS_FILE = "checksums.json"
# Answers worth retrying: the request may well succeed a moment later.
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# Failing to open a connection on the first try means the host cannot be reached at all.
_UNREACHABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.ProxyError)
_JUNK_PREFIXES = ("__MACOSX/",)
_JUNK_NAMES = (".DS_Store",)


@dataclass(frozen=True)
class RemoteFile:
    """One published file of a dataset.

    ``size`` and ``sha256`` are the published values when known; when they are not, the size is
    taken from the server's Content-Length and the sha256 computed on download is recorded (never
    invented). ``unzip_to`` names the layout folder an archive is unpacked into (None: kept as is).
    """

    name: str
    description: str
    size: int | None = None
    sha256: str | None = None
    unzip_to: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A downloadable dataset: where its files live, what they are, and the layout they make."""

    name: str
    title: str
    base_url: str
    page: str
    licence: str
    files: tuple[RemoteFile, ...]
    layout: tuple[str, ...]


CATALOGUE: dict[str, DatasetSpec] = {
    "isic2019": DatasetSpec(
        name="isic2019",
        title="ISIC 2019 Challenge training data",
        base_url="https://isic-challenge-data.s3.amazonaws.com/2019",
        page="https://challenge.isic-archive.com/data/#2019",
        licence="CC BY-NC 4.0 (non-commercial use; attribute the ISIC archive and the source "
                "datasets HAM10000, BCN_20000 and MSK)",
        files=(
            RemoteFile("ISIC_2019_Training_Input.zip", "training images, about 9 GB",
                       unzip_to="ISIC_2019_Training_Input"),
            RemoteFile("ISIC_2019_Training_GroundTruth.csv", "diagnoses, one-hot per class"),
            RemoteFile("ISIC_2019_Training_Metadata.csv", "age, sex, anatomical site, lesion id"),
        ),
        layout=(
            "ISIC_2019_Training_Input/*.jpg",
            "ISIC_2019_Training_GroundTruth.csv",
            "ISIC_2019_Training_Metadata.csv",
        ),
    ),
}


class _TransientError(Exception):
    """A failure worth retrying (HTTP 5xx/429, a body cut short)."""


def get_spec(name: str) -> DatasetSpec:
    """The catalogue entry for ``name``; FetchError listing the known names when there is none."""
    try:
        return CATALOGUE[name.lower()]
    except KeyError:
        raise FetchError(f"unknown dataset '{name}'; known datasets: "
                         f"{', '.join(sorted(CATALOGUE))}") from None


def manual_instructions(spec: DatasetSpec, out: Path) -> str:
    """How to get ``spec``'s files by hand when this machine cannot download them."""
    files = "\n".join(f"  - {f.name} ({f.description})" for f in spec.files)
    layout = "\n".join(f"  {out}/{entry}" for entry in spec.layout)
    return (f"Get the files by hand: on a machine with internet access open {spec.page} "
            f"(licence: {spec.licence}) and download\n{files}\n"
            f"then either copy them into {out} and run `skinlesion data fetch {spec.name} "
            f"--out {out}` again (it verifies and unpacks them without network), or unpack them "
            f"yourself into this layout:\n{layout}")


def fetch_dataset(dataset: str | DatasetSpec, out: Path | str, *, base_url: str | None = None,
                  keep_archives: bool = False, retries: int = 4, backoff_s: float = 1.0,
                  connect_timeout_s: float = CONNECT_TIMEOUT_S, progress: bool = True) -> Path:
    """Download ``dataset`` (a catalogue name or a spec) into ``out``, unpack it; returns ``out``.

    ``base_url`` replaces the catalogue's server (a mirror, or a local server in tests).
    ``keep_archives`` keeps zip files after unpacking (by default they are deleted to save disk;
    their checksum stays in checksums.json). Raises FetchError for an unknown dataset, no network,
    a server error that outlasts ``retries``, or a size/checksum mismatch.
    """
    spec = dataset if isinstance(dataset, DatasetSpec) else get_spec(dataset)
    base = (base_url or spec.base_url).rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise FetchError(f"base URL '{base}' must start with http:// or https://")
    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    records = read_checksums(out)
    todo = [f for f in spec.files if not (f.unzip_to and (out / f.unzip_to).is_dir())]
    for f in spec.files:
        if f not in todo:
            _say(progress, f"{f.name}: already unpacked into {f.unzip_to}/, skipped")
    needs_network = any(not (out / f.name).is_file() for f in todo)
    if needs_network:
        try:
            resolve_host(base, connect_timeout_s)
        except OSError as err:
            raise _unreachable(spec, base, out, err) from err
    timeout = httpx.Timeout(READ_TIMEOUT_S, connect=connect_timeout_s)
    with (httpx.Client(timeout=timeout, follow_redirects=True,
                       headers={"User-Agent": "skinlesion-fetch"}) if needs_network
          else contextlib.nullcontext()) as client:
        for f in todo:
            path = out / f.name
            previous = records.get(f.name)
            if path.is_file():
                record = verify_existing(f, path, previous, progress=progress)
            else:
                url = f"{base}/{f.name}"
                try:
                    record = download_file(client, url, path, size=f.size,
                                           sha256=f.sha256 or (previous or {}).get("sha256"),
                                           retries=retries, backoff_s=backoff_s,
                                           progress=progress)
                except _UNREACHABLE as err:
                    raise _unreachable(spec, base, out, err) from err
            record["checked_against"] = ("catalogue" if f.sha256 else
                                         "earlier record" if previous else "none (first record)")
            records[f.name] = record
            write_checksums(out, records)
            if f.unzip_to:
                unpack_zip(path, out / f.unzip_to, progress=progress)
                records[f.name]["unpacked_to"] = f.unzip_to
                write_checksums(out, records)
                if not keep_archives:
                    path.unlink()
    return out


def resolve_host(url: str, timeout_s: float) -> None:
    """Resolve ``url``'s host name within ``timeout_s``, raising OSError when it cannot be.

    Name lookup ignores socket timeouts and can stall for tens of seconds on a machine without
    network, so it runs in a daemon thread that is abandoned after ``timeout_s`` (TimeoutError).
    Skipped when a proxy is configured: the proxy resolves the name.
    """
    parsed = httpx.URL(url)
    proxies = urllib.request.getproxies()
    if proxies.get(parsed.scheme) or proxies.get("all"):
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    failure: list[OSError] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            socket.getaddrinfo(parsed.host, port)
        except OSError as err:
            failure.append(err)
        finally:
            done.set()

    threading.Thread(target=lookup, name="fetch-resolve", daemon=True).start()
    if not done.wait(timeout_s):
        raise TimeoutError(f"looking up {parsed.host} took over {timeout_s:g} s")
    if failure:
        raise failure[0]


def _unreachable(spec: DatasetSpec, base: str, out: Path, err: Exception) -> FetchError:
    return FetchError(f"the network is unreachable: cannot connect to {base} "
                      f"({type(err).__name__}: {err}).\n{manual_instructions(spec, out)}")


def download_file(client: httpx.Client, url: str, dest: Path, *, size: int | None = None,
                  sha256: str | None = None, retries: int = 4, backoff_s: float = 1.0,
                  progress: bool = True) -> dict[str, Any]:
    """Stream ``url`` into ``dest`` via ``dest.part``, resuming and retrying; returns its record.

    A connect failure on the first attempt is raised as is (httpx.ConnectError & co.: the host is
    unreachable, retrying only delays the answer). Later failures and transient HTTP answers are
    retried up to ``retries`` times in a row with backoff ``backoff_s * 2**k``; any attempt that
    made progress resets the count. On a size or checksum mismatch the partial file is deleted and
    FetchError names the file, so no corrupt file is ever left under ``dest``.
    """
    part = dest.with_name(dest.name + ".part")
    failures, attempts = 0, 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        attempts += 1
        try:
            result = _attempt(client, url, dest, size=size, progress=progress)
        except (httpx.TransportError, _TransientError) as err:
            if isinstance(err, _UNREACHABLE) and attempts == 1:
                raise
            grew = part.exists() and part.stat().st_size > before
            failures = 1 if grew else failures + 1
            if failures > retries:
                raise FetchError(f"{dest.name}: download from {url} failed {failures} times in a "
                                 f"row (last: {type(err).__name__}: {err}); run the command again "
                                 f"to resume from {part.name}") from err
            _say(progress, f"{dest.name}: {type(err).__name__}: {err}; retrying in "
                           f"{backoff_s * 2 ** (failures - 1):.1f} s")
            time.sleep(backoff_s * 2 ** (failures - 1))
            continue
        if result is None:  # the partial file cannot be continued: start over
            part.unlink(missing_ok=True)
            continue
        digest, got = result
        if sha256 and digest != sha256.lower():
            part.unlink(missing_ok=True)
            raise FetchError(f"{dest.name}: checksum mismatch, sha256 {digest} but expected "
                             f"{sha256.lower()}; the download was deleted: run the command again, "
                             f"and if it fails again the server's copy differs from the published "
                             f"one")
        os.replace(part, dest)
        return {"url": url, "size": got, "sha256": digest,
                "fetched": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _attempt(client: httpx.Client, url: str, dest: Path, *, size: int | None,
             progress: bool) -> tuple[str, int] | None:
    """One GET continuing ``dest.part``: (sha256, size) when complete, None to start over."""
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with client.stream("GET", url, headers=headers) as response:
        status = response.status_code
        if status == 416 and offset:  # nothing left after offset: complete, or longer than the file
            total = _content_range(response.headers.get("Content-Range"))[2]
            return (_hash_file(part, progress), offset) if total == offset else None
        if status in TRANSIENT_STATUS:
            raise _TransientError(f"HTTP {status} from {url}")
        if status not in (200, 206):
            raise FetchError(f"{dest.name}: the server answered HTTP {status} for {url}; "
                             f"check the URL (--base-url) or get the file by hand")
        if status == 206:
            start, _, total = _content_range(response.headers.get("Content-Range"))
            if start != offset:
                if offset == 0:
                    raise FetchError(f"{url}: the server sent a partial answer starting at byte "
                                     f"{start} to a request for the whole file")
                return None
        else:  # the whole file: no Range sent, or the server ignored it
            offset = 0
            encoded = response.headers.get("Content-Encoding", "identity") != "identity"
            length = response.headers.get("Content-Length")
            total = int(length) if length and not encoded else None
        if size is not None and total is not None and total != size:
            raise FetchError(f"{dest.name}: the server offers {total} bytes but the catalogue "
                             f"says {size}; check --base-url or get the file by hand")
        hasher = _hash_prefix(part, offset, progress)
        written = offset
        with part.open("ab" if offset else "wb") as fh, \
                _bar(dest.name, total, offset, progress) as bar:
            for chunk in response.iter_bytes():  # as received, so a cut keeps its bytes
                fh.write(chunk)
                hasher.update(chunk)
                written += len(chunk)
                bar.update(len(chunk))
    if total is not None and written != total:
        raise _TransientError(f"got {written} of {total} bytes from {url}")
    return hasher.hexdigest(), written


def verify_existing(f: RemoteFile, path: Path, record: dict[str, Any] | None, *,
                    progress: bool = True) -> dict[str, Any]:
    """Check a file already at ``path`` (from an earlier fetch or copied by hand); its record.

    A file whose size matches its checksums.json record is trusted (it was hashed when recorded);
    anything else is hashed and compared with the catalogue's or the record's sha256. A mismatch
    raises FetchError; the file is left alone (it may be the user's own copy).
    """
    got = path.stat().st_size
    if f.size is not None and got != f.size:
        raise FetchError(f"{path}: {got} bytes but the published file has {f.size}; delete it and "
                         f"run the command again")
    if record and record.get("size") == got and record.get("sha256"):
        _say(progress, f"{f.name}: already complete, skipped")
        return dict(record)
    digest = _hash_file(path, progress)
    expected = f.sha256 or (record or {}).get("sha256")
    if expected and digest != expected.lower():
        raise FetchError(f"{path}: checksum mismatch, sha256 {digest} but expected "
                         f"{expected.lower()}; delete it and run the command again")
    return {"url": None, "size": got, "sha256": digest,
            "fetched": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def unpack_zip(archive: Path, dest: Path, *, progress: bool = True) -> Path:
    """Unpack ``archive`` into ``dest``, dropping the zip's single top folder if it has one.

    Unpacks into a hidden sibling folder first and renames it to ``dest`` at the end, so ``dest``
    exists only when complete. Members that would land outside ``dest`` and a corrupt archive raise
    FetchError naming the archive.
    """
    tmp = dest.with_name(f".{dest.name}.unpacking")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir() and not _is_junk(m.filename)]
            prefix = _top_folder(m.filename for m in members)
            with tqdm(total=sum(m.file_size for m in members), unit="B", unit_scale=True,
                      unit_divisor=1024, desc=f"unpacking {archive.name}", file=sys.stderr,
                      disable=not progress) as bar:
                for m in members:
                    target = tmp / _safe_relative(m.filename[len(prefix):], archive)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(m) as src, target.open("wb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK_BYTES)
                    bar.update(m.file_size)
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise FetchError(f"{archive}: not a valid zip archive ({err}); delete it and run the "
                         f"command again") from err
    os.replace(tmp, dest)
    return dest


def read_checksums(out: Path) -> dict[str, dict[str, Any]]:
    """The records of ``out/checksums.json`` (file name -> url, size, sha256, ...); {} if none."""
    path = out / CHECKSUMS_FILE
    if not path.exists():
        return {}
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise FetchError(f"{path}: not valid JSON ({err}); delete it (the files are hashed again "
                         f"on the next fetch)") from err
    if not isinstance(records, dict):
        raise FetchError(f"{path}: expected a JSON object of file records; delete it")
    return records


def write_checksums(out: Path, records: dict[str, dict[str, Any]]) -> None:
    """Write ``out/checksums.json`` atomically (temp file + rename)."""
    path = out / CHECKSUMS_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """Parse ``bytes START-END/TOTAL`` or ``bytes */TOTAL`` into (start, end, total)."""
    if not value or not value.startswith("bytes "):
        return None, None, None
    span, _, total = value[6:].partition("/")
    start, _, end = span.partition("-")
    return _int_or_none(start), _int_or_none(end), _int_or_none(total)


def _int_or_none(text: str) -> int | None:
    return int(text) if text.strip().isdigit() else None


def _hash_prefix(path: Path, length: int, progress: bool) -> hashlib._Hash:
    """A sha256 fed with the first ``length`` bytes of ``path`` (the part already downloaded)."""
    hasher = hashlib.sha256()
    if length:
        with path.open("rb") as fh, _bar(f"{path.name} (checking)", length, 0, progress) as bar:
            remaining = length
            while remaining:
                chunk = fh.read(min(CHUNK_BYTES, remaining))
                if not chunk:
                    break
                hasher.update(chunk)
                remaining -= len(chunk)
                bar.update(len(chunk))
    return hasher


def _hash_file(path: Path, progress: bool) -> str:
    return _hash_prefix(path, path.stat().st_size, progress).hexdigest()


def _bar(desc: str, total: int | None, initial: int, progress: bool) -> tqdm:
    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True,
                unit_divisor=1024, file=sys.stderr, disable=not progress)


def _say(progress: bool, message: str) -> None:
    if progress:
        tqdm.write(message, file=sys.stderr)


def _is_junk(name: str) -> bool:
    return name.startswith(_JUNK_PREFIXES) or posixpath.basename(name) in _JUNK_NAMES


def _top_folder(names: Iterable[str]) -> str:
    """``"top/"`` when every name sits under the same top folder, else ``""``."""
    tops = {n.split("/", 1)[0] if "/" in n else None for n in names}
    return f"{tops.pop()}/" if len(tops) == 1 and None not in tops else ""


def _safe_relative(name: str, archive: Path) -> str:
    """``name`` as a relative path inside the destination; FetchError for absolute or ``..``."""
    norm = posixpath.normpath(name)
    if not name or name.startswith("/") or norm == "." or norm.split("/")[0] == "..":
        raise FetchError(f"{archive}: member '{name}' would be written outside the destination "
                         f"folder; the archive is not the published one, delete it")
    return norm
