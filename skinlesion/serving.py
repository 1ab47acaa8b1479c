"""Serving: answer one request with the model the store's route names, and log it durably.

Used by the API and the dashboard's Predict page alike. The route (active version, fallback engaged,
restricted to clear cases, challenger and its share, shadow, tuned thresholds) is re-read from the
store at most every ``route_ttl_s`` seconds, so a change made by another process (CLI, dashboard)
takes effect within seconds and without a restart. Loaded versions are cached by id; a request never
waits for a model to load twice.

A/B: a challenger answers the requests whose image falls in its share of the traffic
(:func:`traffic_bucket` of the image's content hash below ``challenger_share``), so the same image
always goes to the same arm. Shadow: the shadow version answers every request too, in a worker
thread after the caller's answer is on its way; its answer is logged (role ``shadow``,
``returned=False``) and never returned. :meth:`ServingService.close` (and :meth:`~ServingService.drain`)
waits for the pending shadow answers, so none is lost on an orderly shutdown.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from skinlesion.data.images import load_image
from skinlesion.errors import SkinLesionError, StoreError
from skinlesion.predict import DecisionPolicy, Prediction, Predictor, image_sha256
from skinlesion.schema import CLASSES, Metadata
from skinlesion.store import PredictionRecord, PredictionWriter, ServingRoute, Store


log = logging.getLogger("skinlesion.serving")


class RouteError(SkinLesionError):
    """The route names a version that cannot serve (e.g. fallback engaged with no fallback version)."""


@dataclass(frozen=True)
class Choice:
    """A version answering in a role, restricted to clear cases or not, at the route's tuned
    ``threshold`` for it (None: its card's threshold)."""

    version: str
    role: str
    restricted: bool
    threshold: float | None = None


def traffic_bucket(key: str, salt: str = "") -> float:
    """A deterministic, uniform position in [0, 1) for ``key`` (e.g. an image's content hash):
    the first 8 bytes of sha256(salt:key) as a fraction of 2**64. The same key (and salt) always
    gets the same bucket, in every process."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def prediction_record(answer: Prediction, *, source: str, metadata: Metadata,
                      request_id: str | None = None, image_path: str | None = None,
                      simulated: bool = False, returned: bool = True,
                      ts: datetime | None = None) -> PredictionRecord:
    """The store's row for one answer: what was asked (``metadata``, ``source``), what was
    answered, and how it is kept (retained ``image_path``, ``simulated``, ``returned``).
    ``request_id`` and ``ts`` default to a fresh id and now (the record's own defaults)."""
    extra = {k: v for k, v in (("request_id", request_id), ("ts", ts)) if v is not None}
    return PredictionRecord(
        source=source, model_version=answer.model_version, model_role=answer.model_role,
        **metadata.as_dict(), image_sha256=answer.image_sha256, **answer.image_stats,
        probabilities=answer.probabilities, p_malignant=answer.p_malignant,
        predicted_class=answer.predicted_class, decision=answer.decision,
        decision_reason=answer.decision_reason, threshold=answer.threshold,
        latency_ms=answer.latency_ms, device=answer.device, embedding=answer.embedding,
        texture_distance=answer.texture_distance, image_path=image_path, simulated=simulated,
        returned=returned, **extra)


def _choice(route: ServingRoute, version: str, role: str) -> Choice:
    return Choice(version, role, route.restricted_to_clear_cases, route.threshold_for(version))


def choose(route: ServingRoute, key: str | None = None) -> Choice:
    """Which version answers, in which role, under the current route (pure).

    The engaged fallback answers everything. Otherwise a request with a ``key`` (its image's
    content hash) goes to the challenger when its :func:`traffic_bucket`, salted with the
    challenger's id (so each experiment draws its own arms), is below ``challenger_share``; the
    rest, and requests without a key, go to the active version."""
    if route.fallback_engaged:
        if not route.fallback_version:
            raise RouteError("the fallback is engaged but no fallback version is set; "
                             "run `skinlesion models fallback on --version VERSION`")
        return _choice(route, route.fallback_version, "fallback")
    if (key is not None and route.challenger_version and route.challenger_share > 0
            and traffic_bucket(key, route.challenger_version) < route.challenger_share):
        return _choice(route, route.challenger_version, "challenger")
    return _choice(route, route.active_version, "active")


def shadow_choice(route: ServingRoute) -> Choice | None:
    """The shadow version that also answers every request (never returned), or None (pure)."""
    return _choice(route, route.shadow_version, "shadow") if route.shadow_version else None


#: Roles whose answers are the service's answers (count in its health); shadow and offline
#: answers are logged with ``returned=False``.
RETURNED_ROLES = ("active", "fallback", "challenger")


def role_of(route: ServingRoute, version: str) -> str:
    """The role ``version`` (an id) holds in ``route`` (pure): ``fallback`` for the engaged
    fallback, else the first of ``active``, ``challenger``, ``shadow``, ``fallback`` (standing by)
    naming it, or ``offline`` for a version the route does not name."""
    if route.fallback_engaged and version == route.fallback_version:
        return "fallback"
    for role, named in (("active", route.active_version), ("challenger", route.challenger_version),
                        ("shadow", route.shadow_version), ("fallback", route.fallback_version)):
        if version == named:
            return role
    return "offline"


def batch_choice(route: ServingRoute, version: str) -> Choice:
    """How ``version`` answers a batch sent to it by name (pure): in its :func:`role_of` the
    route, restricted to clear cases as the route is, at the route's tuned threshold for it."""
    return _choice(route, version, role_of(route, version))


class ServingService:
    """Route-following predictor with durable logging (one per process)."""

    def __init__(self, store: Store, models_dir: Path, *, device: str = "auto",
                 runtime: str = "torch", route_ttl_s: float = 2.0,
                 policy: DecisionPolicy | None = None,
                 retention_dir: Path | None = None, writer: PredictionWriter | None = None,
                 max_pending_shadow: int = 32):
        self.store = store
        self.models_dir = Path(models_dir)
        self.device = device
        self.runtime = runtime  # what runs the networks (skinlesion.model.runtime)
        self.route_ttl_s = route_ttl_s
        self.policy = policy or DecisionPolicy()
        self.retention_dir = retention_dir
        # no lingering for company: a lone request commits at once, and rows that arrive during a
        # commit still share the next one (group commit)
        self.writer = writer or PredictionWriter(store, linger_s=0.0)
        self._predictors: dict[tuple[str, str], Predictor] = {}
        self._lock = threading.Lock()
        self._route: ServingRoute | None = None
        self._route_read_at = -float("inf")
        # Shadow answers run one at a time off the request path; at most ``max_pending_shadow``
        # wait (a request blocks rather than a shadow answer being dropped or memory growing).
        self._shadow_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow")
        self._shadow_slots = threading.BoundedSemaphore(max_pending_shadow)
        self._shadow_pending: set[Future[None]] = set()
        self._shadow_lock = threading.Lock()
        self.shadow_failures = 0

    def route(self, *, fresh: bool = False) -> ServingRoute:
        now = time.monotonic()
        if fresh or self._route is None or now - self._route_read_at > self.route_ttl_s:
            self._route, self._route_read_at = self.store.get_route(), now
        return self._route

    def predictor(self, version: str, role: str) -> Predictor:
        with self._lock:
            key = (version, role)
            if key not in self._predictors:
                self._predictors[key] = Predictor.from_registry(
                    version, self.models_dir, device=self.device, role=role, policy=self.policy,
                    runtime=self.runtime)
            return self._predictors[key]

    def batching(self) -> dict[tuple[str, str], tuple[int, int]]:
        """Per loaded (version, role): the forwards its network has run and the images they
        carried (:meth:`Predictor.batching`)."""
        with self._lock:
            loaded = list(self._predictors.items())
        return {key: predictor.batching() for key, predictor in loaded}

    def current_predictor(self) -> tuple[Predictor, Choice]:
        choice = choose(self.route())
        return self.predictor(choice.version, choice.role), choice

    def answer(self, image: bytes | Image.Image, metadata: Metadata, *, source: str,
               request_id: str | None = None, simulated: bool = False) -> PredictionRecord:
        """The answer of the model the route names for this image (the active version, the
        challenger for its share of images, or the engaged fallback), as the row to log (not yet
        logged)."""
        choice = choose(self.route(), image_sha256(image))
        predictor = self.predictor(choice.version, choice.role)
        answer = predictor.predict(image, metadata, restricted=choice.restricted,
                                   threshold=choice.threshold)
        image_path = self._retain(image, answer.image_sha256)
        return prediction_record(answer, source=source, metadata=metadata, request_id=request_id,
                                 image_path=image_path, simulated=simulated)

    def answer_batch(self, version: str, images: list[bytes], metadata: list[Metadata], *,
                     source: str) -> list[PredictionRecord]:
        """The answers of ``version`` (an id) for a batch, as :func:`batch_choice` has it answer
        under the current route, as rows to log (not yet logged); images are kept as
        :meth:`answer` keeps them."""
        choice = batch_choice(self.route(), version)
        answers = self.predictor(choice.version, choice.role).predict_batch(
            images, metadata, restricted=choice.restricted, threshold=choice.threshold)
        return [prediction_record(a, source=source, metadata=m,
                                  image_path=self._retain(img, a.image_sha256),
                                  returned=choice.role in RETURNED_ROLES)
                for a, m, img in zip(answers, metadata, images, strict=True)]

    def log(self, record: PredictionRecord) -> None:
        """Log durably: returns once the row's (group) commit is done."""
        self.writer.submit(record)

    def shadow(self, image: bytes | Image.Image, metadata: Metadata, *, source: str,
               simulated: bool = False) -> Future[None] | None:
        """Have the route's shadow version (if any) answer this request in the background and log
        its answer (role ``shadow``, not returned); returns at once with the pending work's future,
        or None without a shadow. Failures are logged and counted in ``shadow_failures``, never
        raised into the caller's request (whose answer is already logged)."""
        try:
            choice = shadow_choice(self.route())
        except StoreError as err:
            self._shadow_failed(err)
            return None
        if choice is None:
            return None
        self._shadow_slots.acquire()
        future = self._shadow_pool.submit(self._answer_shadow, choice, image, metadata, source,
                                          simulated)
        with self._shadow_lock:
            self._shadow_pending.add(future)
        future.add_done_callback(self._shadow_done)
        return future

    def _answer_shadow(self, choice: Choice, image: bytes | Image.Image, metadata: Metadata,
                       source: str, simulated: bool) -> None:
        answer = self.predictor(choice.version, choice.role).predict(
            image, metadata, restricted=choice.restricted, threshold=choice.threshold)
        self.log(prediction_record(answer, source=source, metadata=metadata, simulated=simulated,
                                   returned=False))

    def _shadow_done(self, future: Future[None]) -> None:
        with self._shadow_lock:
            self._shadow_pending.discard(future)
        self._shadow_slots.release()
        error = future.exception()
        if error is not None:
            self._shadow_failed(error)

    def _shadow_failed(self, error: BaseException) -> None:
        with self._shadow_lock:
            self.shadow_failures += 1
        log.error("a shadow answer failed (the caller's answer was not affected): %s", error,
                  exc_info=error)

    def drain(self, timeout: float | None = None) -> None:
        """Wait until every shadow answer submitted so far is logged (or has failed)."""
        with self._shadow_lock:
            pending = list(self._shadow_pending)
        for future in pending:
            future.exception(timeout)

    def predict(self, image: bytes | Image.Image, metadata: Metadata, *, source: str,
                request_id: str | None = None, simulated: bool = False) -> PredictionRecord:
        """Answer and log; returns only once the log row is durable. The shadow, if any, answers
        the same request in the background."""
        record = self.answer(image, metadata, source=source, request_id=request_id,
                             simulated=simulated)
        self.log(record)
        self.shadow(image, metadata, source=source, simulated=simulated)
        return record

    def _retain(self, image: bytes | Image.Image, sha: str) -> str | None:
        """Keep the image under ``retention_dir`` (only when retention is switched on)."""
        if self.retention_dir is None:
            return None
        self.retention_dir.mkdir(parents=True, exist_ok=True)
        path = self.retention_dir / f"{sha}.png"
        if not path.exists():
            img = image if isinstance(image, Image.Image) else load_image(image)
            img.convert("RGB").save(path)
        return str(path)

    def close(self) -> None:
        """Finish the pending shadow answers, then write every queued row and stop."""
        self._shadow_pool.shutdown(wait=True)
        self.writer.close()

    def __enter__(self) -> ServingService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def log_dataset(service: ServingService, version: str, df: pd.DataFrame, *, batch_size: int = 32,
                progress: bool = True) -> np.ndarray:
    """Send every image of a dataset table to ``version`` (an id) through the serving path
    (:meth:`ServingService.answer_batch`: the route's role, threshold and restriction for it, image
    retention) and log each answer (source ``batch``), one transaction per batch; returns the
    probabilities (len(df), 8)."""
    out = np.zeros((len(df), len(CLASSES)))
    bar = tqdm(total=len(df), desc=f"predict+log {version}", unit="img", file=sys.stderr,
               disable=not progress)
    for start in range(0, len(df), batch_size):
        chunk = df.iloc[start:start + batch_size]
        metadata = [Metadata.from_raw(r.age_approx, r.sex, r.anatom_site_general)
                    for r in chunk.itertuples()]
        records = service.answer_batch(version, [Path(p).read_bytes() for p in chunk["path"]],
                                       metadata, source="batch")
        service.store.log_predictions(records)
        out[start:start + len(chunk)] = [[r.probabilities[c] for c in CLASSES] for r in records]
        bar.update(len(chunk))
    bar.close()
    return out
