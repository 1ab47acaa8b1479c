"""Errors as JSON: ``{"error": {"field", "message", "allowed"?}, "request_id"?}`` with a 4xx/5xx.

``allowed`` says what the field takes: the values of ``sex`` and ``anatom_site_general``, the range
of ``age_approx``, the formats and limits of ``image``. Every error answer to a counted endpoint is
counted in the API's metrics; a prediction request's is also recorded in the store
(``request_failures``: time, model version if one answered, status, kind and field; never the
request body or the message, which may quote what was sent), for the error rate of the health report;
unauthorized (401/403) and throttled (429) requests are counted in metrics only, never written.

Statuses: 413 too large, 415 an image format or body type not accepted, 422 any other bad input,
429 rate limited, 503 (with the reason, and ``Retry-After`` where waiting helps) when no model or
store can serve the request or the decoders are busy.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from skinlesion.api.metrics import UNRECORDED_OUTCOMES, endpoint_of, outcome_of
from skinlesion.data.images import ACCEPTED_FORMATS, MAX_PIXELS, MIN_SIDE
from skinlesion.errors import (ImageError, ImageFormatError, MetadataError, ModelNotFoundError,
                               StoreError)
from skinlesion.schema import AGE_ACCEPTED_MAX, AGE_MAX, AGE_MIN, SEXES, SITES
from skinlesion.serving import RouteError
from skinlesion.store import FailureRecord, Store

log = logging.getLogger("skinlesion.api")
#: Seconds a client is asked to wait after a 503 of a missing model or failing store.
RETRY_AFTER_UNAVAILABLE_S = 5

ALLOWED: dict[str, Any] = {
    "sex": list(SEXES),
    "anatom_site_general": list(SITES),
    "age_approx": {"min": AGE_MIN, "max": AGE_ACCEPTED_MAX, "unit": "years",
                   "note": f"ages over {AGE_MAX:g} count as {AGE_MAX:g}; leave empty if unknown"},
}
#: The image formats accepted (and advertised).
IMAGE_FORMATS: tuple[str, ...] = ACCEPTED_FORMATS


def allowed_values(field: str | None, max_upload_bytes: int) -> Any:
    """What ``field`` takes (see the module docstring), or None for a field without such a rule."""
    if field == "image":
        return {"formats": list(IMAGE_FORMATS), "max_bytes": max_upload_bytes,
                "max_pixels": MAX_PIXELS, "min_side_px": MIN_SIDE}
    return ALLOWED.get(field) if field else None


def size_text(n_bytes: int) -> str:
    """A byte count for a message: whole MiB from 1 MiB up, else KiB."""
    return f"{n_bytes / 2**20:g} MiB" if n_bytes >= 2**20 else f"{n_bytes / 1024:.0f} KiB"


class ApiError(Exception):
    """An error answered as-is: HTTP status, the field at fault and the message."""

    def __init__(self, status: int, field: str | None, message: str, *,
                 headers: dict[str, str] | None = None, **extra):
        super().__init__(message)
        self.status, self.field, self.message, self.extra = status, field, message, extra
        self.headers = headers


def error_body(field: str | None, message: str, allowed: Any = None, **extra) -> dict:
    err = {"field": field, "message": message}
    if allowed is not None:
        err["allowed"] = allowed
    return {"error": err | extra}


def request_id_of(request: Request) -> str:
    """The request's id (set by the route), or a new one kept for the rest of the request."""
    if getattr(request.state, "request_id", None) is None:
        request.state.request_id = str(uuid.uuid4())
    return request.state.request_id


def _log_failure(store: Store, failure: FailureRecord) -> None:
    try:
        store.log_failure(failure)
    except StoreError as err:  # the error answer still goes out; metrics have counted it
        log.warning("request %s: its failure could not be recorded: %s", failure.request_id, err)


async def _failed(request: Request, status: int, field: str | None, *, record: bool = True) -> None:
    """Count an error answer; record it in the store when it answers a prediction request, is not
    unauthorized or throttled, and ``record`` (False when the store itself is what failed)."""
    version = getattr(request.state, "model_version", None)
    request.app.state.metrics.observe(request, status, version)
    if (record and endpoint_of(request) == "predictions"
            and outcome_of(status) not in UNRECORDED_OUTCOMES):
        failure = FailureRecord(request_id=request_id_of(request), model_version=version,
                                http_status=status, kind=outcome_of(status), field=field)
        await run_in_threadpool(_log_failure, request.app.state.service.store, failure)


async def _answer(request: Request, status: int, field: str | None, message: str, *,
                  record: bool = True, headers: dict[str, str] | None = None,
                  **extra) -> JSONResponse:
    await _failed(request, status, _recorded_field(field), record=record)
    allowed = allowed_values(field, request.app.state.settings.max_upload_bytes)
    return JSONResponse(error_body(field, message, allowed, **extra), status_code=status,
                        headers=headers)


def _recorded_field(field: str | None) -> str | None:
    """The field as recorded in the store: a short name of ours; anything else could be client text
    (e.g. a dotted path into a JSON body) and is cut to its first part."""
    return field.split(".")[0][:64] if field else None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return await _answer(request, exc.status, exc.field, exc.message, headers=exc.headers,
                             **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        # Starlette's own answers (unknown path, method not allowed) in the project's shape
        return await _answer(request, exc.status_code, None, str(exc.detail), headers=exc.headers)

    @app.exception_handler(ImageFormatError)
    async def _image_format(request: Request, exc: ImageFormatError):
        return await _answer(request, 415, "image", str(exc))

    @app.exception_handler(MetadataError)
    async def _metadata(request: Request, exc: MetadataError):
        return await _answer(request, 422, exc.field, str(exc))

    @app.exception_handler(ImageError)
    async def _image(request: Request, exc: ImageError):
        return await _answer(request, 422, "image", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or None
        message = first.get("msg", "invalid input")
        if first.get("type") == "missing":
            message = f"the field '{field}' is required"
        if first.get("type") == "extra_forbidden":
            message = (f"the field '{loc[-1]}' is not accepted" + (
                "; who labelled is the client of the API key, never text in the body"
                if loc[-1] == "labelled_by" else ""))
        if first.get("type") == "json_invalid":
            reason = first.get("ctx", {}).get("error")
            field, message = "body", f"the body is not valid JSON ({reason})"
        return await _answer(request, 422, field, message)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        # The edge's last resort: an unforeseen failure (e.g. inside the model) becomes a 500 whose
        # request id is in the server log with the traceback; the server stays up.
        request_id = request_id_of(request)
        log.exception("request %s failed", request_id, exc_info=exc)
        return await _answer(request, 500, None, "internal error while answering; quote the request "
                             "id to the operators", request_id=request_id)

    @app.exception_handler(ModelNotFoundError)
    @app.exception_handler(RouteError)
    @app.exception_handler(StoreError)
    async def _unavailable(request: Request, exc: Exception):
        request_id = request_id_of(request)
        log.error("request %s: service unavailable: %s", request_id, exc)
        # a store that failed cannot take the failure's row either: metrics count it
        return await _answer(request, 503, None, f"service unavailable: {exc}",
                             record=not isinstance(exc, StoreError), request_id=request_id,
                             headers={"Retry-After": str(RETRY_AFTER_UNAVAILABLE_S)})
