"""API routes: thin mappings from HTTP to the serving service and the store."""

from __future__ import annotations

import time
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import (BaseModel, ConfigDict, Field, StringConstraints, field_validator,
                      model_validator)

from skinlesion.api.errors import RETRY_AFTER_UNAVAILABLE_S, ApiError
from skinlesion.api.form import OPENAPI_FORM, PredictionForm, read_prediction_form
from skinlesion.api.guards import ApiClient, DecodeBusy
from skinlesion.data.images import read_header
from skinlesion.errors import SkinLesionError
from skinlesion.schema import CLASSES, Metadata, class_index
from skinlesion.serving import ServingService
from skinlesion.store import LabelRecord, PredictionRecord

router = APIRouter()
#: A label's ``source``: one short word, so no free text (and no identifier) can ride along.
LABEL_SOURCE_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,31}$"


def get_service(request: Request) -> ServingService:
    return request.app.state.service


def require_api_key(request: Request,
                    x_api_key: Annotated[str | None, Header(description="API key "
                                                            "(`skinlesion apikey create`)")] = None
                    ) -> ApiClient:
    """The caller (its key's name and scopes), checked by the gate (:mod:`skinlesion.api.guards`)
    before the body was read; 401 if the gate did not admit the request (the header is declared
    for the OpenAPI description)."""
    client = getattr(request.state, "api_client", None)
    if not isinstance(client, ApiClient):
        raise ApiError(401, "X-API-Key", "missing API key: send it in the X-API-Key header")
    return client


Service = Annotated[ServingService, Depends(get_service)]
Caller = Annotated[ApiClient, Depends(require_api_key)]


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
    """Ground truth arriving later (e.g. histopathology), for a request id or an image hash. Who
    labelled is the caller's API key, never text sent in the body."""

    model_config = ConfigDict(extra="forbid")

    request_id: uuid.UUID | None = None
    image_sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")] | None = None
    diagnosis: str = Field(description=f"one of {', '.join(CLASSES)}")
    source: Annotated[str, StringConstraints(pattern=LABEL_SOURCE_PATTERN)] = Field(
        "histopathology", description="where the diagnosis comes from: a word such as "
        "histopathology, review or import (letters, digits, _ and -; at most 32)")

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


def answer_form(request: Request, service: ServingService, form: PredictionForm, request_id: str,
                client: ApiClient) -> PredictionRecord:
    """Validate the metadata and the image's header, decode and answer within the pixel budget, log
    durably with the client that asked (blocking: runs in a worker thread)."""
    state = request.app.state
    metadata = Metadata.from_raw(form.age_approx, form.sex, form.anatom_site_general)
    header = read_header(form.image)  # format, animation and size refused before any decode
    try:
        with state.pixel_budget.hold(header.pixels, state.settings.decode_wait_s):
            answer_start = time.perf_counter()
            record = service.answer(form.image, metadata, source="api", request_id=request_id)
            state.metrics.answer_time.observe(time.perf_counter() - answer_start)
        record = record.model_copy(update={"api_client": client.name})
    except DecodeBusy as busy:
        raise ApiError(503, "image", f"the server is decoding other large images; {busy}",
                       headers={"Retry-After": str(busy.retry_after_s)}) from None
    request.state.model_version = record.model_version
    logging_start = time.perf_counter()
    service.log(record)  # the client gets its answer only once the log row is durable
    state.metrics.log_wait.observe(time.perf_counter() - logging_start)
    service.shadow(form.image, metadata, source="api")  # in the background: logged, never returned
    return record


@router.post("/v1/predictions", response_model=PredictionOut, tags=["predictions"],
             summary="Classify one dermoscopy image with its metadata; the answer is logged.",
             openapi_extra=OPENAPI_FORM)
