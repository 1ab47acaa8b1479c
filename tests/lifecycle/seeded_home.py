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


def log_copies(store: Store, rows: list[tuple[Path, str, str, float, str]], folder: Path, *,
               start: datetime, model_version: str = "base") -> None:
    """Log and label answers for the images ``rows`` (path, diagnosis, sex, age, site), copied
    into the retention ``folder`` under their hash, one hour apart from ``start``."""
    folder.mkdir(parents=True, exist_ok=True)
    predictions, labels = [], []
    for i, (path, diagnosis, sex, age, site) in enumerate(rows):
        sha = file_sha256(path)
        kept = folder / f"{sha}.jpg"
        shutil.copyfile(path, kept)
        rid = str(uuid.uuid4())
        probs = dict.fromkeys(CLASSES, 0.5 / (len(CLASSES) - 1)) | {"NV": 0.5}
        predictions.append(PredictionRecord(
            request_id=rid, ts=start + timedelta(hours=i), source="api", model_version=model_version,
            age_approx=None if np.isnan(age) else age, sex=sex, anatom_site_general=site,
            image_sha256=sha, **image_stats(load_image(kept)), probabilities=probs,
            p_malignant=0.5 / 7 * 4, predicted_class="NV", decision="no referral", threshold=0.5,
            latency_ms=30.0, device="cpu", image_path=str(kept)))
        labels.append(LabelRecord(request_id=rid, diagnosis=diagnosis, source="histopathology",
                                  labelled_by="lab", ts=start + timedelta(hours=i, minutes=30)))
    store.log_predictions(predictions)
    store.add_labels(labels)


def demo_like_home(root: Path, synthetic_dir: Path) -> dict:
    """A home like the embedded demo's: the base version's training data is gone from this
    machine (its card names a folder that no longer exists, as the shipped reference's names a
    dataset that is not shipped), and its traffic (images kept, labelled) is the base's own
    test-split images, then 40 new images, then device-shifted copies of 8 of the new ones (the
    incident: the same lesions through another camera), newest last."""
    from skinlesion.demo import device_shift

    data = root / "dataset"
    shutil.copytree(synthetic_dir, data)
    models_dir, cache_dir = root / "models", root / "cache"
    card = train_base(data, models_dir, cache_dir)
    store = Store(root / "data" / "skinlesion.duckdb")
    store.set_route(ServingRoute(active_version=card.id), actor="setup", role="ml_lead",
                    reason="initial")
    df = read_dataset(data)
    split = split_dataset(df, seed=0)
    fresh = read_dataset(write_synthetic_dataset(root / "new", n=40, seed=5, width=96))
    shifted = root / "shifted"
    shifted.mkdir()
    copies = fresh.iloc[::5].copy()
    for row in copies.itertuples():
        device_shift(load_image(row.path), 0.4 + 0.6 * row.Index / len(fresh)).save(
            shifted / Path(row.path).name, quality=88)
    copies["path"] = [str(shifted / Path(p).name) for p in copies["path"]]
    start = datetime.now(UTC) - timedelta(days=10)
    for i, frame in enumerate((df[split == "test"], fresh, copies)):
        log_copies(store, [(Path(r.path), r.diagnosis, r.sex, r.age_approx, r.anatom_site_general)
                           for r in frame.itertuples()], root / "data" / "images",
                   start=start + timedelta(days=3 * i))
    shutil.rmtree(data)
    return {"store": store, "models_dir": models_dir, "cache_dir": cache_dir, "base": card,
            "n_test": int((split == "test").sum()), "n_cases": int((split == "test").sum()) + 48,
            "copies": list(zip(fresh["path"].iloc[::5].map(file_sha256),
                               copies["path"].map(file_sha256), strict=True))}


@pytest.fixture(scope="session")
def demo_like_template(tmp_path_factory: pytest.TempPathFactory, synthetic_dir: Path
                       ) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("demo_like")
    return root, demo_like_home(root, synthetic_dir)


@pytest.fixture
def demo_like(demo_like_template: tuple[Path, dict], tmp_path: Path) -> dict:
    """A fresh copy of :func:`demo_like_home` as a home (``root``; ``store``, ``models_dir``,
    ``cache_dir``, ``base``), with ``n_cases`` labelled kept cases (their files stay in the
    template), ``n_test`` of them the base's test-split images, and ``copies``: (original,
    device-shifted copy) image hashes."""
    template, info = demo_like_template
    root = tmp_path / "home"
    shutil.copytree(template, root)
    return {**info, "root": root, "store": Store(root / "data" / "skinlesion.duckdb"),
            "models_dir": root / "models", "cache_dir": root / "cache",
            "base": read_card(root / "models" / "base")}
