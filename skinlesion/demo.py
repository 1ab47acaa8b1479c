"""``skinlesion demo``: the embedded demo, built in one command.

A synthetic dataset, a demo model trained on it, the rule-based fallback, then about 30 days of
simulated clinic traffic sent through the real Predictor and store (working hours, quieter weekends),
ground truth arriving days later for part of it, and an incident in the last week: a new imaging
device (darker, bluish, lower-contrast images) and an older patient mix, which really degrades the
model. Monitoring snapshots are replayed day by day so the history, the statuses and the alerts exist.
Everything it writes is marked simulated (``simulated = true``, source ``demo``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance
from tqdm.auto import tqdm

from skinlesion.data.synthetic import render_lesion, sample_metadata
from skinlesion.predict import Predictor
from skinlesion.schema import CLASSES, Metadata
from skinlesion.store import LabelRecord, Store

#: a clinic's patient mix (share of each diagnosis among the lesions sent for an opinion)
CLINIC_MIX = {"MEL": 0.12, "NV": 0.50, "BCC": 0.10, "AK": 0.05, "BKL": 0.13, "DF": 0.03,
              "VASC": 0.03, "SCC": 0.04}
#: during the incident the clinic sees an older population: more keratinocyte cancers and keratoses
OLDER_MIX = {"MEL": 0.14, "NV": 0.22, "BCC": 0.22, "AK": 0.12, "BKL": 0.17, "DF": 0.02,
             "VASC": 0.02, "SCC": 0.09}
#: relative traffic per hour of day (clinic hours, lunch dip) and per weekday (Mon..Sun)
HOURLY = np.array([0, 0, 0, 0, 0, 0, 0, 1, 6, 9, 10, 9, 5, 6, 9, 10, 8, 5, 2, 1, 0, 0, 0, 0], float)
WEEKDAY = np.array([1.0, 1.0, 0.95, 1.0, 0.9, 0.3, 0.1])


@dataclass(frozen=True)
class TrafficConfig:
    days: int = 30
    requests_per_weekday: int = 90
    incident_days: int = 7
    label_share: float = 0.6
    label_delay_days: tuple[float, float] = (1.0, 5.0)
    image_width: int = 200
    seed: int = 0


def schedule(now: datetime, config: TrafficConfig, rng: np.random.Generator) -> list[datetime]:
    """Request times over the ``config.days`` days before ``now``, following clinic hours and the
    weekly pattern (Poisson counts per hour), sorted."""
    start = (now - timedelta(days=config.days)).replace(minute=0, second=0, microsecond=0)
    per_hour = config.requests_per_weekday / HOURLY.sum()
    times = []
    hour = start
    while hour < now:
        rate = per_hour * HOURLY[hour.hour] * WEEKDAY[hour.weekday()]
        for _ in range(rng.poisson(rate)):
            t = hour + timedelta(seconds=float(rng.uniform(0, 3600)))
            if t < now:
                times.append(t)
        hour += timedelta(hours=1)
    return sorted(times)


def incident_severity(t: datetime, now: datetime, incident_days: int) -> float:
    """0 before the incident; then rising from 0.4 to 1 over its days (the new device is rolled
    out to more rooms), so statuses turn yellow before red."""
    start = now - timedelta(days=incident_days)
    if t < start:
        return 0.0
    return 0.4 + 0.6 * min((t - start) / timedelta(days=incident_days), 1.0)


def device_shift(image: Image.Image, severity: float) -> Image.Image:
    """The new imaging device: darker, bluish and flatter images (``severity`` 0..1)."""
    if severity <= 0:
        return image
    img = ImageEnhance.Brightness(image).enhance(1 - 0.35 * severity)
    img = ImageEnhance.Contrast(img).enhance(1 - 0.4 * severity)
    arr = np.asarray(img, dtype=np.float32)
    arr = arr * np.array([1 - 0.25 * severity, 1 - 0.05 * severity, 1 + 0.3 * severity])
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def older_patient(metadata: dict, severity: float, rng: np.random.Generator) -> dict:
    """Shift ages upward during the incident (the population served changed)."""
    if severity <= 0 or metadata["age_approx"] is None:
        return metadata
    age = min(85.0, float(metadata["age_approx"]) + 5 * round(15 * severity * rng.random() / 5))
    return metadata | {"age_approx": age}


def class_mix(severity: float) -> np.ndarray:
    base = np.array([CLINIC_MIX[c] for c in CLASSES])
    older = np.array([OLDER_MIX[c] for c in CLASSES])
    mix = (1 - severity) * base + severity * older
    return mix / mix.sum()


def simulate_traffic(store: Store, predictor: Predictor, now: datetime, config: TrafficConfig, *,
                     retention_dir: Path | None = None, batch_size: int = 48,
                     progress: bool = True) -> dict:
    """Send simulated requests through ``predictor`` and log them with their simulated times;
    add the labels that have arrived by ``now``. Returns counts."""
    rng = np.random.default_rng(config.seed)
    times = schedule(now, config, rng)
    n_labels = 0
    bar = tqdm(total=len(times), desc="simulated traffic", unit="req", file=sys.stderr,
               disable=not progress)
    for start in range(0, len(times), batch_size):
        batch_times = times[start:start + batch_size]
        classes, images, metas = [], [], []
        for t in batch_times:
            sev = incident_severity(t, now, config.incident_days)
            cls = CLASSES[rng.choice(len(CLASSES), p=class_mix(sev))]
            classes.append(cls)
            images.append(device_shift(render_lesion(cls, rng, config.image_width), sev))
            metas.append(Metadata.from_raw(**older_patient(sample_metadata(cls, rng), sev, rng)))
        answers = predictor.predict_batch(images, metas)
        records, labels = [], []
        for t, cls, img, meta, answer in zip(batch_times, classes, images, metas, answers,
                                             strict=True):
            path = _retain(img, answer.image_sha256, retention_dir)
            record = answer.to_record(source="demo", metadata=meta, ts=t, simulated=True,
                                      image_path=path)
            records.append(record)
            delay = timedelta(days=float(rng.uniform(*config.label_delay_days)))
            if rng.random() < config.label_share and t + delay < now:
                labels.append(LabelRecord(request_id=record.request_id, diagnosis=cls,
                                          source="histopathology", labelled_by="demo",
                                          ts=t + delay, simulated=True))
        store.log_predictions(records)
        if labels:
            store.add_labels(labels)
            n_labels += len(labels)
        bar.update(len(batch_times))
    bar.close()
    return {"predictions": len(times), "labels": n_labels}


def _retain(image: Image.Image, sha: str, folder: Path | None) -> str | None:
    if folder is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{sha}.jpg"
    image.save(path, quality=88)
    return str(path)


def replay_monitoring(days: int, now: datetime, run: Callable[[datetime], object], *,
                      progress: bool = True) -> None:
    """Run the monitor at the end of each simulated day, oldest first, so snapshots and alerts
    build up as they would have in production."""
    end_of_today = now.replace(minute=0, second=0, microsecond=0)
    for d in tqdm(range(days - 1, -1, -1), desc="monitoring replay", unit="day", file=sys.stderr,
                  disable=not progress):
        run(end_of_today - timedelta(days=d))


def utc_now() -> datetime:
    return datetime.now(UTC)
