"""A seeded model-lifecycle home for the retraining tests: a base version trained (metadata only,
in a second) on the synthetic dataset, and labelled production answers whose images were kept."""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from skinlesion.data.images import file_sha256, image_stats, load_image
from skinlesion.data.readers import read_dataset
from skinlesion.data.splits import split_dataset
from skinlesion.data.synthetic import write_synthetic_dataset
from skinlesion.registry import ModelCard, read_card
from skinlesion.schema import CLASSES
from skinlesion.store import LabelRecord, PredictionRecord, ServingRoute, Store

#: a metadata-only recipe: trains in about a second on CPU, no backbone weights needed
FAST = {"inputs": "metadata", "mode": "head", "epochs": 3, "device": "cpu", "batch_size": 32}


def train_base(data_dir: Path, models_dir: Path, cache_dir: Path, *,
               version_id: str = "base") -> ModelCard:
    """Fit and register a metadata-only version on ``data_dir`` (its card names the folder)."""
    from skinlesion.register import register
    from skinlesion.train import TrainConfig, fit, training_summary

    df = read_dataset(data_dir)
    split = split_dataset(df, seed=0)
    fitted = fit(df, split, TrainConfig(**FAST), cache_dir, progress=False)
    return register(models_dir, fitted.classifier, df, split, threshold=fitted.threshold,
                    val_probs=fitted.val_probs, test_probs=fitted.predict_proba(df[split == "test"]),
                    data_name=str(data_dir), history=fitted.history,
                    training=training_summary(fitted), version_id=version_id, progress=False)


def log_production(store: Store, folder: Path, *, n: int = 24, seed: int = 1,
                   review_every: int = 3, start: datetime | None = None,
                   model_version: str = "base") -> list[str]:
    """Log ``n`` answers of ``model_version`` one hour apart for new synthetic images kept under
    ``folder`` (as with ``SKINLESION_RETAIN_IMAGES``), each labelled with its true diagnosis
    (every ``review_every``-th through the review queue, the rest by histopathology); returns the
    production image names a retrain gives them (``prod-<hash prefix>``), oldest first."""
    df = read_dataset(write_synthetic_dataset(folder, n=n, seed=seed, width=96))
    start = start or datetime.now(UTC) - timedelta(hours=n + 1)
    predictions, labels, names = [], [], []
    for i, row in enumerate(df.itertuples()):
        sha = file_sha256(row.path)
        rid = str(uuid.uuid4())
        probs = dict.fromkeys(CLASSES, 0.5 / (len(CLASSES) - 1)) | {"NV": 0.5}
        predictions.append(PredictionRecord(
            request_id=rid, ts=start + timedelta(hours=i), source="api",
            model_version=model_version,
            age_approx=None if np.isnan(row.age_approx) else row.age_approx, sex=row.sex,
            anatom_site_general=row.anatom_site_general, image_sha256=sha,
            **image_stats(load_image(row.path)), probabilities=probs, p_malignant=0.5 / 7 * 4,
            predicted_class="NV", decision="no referral", threshold=0.5, latency_ms=30.0,
            device="cpu", image_path=str(row.path)))
        review = i % review_every == 0
        labels.append(LabelRecord(request_id=rid, diagnosis=row.diagnosis,
                                  source="review" if review else "histopathology",
                                  labelled_by="derm" if review else "lab",
                                  ts=start + timedelta(hours=i, minutes=30)))
        names.append(f"prod-{sha[:16]}")
    store.log_predictions(predictions)
    store.add_labels(labels)
    return names


def lifecycle_home(root: Path, synthetic_dir: Path) -> dict:
    """A home with the base version active and 24 labelled production answers (images kept)."""
    models_dir, cache_dir = root / "models", root / "cache"
    card = train_base(synthetic_dir, models_dir, cache_dir)
    store = Store(root / "db.duckdb")
    store.set_route(ServingRoute(active_version=card.id), actor="setup", role="ml_lead",
                    reason="initial")
    names = log_production(store, root / "production")
    return {"store": store, "models_dir": models_dir, "cache_dir": cache_dir, "base": card,
            "production": names}


@pytest.fixture(scope="session")
def lifecycle_template(tmp_path_factory: pytest.TempPathFactory, synthetic_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("lifecycle")
    lifecycle_home(root, synthetic_dir)
    return root


@pytest.fixture
def lifecycle(lifecycle_template: Path, tmp_path: Path) -> dict:
    """A fresh copy of the lifecycle home (see :func:`lifecycle_home`): ``store``, ``models_dir``,
    ``cache_dir``, ``base`` (its card) and ``production`` (image names, oldest first)."""
    root = tmp_path / "home"
    shutil.copytree(lifecycle_template, root)
    store = Store(root / "db.duckdb")
    return {"root": root, "store": store, "models_dir": root / "models",
            "cache_dir": root / "cache", "base": read_card(root / "models" / "base"),
            "production": [f"prod-{sha[:16]}" for sha in
                           store.retained_labelled_cases()["image_sha256"]]}
