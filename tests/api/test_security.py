"""Bad input, as an attacker or a careless client sends it (issue 16).

Every kind below must get a 4xx in the project's JSON error shape naming the field at fault, log no
prediction, be counted in the metrics, and leave the server answering: a good request right after
it is answered and logged.
"""

from __future__ import annotations

import io
import json
import uuid

import numpy as np
import pytest
from PIL import Image

from tests.api.test_api import _sample, env, jpeg, predict  # noqa: F401 (fixture)

RNG = np.random.default_rng(16)
COLOUR = Image.fromarray(RNG.integers(30, 220, (48, 64, 3), dtype=np.uint8))


def encoded(fmt: str, image: Image.Image = COLOUR, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def animated(fmt: str) -> bytes:
    return encoded(fmt, save_all=True, append_images=[COLOUR.rotate(180)], duration=100)


def bomb() -> bytes:
    return encoded("PNG", Image.new("1", (10_000, 10_000)))  # ~15 KB, 100 Mpx decoded


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "b0undary") -> bytes:
    """A multipart body from (name, filename or None, content) parts, written by hand so that any
    structure can be sent."""
    out = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


IMAGE = ("image", "lesion.jpg", jpeg())
FORM = {"Content-Type": "multipart/form-data; boundary=b0undary"}

