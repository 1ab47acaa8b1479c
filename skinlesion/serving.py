"""Serving: answer one request with the model the store's route names, and log it durably.

Used by the API and the dashboard's Predict page alike. The route (active version, fallback engaged,
restricted to clear cases) is re-read from the store at most every ``route_ttl_s`` seconds, so a change
made by another process (CLI, dashboard) takes effect within seconds and without a restart. Loaded
versions are cached by id; a request never waits for a model to load twice.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from skinlesion.data.images import load_image
from skinlesion.errors import SkinLesionError
from skinlesion.predict import DecisionPolicy, Predictor
from skinlesion.schema import CLASSES, Metadata
from skinlesion.store import PredictionRecord, PredictionWriter, ServingRoute, Store


class RouteError(SkinLesionError):
    """The route names a version that cannot serve (e.g. fallback engaged with no fallback version)."""


@dataclass(frozen=True)
class Choice:
    version: str
    role: str
    restricted: bool


def choose(route: ServingRoute) -> Choice:
    """Which version answers, in which role, under the current route (pure)."""
    if route.fallback_engaged:
        if not route.fallback_version:
            raise RouteError("the fallback is engaged but no fallback version is set; "
                             "run `skinlesion models fallback on --version VERSION`")
        return Choice(route.fallback_version, "fallback", route.restricted_to_clear_cases)
    return Choice(route.active_version, "active", route.restricted_to_clear_cases)


class ServingService:
    """Route-following predictor with durable logging (one per process)."""

    def __init__(self, store: Store, models_dir: Path, *, device: str = "auto",
                 route_ttl_s: float = 2.0, policy: DecisionPolicy | None = None,
                 retention_dir: Path | None = None, writer: PredictionWriter | None = None):
        self.store = store
        self.models_dir = Path(models_dir)
        self.device = device
        self.route_ttl_s = route_ttl_s
        self.policy = policy or DecisionPolicy()
        self.retention_dir = retention_dir
        self.writer = writer or PredictionWriter(store)
        self._predictors: dict[tuple[str, str], Predictor] = {}
        self._lock = threading.Lock()
        self._route: ServingRoute | None = None
        self._route_read_at = -float("inf")

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
                    version, self.models_dir, device=self.device, role=role, policy=self.policy)
            return self._predictors[key]

    def current_predictor(self) -> tuple[Predictor, Choice]:
        choice = choose(self.route())
        return self.predictor(choice.version, choice.role), choice

    def answer(self, image: bytes | Image.Image, metadata: Metadata, *, source: str,
               request_id: str | None = None, simulated: bool = False) -> PredictionRecord:
        """The answer of the model the route names, as the row to log (not yet logged)."""
        predictor, choice = self.current_predictor()
        answer = predictor.predict(image, metadata, restricted=choice.restricted)
        image_path = self._retain(image, answer.image_sha256)
        return answer.to_record(source=source, metadata=metadata, request_id=request_id,
                                image_path=image_path, simulated=simulated)

    def log(self, record: PredictionRecord) -> None:
        """Log durably: returns once the row's (group) commit is done."""
        self.writer.submit(record)

    def predict(self, image: bytes | Image.Image, metadata: Metadata, *, source: str,
                request_id: str | None = None, simulated: bool = False) -> PredictionRecord:
        """Answer and log; returns only once the log row is durable."""
        record = self.answer(image, metadata, source=source, request_id=request_id,
                             simulated=simulated)
        self.log(record)
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
        self.writer.close()


def log_dataset(store: Store, predictor: Predictor, df: pd.DataFrame, *, batch_size: int = 32,
                progress: bool = True) -> np.ndarray:
    """Send every image of a dataset table through the Predictor and log each answer (source
    ``batch``), one transaction per batch; returns the probabilities (len(df), 8)."""
    out = np.zeros((len(df), len(CLASSES)))
    bar = tqdm(total=len(df), desc=f"predict+log {predictor.version.id}", unit="img",
               file=sys.stderr, disable=not progress)
    for start in range(0, len(df), batch_size):
        chunk = df.iloc[start:start + batch_size]
        metadata = [Metadata.from_raw(r.age_approx, r.sex, r.anatom_site_general)
                    for r in chunk.itertuples()]
        images = [Path(p).read_bytes() for p in chunk["path"]]
        answers = predictor.predict_batch(images, metadata)
        store.log_predictions([a.to_record(source="batch", metadata=m)
                               for a, m in zip(answers, metadata, strict=True)])
        out[start:start + len(chunk)] = [[a.probabilities[c] for c in CLASSES] for a in answers]
        bar.update(len(chunk))
    bar.close()
    return out
