"""Errors as JSON: ``{"error": {"field", "message", "allowed"?}, "request_id"?}`` with a 4xx/5xx."""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from skinlesion.errors import ImageError, MetadataError, ModelNotFoundError, StoreBusyError
from skinlesion.schema import SEXES, SITES
from skinlesion.serving import RouteError

log = logging.getLogger("skinlesion.api")

ALLOWED = {"sex": list(SEXES), "anatom_site_general": list(SITES)}


class ApiError(Exception):
    """An error answered as-is: HTTP status, the field at fault and the message."""

    def __init__(self, status: int, field: str | None, message: str, **extra):
        super().__init__(message)
        self.status, self.field, self.message, self.extra = status, field, message, extra


def error_body(field: str | None, message: str, **extra) -> dict:
    err = {"field": field, "message": message}
    if field in ALLOWED:
        err["allowed"] = ALLOWED[field]
    return {"error": err | extra}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse(error_body(exc.field, exc.message, **exc.extra), status_code=exc.status)

    @app.exception_handler(MetadataError)
    async def _metadata(request: Request, exc: MetadataError):
        return JSONResponse(error_body(exc.field, str(exc)), status_code=422)

    @app.exception_handler(ImageError)
    async def _image(request: Request, exc: ImageError):
        return JSONResponse(error_body("image", str(exc)), status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or None
        message = first.get("msg", "invalid input")
        if first.get("type") == "missing":
            message = f"the field '{field}' is required"
        return JSONResponse(error_body(field, message), status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        # The edge's last resort: an unforeseen failure (e.g. inside the model) becomes a 500 whose
        # request id is in the server log with the traceback; the server stays up.
        request_id = getattr(request.state, "request_id", None) or str(uuid.uuid4())
        log.exception("request %s failed", request_id, exc_info=exc)
        return JSONResponse(error_body(None, "internal error while answering; quote the request id "
                                       "to the operators", request_id=request_id), status_code=500)

    @app.exception_handler(ModelNotFoundError)
    @app.exception_handler(RouteError)
    @app.exception_handler(StoreBusyError)
    async def _unavailable(request: Request, exc: Exception):
        request_id = str(uuid.uuid4())
        log.error("request %s: service unavailable: %s", request_id, exc)
        return JSONResponse(error_body(None, f"service unavailable: {exc}", request_id=request_id),
                            status_code=503)