#: (id, how to send it, expected status, the field the error must name)
#: "how": ("files", image bytes, form fields) | ("raw", headers, body) | ("key", header value) |
#: ("labels", JSON body or bytes)
CASES = [
    # formats not advertised, broken or hostile files
    ("tiff", ("files", encoded("TIFF"), {}), 415, "image"),
    ("webp", ("files", encoded("WEBP"), {}), 415, "image"),
    ("gif-animated", ("files", animated("GIF"), {}), 415, "image"),
    ("gif-still", ("files", encoded("GIF"), {}), 415, "image"),
    ("bmp", ("files", encoded("BMP"), {}), 415, "image"),
    ("png-animated", ("files", animated("PNG"), {}), 415, "image"),
    ("text-file", ("files", b"this is a text file", {}), 422, "image"),
    ("empty-file", ("files", b"", {}), 422, "image"),
    ("jpeg-truncated", ("files", jpeg()[:200], {}), 422, "image"),
    ("png-truncated", ("files", encoded("PNG")[:120], {}), 422, "image"),
    ("jpeg-garbage-after-header", ("files", jpeg()[:30] + bytes(RNG.integers(0, 256, 600,
                                                                             dtype=np.uint8)), {}),
     422, "image"),
    ("too-small", ("files", jpeg(size=(8, 8)), {}), 422, "image"),
    ("decompression-bomb", ("files", bomb(), {}), 422, "image"),
    ("over-byte-limit", ("files", b"\xff\xd8" + b"x" * 250_000 + jpeg(), {}), 413, "image"),
    ("pdf", ("files", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", {}), 422, "image"),
    ("svg", ("files", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', {}),
     422, "image"),
    ("html", ("files", b"<html><body onload=alert(1)></body></html>", {}), 422, "image"),
    ("zip", ("files", b"PK\x03\x04" + bytes(200), {}), 422, "image"),
    # the form's structure
    ("two-images", ("raw", FORM, multipart([IMAGE, ("image", "b.jpg", jpeg(200))])), 422, "image"),
    ("duplicate-age", ("raw", FORM, multipart([IMAGE, ("age_approx", None, b"40"),
                                               ("age_approx", None, b"70")])), 422, "age_approx"),
    ("duplicate-sex", ("raw", FORM, multipart([("sex", None, b"male"), IMAGE,
                                               ("sex", None, b"female")])), 422, "sex"),
    ("unknown-field", ("raw", FORM, multipart([IMAGE, ("patient_name", None, b"John Smith")])),
     422, "form"),
    ("image-as-text", ("raw", FORM, multipart([("image", None, b"not a file")])), 422, "image"),
    ("sex-as-file", ("raw", FORM, multipart([IMAGE, ("sex", "sex.txt", b"male")])), 422, "sex"),
    ("100kb-form-field", ("raw", FORM, multipart([IMAGE, ("anatom_site_general", None,
                                                          b"a" * 100_000)])),
     422, "anatom_site_general"),
    ("no-image", ("raw", FORM, multipart([("sex", None, b"male")])), 422, "image"),
    ("urlencoded", ("raw", {"Content-Type": "application/x-www-form-urlencoded"}, b"sex=male"),
     422, "image"),
    ("json-body", ("raw", {"Content-Type": "application/json"}, b'{"image": "aGVsbG8="}'),
     415, "Content-Type"),
    ("no-boundary", ("raw", {"Content-Type": "multipart/form-data"}, multipart([IMAGE])),
     422, "form"),
    ("garbage-multipart", ("raw", FORM, b"--b0undary\r\n\x00\x01garbage"), 422, "form"),
    ("no-content-disposition-name", ("raw", FORM, b"--b0undary\r\nContent-Disposition: form-data"
                                                  b"\r\n\r\nx\r\n--b0undary--\r\n"), 422, "form"),
    # metadata values
    ("age-150", ("files", None, {"age_approx": "150"}), 422, "age_approx"),
    ("age-negative", ("files", None, {"age_approx": "-1"}), 422, "age_approx"),
    ("age-word", ("files", None, {"age_approx": "old"}), 422, "age_approx"),
    ("age-nan", ("files", None, {"age_approx": "nan"}), 422, "age_approx"),
    ("age-inf", ("files", None, {"age_approx": "1e309"}), 422, "age_approx"),
    ("age-hex", ("files", None, {"age_approx": "0x10"}), 422, "age_approx"),
    ("sex-unknown", ("files", None, {"sex": "unknown-sex"}), 422, "sex"),
    ("sex-nul-byte", ("files", None, {"sex": "male\x00"}), 422, "sex"),
    ("sex-homoglyph", ("files", None, {"sex": "m\u0430le"}), 422, "sex"),
    ("site-unknown", ("files", None, {"anatom_site_general": "torso"}), 422, "anatom_site_general"),
    ("site-latin1-bytes", ("raw", FORM, multipart([IMAGE, ("anatom_site_general", None,
                                                           "t\u00f6rso".encode("latin-1"))])),
     422, "anatom_site_general"),
    ("site-sql", ("files", None, {"anatom_site_general": "x'; DROP TABLE predictions;--"}),
     422, "anatom_site_general"),
    # keys and sizes, refused before the body is read
    ("no-key", ("key", None), 401, "X-API-Key"),
    ("wrong-key", ("key", "skl_" + "A" * 43), 403, "X-API-Key"),
    ("key-sql", ("key", "' OR 1=1 --"), 403, "X-API-Key"),
    ("declared-too-large", ("raw", {**FORM, "Content-Length": "999999999"}, multipart([IMAGE])),
     413, "image"),
    ("chunked-no-length", ("chunked",), 411, "image"),
    # labels
    ("labels-invalid-json", ("labels", b'{"labels": [}'), 422, "body"),
    ("labels-unknown-diagnosis", ("labels", {"labels": [{"request_id": str(uuid.uuid4()),
                                                         "diagnosis": "melanoma"}]}),
     422, "labels.0.diagnosis"),
    ("labels-extra-field", ("labels", {"labels": [{"request_id": str(uuid.uuid4()),
                                                   "diagnosis": "MEL", "mrn": "123456"}]}),
     422, "labels.0.mrn"),
    ("labels-empty", ("labels", {"labels": []}), 422, "labels"),
    ("labels-no-target", ("labels", {"labels": [{"diagnosis": "MEL"}]}), 422, "labels.0"),
    ("labels-labelled-by-text", ("labels", {"labels": [{"request_id": str(uuid.uuid4()),
                                                        "diagnosis": "MEL",
                                                        "labelled_by": "patient John Smith"}]}),
     422, "labels.0.labelled_by"),
    ("labels-free-text-source", ("labels", {"labels": [{"request_id": str(uuid.uuid4()),
                                                        "diagnosis": "MEL",
                                                        "source": "biopsy of John Smith, MRN 1234"}]}),
     422, "labels.0.source"),
    ("labels-bad-hash", ("labels", {"labels": [{"image_sha256": "abc", "diagnosis": "MEL"}]}),
     422, "labels.0.image_sha256"),
    ("labels-bad-request-id", ("labels", {"labels": [{"request_id": "1; DROP TABLE labels",
                                                      "diagnosis": "MEL"}]}),
     422, "labels.0.request_id"),
]


def send(client, how):
    kind = how[0]
    if kind == "files":
        _, image, fields = how
        return predict(client, image=image, **fields)
    if kind == "raw":
        _, headers, body = how
        return client.post("/v1/predictions", content=body, headers=headers)
    if kind == "key":
        headers = {"X-API-Key": how[1]} if how[1] is not None else {}
        if how[1] is None:
            del client.headers["X-API-Key"]
        return client.post("/v1/predictions", files={"image": ("a.jpg", jpeg(), "image/jpeg")},
                           headers=headers)
    if kind == "chunked":
        return client.post("/v1/predictions", content=iter([multipart([IMAGE])]), headers=FORM)
    body = how[1]
    return client.post("/v1/labels", content=body if isinstance(body, bytes) else json.dumps(body),
                       headers={"Content-Type": "application/json"})


def failures_counted(client, endpoint: str) -> float:
    """Requests to ``endpoint`` answered with an error, as the metrics count them."""
    text = client.get("/metrics").text
    return sum(_sample(text, "skinlesion_requests_total", endpoint=endpoint, model_version="none",
                       outcome=outcome) or 0
               for outcome in ("rejected", "unauthorized", "throttled", "unavailable", "error"))


def test_there_are_at_least_40_kinds_of_bad_input():
    assert len({case[0] for case in CASES}) == len(CASES) >= 40


@pytest.mark.parametrize(("how", "status", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_naming_the_field_counted_and_nothing_logged(env, how, status, field):
    client, store, key = env
    endpoint = "labels" if how[0] == "labels" else "predictions"
    before = failures_counted(client, endpoint)
    r = send(client, how)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["field"] == field and error["message"]
    assert store.count_predictions() == 0
    assert failures_counted(client, endpoint) == before + 1
    client.headers["X-API-Key"] = key
    assert client.get("/healthz").status_code == 200
    good = predict(client)
    assert good.status_code == 200, good.text  # the server still answers
    assert store.count_predictions() == 1