async def create_prediction(request: Request, service: Service, client: Caller) -> PredictionOut:
    # failures are counted and recorded by the error handlers (skinlesion.api.errors)
    request.state.request_id = request_id = str(uuid.uuid4())
    form = await read_prediction_form(request, request.app.state.settings.max_upload_bytes)
    record = await run_in_threadpool(answer_form, request, service, form, request_id, client)
    metrics = request.app.state.metrics
    metrics.observe(request, 200, record.model_version)
    metrics.decisions.labels(record.model_version, record.decision, record.predicted_class).inc()
    return PredictionOut(**record.model_dump(include=set(PredictionOut.model_fields)))


@router.get("/v1/predictions/{request_id}", response_model=PredictionOut, tags=["predictions"],
            summary="One of the caller's logged answers by its request id (any client's with the "
                    "admin scope).")
def read_prediction(request_id: str, service: Service, client: Caller) -> PredictionOut:
    try:
        uuid.UUID(request_id)
    except ValueError:
        raise ApiError(422, "request_id", "request_id must be a UUID as returned by "
                       "POST /v1/predictions") from None
    record = service.store.get_prediction(request_id)
    if record is None or not (client.reads_any or record.api_client == client.name):
        # another client's answer is as absent as one never given: 404, not 403
        raise ApiError(404, "request_id", f"no prediction of yours with request id {request_id}")
    return PredictionOut(**record.model_dump(include=set(PredictionOut.model_fields)))


@router.post("/v1/labels", status_code=201, tags=["labels"],
             summary="Ground truth for the caller's earlier answers (by request id or image hash; "
                     "any client's with the labeller or admin scope).")
def create_labels(request: Request, body: LabelsIn, service: Service, client: Caller) -> dict:
    records = [LabelRecord(request_id=lab.request_id and str(lab.request_id),
                           image_sha256=lab.image_sha256, diagnosis=lab.diagnosis,
                           source=lab.source, labelled_by=client.name) for lab in body.labels]
    if not client.labels_any:
        check_own_targets(service, client, records)
    matched = service.store.add_labels(records)
    request.app.state.metrics.observe(request, 201)
    return {"stored": len(records), "matched": matched}


def check_own_targets(service: ServingService, client: ApiClient,
                      records: list[LabelRecord]) -> None:
    """404 naming the first label whose request id or image hash is not among the client's own
    answers (nothing is stored then)."""
    own_ids, own_hashes = service.store.owned_by(
        client.name, request_ids=[r.request_id for r in records if r.request_id],
        image_hashes=[r.image_sha256 for r in records if r.image_sha256])
    for i, record in enumerate(records):
        if record.request_id and record.request_id not in own_ids:
            raise ApiError(404, f"labels.{i}.request_id", f"no prediction of yours with request id "
                           f"{record.request_id}; nothing was stored")
        if record.image_sha256 and record.image_sha256 not in own_hashes:
            raise ApiError(404, f"labels.{i}.image_sha256", "no prediction of yours for the image "
                           f"{record.image_sha256}; nothing was stored")


@router.get("/healthz", tags=["operations"], summary="Liveness: the process answers.")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", tags=["operations"],
            summary="Readiness: the route's model loads and the store takes writes (503 with the "
                    "reason otherwise).")
async def readyz(service: Service, response: Response) -> dict:
    try:
        predictor, choice = await run_in_threadpool(service.current_predictor)
        await run_in_threadpool(service.store.check_writable)  # every answer must be logged
        schema = await run_in_threadpool(service.store.schema_version)
    except SkinLesionError as err:
        response.status_code = 503
        response.headers["Retry-After"] = str(RETRY_AFTER_UNAVAILABLE_S)
        return {"status": "not ready", "reason": str(err)}
    return {"status": "ready", "model_version": predictor.version.id, "model_role": choice.role,
            "restricted_to_clear_cases": choice.restricted, "store_schema": schema,
            "store_writable": True}


@router.get("/metrics", tags=["operations"], summary="Prometheus metrics.")
def prometheus_metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(),
                    media_type="text/plain; version=0.0.4; charset=utf-8")
