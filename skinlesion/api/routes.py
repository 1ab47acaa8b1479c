"""API routes: thin mappings from HTTP to the serving service and the store."""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Header, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from skinlesion.api.errors import ApiError
from skinlesion.errors import SkinLesionError
from skinlesion.schema import CLASSES, Metadata, class_index
from skinlesion.serving import ServingService
from skinlesion.store import LabelRecord

router = APIRouter()
KEY_CACHE_TTL_S = 5.0


def get_service(request: Request) -> ServingService:
    return request.app.state.service


def require_api_key(request: Request,
                    x_api_key: Annotated[str | None, Header(description="API key "
                                                            "(`skinlesion apikey create`)")] = None
                    ) -> str:
    """The key's name; 401 without a key, 403 with an unknown or revoked one. Verified keys are cached
    for a few seconds so a request does not open the database just to check its key."""
    if not x_api_key:
        raise ApiError(401, "X-API-Key", "missing API key: send it in the X-API-Key header "
                       "(create one with `skinlesion apikey create --name NAME`)")
    cache = request.app.state.__dict__.setdefault("key_cache", {})
    digest = hashlib.sha256(x_api_key.encode()).hexdigest()
    hit = cache.get(digest)
    if hit and hit[1] > time.monotonic():
        return hit[0]
    name = get_service(request).store.verify_api_key(x_api_key)
    if name is None:
        raise ApiError(403, "X-API-Key", "API key not recognised or revoked")
    cache[digest] = (name, time.monotonic() + KEY_CACHE_TTL_S)
    return name


Service = Annotated[ServingService, Depends(get_service)]
ApiKey = Annotated[str, Depends(require_api_key)]


class PredictionOut(BaseModel):
    request_id: str
    model_version: str
    model_role: str
    probabilities: dict[str, float]
    p_malignant: float
    threshold: float
    predicted_class: str
    decision: str = Field(description="refer | no referral | uncertain")
    decision_reason: str
    image_sha256: str
    latency_ms: float
    device: str


class LabelIn(BaseModel):
    """Ground truth arriving later (e.g. histopathology), for a request id or an image hash."""

    model_config = ConfigDict(extra="forbid")

    request_id: str | None = None
    image_sha256: str | None = None
    diagnosis: str = Field(description=f"one of {', '.join(CLASSES)}")
    source: str = "histopathology"
    labelled_by: str | None = None

    @field_validator("diagnosis")
    @classmethod
    def _diagnosis(cls, value: str) -> str:
        class_index(value)  # ValueError listing the allowed classes
        return value

    @model_validator(mode="after")
    def _target(self) -> LabelIn:
        if not (self.request_id or self.image_sha256):
            raise ValueError("give request_id or image_sha256")
        return self


class LabelsIn(BaseModel):
    labels: list[LabelIn] = Field(min_length=1, max_length=10_000)


def _read_upload(image: UploadFile, max_bytes: int) -> bytes:
    data = image.file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ApiError(413, "image", f"image larger than the {max_bytes // (1024 * 1024)} MiB limit; "
                       "send the dermoscopy image as JPEG or PNG")
    if not data:
        raise ApiError(422, "image", "the image file is empty (0 bytes)")
    return data


@router.post("/v1/predictions", response_model=PredictionOut, tags=["predictions"],
             summary="Classify one dermoscopy image with its metadata; the answer is logged.")
def create_prediction(
    request: Request, service: Service, key_name: ApiKey,
    image: Annotated[UploadFile, File(description="Dermoscopy image (JPEG/PNG)")],
    age_approx: Annotated[str | None, Form(description="Age in years, 0-85 (85+ as 85); "
                                           "empty if unknown")] = None,
    sex: Annotated[str | None, Form(description="male | female; empty if unknown")] = None,
    anatom_site_general: Annotated[str | None, Form(description="ISIC 2019 site; empty if "
                                                    "unknown")] = None,
) -> PredictionOut:
    # failures are counted and recorded by the error handlers (skinlesion.api.errors)
    metrics = request.app.state.metrics
    request.state.request_id = request_id = str(uuid.uuid4())
    metadata = Metadata.from_raw(age_approx, sex, anatom_site_general)
    data = _read_upload(image, request.app.state.settings.max_upload_bytes)
    record = service.answer(data, metadata, source="api", request_id=request_id)
    request.state.model_version = record.model_version
    logging_start = time.perf_counter()
    service.log(record)  # the client gets its answer only once the log row is durable
    metrics.log_wait.observe(time.perf_counter() - logging_start)
    service.shadow(data, metadata, source="api")  # in the background: logged, never returned
    metrics.observe(request, 200, record.model_version)
    metrics.decisions.labels(record.model_version, record.decision, record.predicted_class).inc()
    return PredictionOut(**record.model_dump(include=set(PredictionOut.model_fields)))


@router.get("/v1/predictions/{request_id}", response_model=PredictionOut, tags=["predictions"],
            summary="A logged answer by its request id.")
def read_prediction(request_id: str, service: Service, key_name: ApiKey) -> PredictionOut:
    try:
        uuid.UUID(request_id)
    except ValueError:
        raise ApiError(422, "request_id", "request_id must be a UUID as returned by "
                       "POST /v1/predictions") from None
    record = service.store.get_prediction(request_id)
    if record is None:
        raise ApiError(404, "request_id", f"no prediction with request id {request_id}")
    return PredictionOut(**record.model_dump(include=set(PredictionOut.model_fields)))


@router.post("/v1/labels", status_code=201, tags=["labels"],
             summary="Ground truth for earlier answers (by request id or image hash).")
def create_labels(request: Request, body: LabelsIn, service: Service, key_name: ApiKey) -> dict:
    records = [LabelRecord(request_id=lab.request_id, image_sha256=lab.image_sha256,
                           diagnosis=lab.diagnosis, source=lab.source,
                           labelled_by=lab.labelled_by or key_name) for lab in body.labels]
    matched = service.store.add_labels(records)
    request.app.state.metrics.observe(request, 201)
    return {"stored": len(records), "matched": matched}


@router.get("/healthz", tags=["operations"], summary="Liveness: the process answers.")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", tags=["operations"], summary="Readiness: model loaded and store reachable.")
async def readyz(service: Service, response: Response) -> dict:
    try:
        predictor, choice = await run_in_threadpool(service.current_predictor)
        schema = await run_in_threadpool(service.store.schema_version)
    except SkinLesionError as err:
        response.status_code = 503
        return {"status": "not ready", "reason": str(err)}
    return {"status": "ready", "model_version": predictor.version.id, "model_role": choice.role,
            "restricted_to_clear_cases": choice.restricted, "store_schema": schema}


@router.get("/metrics", tags=["operations"], summary="Prometheus metrics.")
def prometheus_metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(),
                    media_type="text/plain; version=0.0.4; charset=utf-8")
