"""Monitoring validation: replay labelled images through the real Predictor and store, and see
whether the monitor tells healthy traffic from shifted traffic.

:func:`validate_monitoring` takes a labelled image folder (ISIC 2019 or HAM10000 layout) and a model
version, and for each :class:`Scenario`:

1. answers every image of the version's own **test split** (from its manifest: images it neither
   trained nor was calibrated on) through :class:`~skinlesion.predict.Predictor`, after the
   scenario's image transform (an acquisition shift), once: the answers are cached per version,
   transform, logged columns and OOD gate (:func:`answer_images`), so a rerun costs no model time;
2. replays them as traffic: ``windows`` days of ``per_window`` answers each (seeded; images drawn
   with the scenario's weights: a population or prevalence shift), logged in a fresh store;
3. runs the monitor (:func:`~skinlesion.monitoring.runner.run_once`, the 24 h window) at the end of
   each day, before any label has arrived; then the labels arrive and each window's realised
   metrics are computed, to score the estimates and their bands.

Per scenario it reports how often drift was red / yellow, how often any quality tile was red
beyond the version's own validation level (false alarms where nothing changed), the detection rate
and delay, which features were named and whether they match the shift, the estimates' error and
band coverage, how often the estimates were flagged unreliable, and the OOD share; plus the OOD
gate's flag rate on the test split, on synthetic images and on strongly shifted images. Results
go to ``bench/monitoring_validation.json`` (``make bench``) or where the command says.

A version registered before the gate and the reference's lesion ids existed (the shipped
reference) is validated on a working copy that adds them as registration now would
(:func:`prepare_version`): the gate from the training split's embeddings, the lesion ids from the
manifest. The version's own folder is never changed.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import shutil
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance, ImageFilter
from tqdm.auto import tqdm

from skinlesion import registry
from skinlesion.data.images import load_image
from skinlesion.data.readers import read_dataset
from skinlesion.data.synthetic import render_lesion
from skinlesion.errors import DataError
from skinlesion.model.ood import OODGate, fit_ood_gate
from skinlesion.monitoring.estimate import ESTIMATED_METRICS
from skinlesion.monitoring.health import DRIFT_METRIC, label_metrics
from skinlesion.monitoring.ood_share import OOD_METRIC, version_gate
from skinlesion.monitoring.policy import Policy
from skinlesion.monitoring.runner import run_once
from skinlesion.predict import Predictor
from skinlesion.records import PREDICTION_COLUMNS, ServingRoute
from skinlesion.register import OOD_TRAIN_IMAGES, embed_images
from skinlesion.schema import CLASSES, Metadata
from skinlesion.serving import prediction_record
from skinlesion.store import LabelRecord, Store
from skinlesion.thresholds import Status

Kind = Literal["none", "acquisition", "population", "prevalence"]
Transform = Callable[[Image.Image], Image.Image]
Weights = Callable[[pd.DataFrame], np.ndarray]

#: The metrics whose estimates are scored against the realised values.
SCORED_METRICS = ("accuracy", "precision", "recall", "specificity", "auroc", "log_loss")
#: Test images replayed untransformed (None: the whole split, as the README's numbers), and per
#: acquisition transform (None: the same images; a number: a seeded subset inside them, cheaper
#: but with the subset's own metadata mix, which drift then rightly reports as a population shift
#: on top of the acquisition one): every image costs a forward pass per test-time view.
TEST_IMAGES: int | None = None
ACQUISITION_IMAGES: int | None = None
#: Images per strongly shifted transform and synthetic images, for the OOD gate's check.
OOD_CHECK_IMAGES = 100
#: Training images whose embeddings fit the gate of a version registered without one (of the
#: current form), as many as registration takes.
GATE_TRAIN_IMAGES = OOD_TRAIN_IMAGES
START = datetime(2026, 1, 5, tzinfo=UTC)


# --- image transforms ---------------------------------------------------------------------------------


def colour_cast(red: float, blue: float) -> Transform:
    """A white-balance error: the red channel times ``red``, the blue one times ``blue``."""
    def apply(image: Image.Image) -> Image.Image:
        r, g, b = image.convert("RGB").split()
        return Image.merge("RGB", (r.point(lambda v: min(255, round(v * red))), g,
                                   b.point(lambda v: min(255, round(v * blue)))))
    return apply


def blur(radius: float) -> Transform:
    """Out of focus: a Gaussian blur of ``radius`` pixels."""
    return lambda image: image.filter(ImageFilter.GaussianBlur(radius))


def upsample(factor: float) -> Transform:
    """Another camera's resolution: the image resized (bicubic) by ``factor``."""
    return lambda image: image.resize((round(image.width * factor), round(image.height * factor)),
                                      Image.Resampling.BICUBIC)


def jpeg(quality: int) -> Transform:
    """Heavier compression: the image re-encoded as JPEG at ``quality``."""
    def apply(image: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=quality)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return apply


def dim(factor: float) -> Transform:
    """Under-exposure: brightness times ``factor``."""
    return lambda image: ImageEnhance.Brightness(image).enhance(factor)


# --- sampling weights ---------------------------------------------------------------------------------


def older_patients(years_per_e: float) -> Weights:
    """Weights ``exp(age / years_per_e)``: the older a patient, the likelier (missing age: median)."""
    def weights(df: pd.DataFrame) -> np.ndarray:
        age = df["age_approx"].astype(float)
        return np.exp(age.fillna(age.median()).to_numpy() / years_per_e)
    return weights


def site_mix(site: str, factor: float) -> Weights:
    """Lesions on ``site`` ``factor`` times as likely as elsewhere."""
    return lambda df: np.where(df["anatom_site_general"] == site, factor, 1.0)


def malignant_prevalence(factor: float, malignant: Sequence[str]) -> Weights:
    """Malignant lesions ``factor`` times as likely."""
    return lambda df: np.where(df["diagnosis"].isin(list(malignant)), factor, 1.0)


@dataclass(frozen=True)
class Scenario:
    """A replayed traffic: ``kind`` of shift, its ``size`` in words, the features a monitor should
    name (``expected``; empty for healthy traffic), an image ``transform`` (cached under
    ``transform_key``) and sampling ``weights``."""

    name: str
    kind: Kind
    size: str
    expected: tuple[str, ...] = ()
    transform_key: str = "identity"
    transform: Transform | None = None
    weights: Weights | None = None


def default_scenarios(malignant: Sequence[str]) -> tuple[Scenario, ...]:
    """In-distribution traffic and the named shifts, each of a size a clinic would care about; JPEG,
    site mix and prevalence at two or three sizes each, to state which size the monitor detects."""
    return (
        Scenario("in-distribution", "none", "the version's own test split, uniformly"),
        Scenario("colour cast", "acquisition", "red x1.10, blue x0.90 (white balance)",
                 ("mean_r", "mean_b", "saturation", "brightness", "embedding"), "cast-1.10-0.90",
                 colour_cast(1.10, 0.90)),
        Scenario("blur", "acquisition", "Gaussian blur, radius 1.5 px at 200x150",
                 ("sharpness", "contrast", "embedding"), "blur-1.5", blur(1.5)),
        Scenario("resolution", "acquisition", "3x upsampled (600x450, bicubic)",
                 ("width", "height", "sharpness"), "upsample-3", upsample(3.0)),
        Scenario("jpeg", "acquisition", "re-encoded at JPEG quality 20",
                 ("sharpness", "contrast", "embedding"), "jpeg-20", jpeg(20)),
        Scenario("jpeg 10", "acquisition", "re-encoded at JPEG quality 10",
                 ("sharpness", "contrast", "embedding"), "jpeg-10", jpeg(10)),
        Scenario("older patients", "population", "sampling weight exp(age / 12.5 years)",
                 ("age_approx",), weights=older_patients(12.5)),
        Scenario("site mix", "population", "head/neck lesions x5",
                 ("anatom_site_general",), weights=site_mix("head/neck", 5.0)),
        Scenario("site mix x10", "population", "head/neck lesions x10",
                 ("anatom_site_general",), weights=site_mix("head/neck", 10.0)),
        Scenario("prevalence", "prevalence", "malignant lesions x2",
                 ("p_malignant", "predicted_class"), weights=malignant_prevalence(2.0, malignant)),
        Scenario("prevalence x3", "prevalence", "malignant lesions x3",
                 ("p_malignant", "predicted_class"), weights=malignant_prevalence(3.0, malignant)),
        Scenario("prevalence x6", "prevalence", "malignant lesions x6",
                 ("p_malignant", "predicted_class"), weights=malignant_prevalence(6.0, malignant)),
    )


#: Strong shifts for the OOD gate's check (images a clinic must not trust the answer on).
STRONG_SHIFTS: dict[str, Transform] = {
    "cast-1.5-0.5": colour_cast(1.5, 0.5), "blur-6": blur(6.0), "dim-0.4": dim(0.4),
    "jpeg-3": jpeg(3)}


# --- answering images once ----------------------------------------------------------------------------


def _metadata(row: pd.Series) -> Metadata:
    age = row["age_approx"]
    return Metadata.from_raw(None if pd.isna(age) else age, row["sex"], row["anatom_site_general"])


#: Card keys that decide what a version answers: the network and its preprocessing, the
#: calibration, the threshold and the diagnosis rule (documentation keys may be edited freely).
_ANSWER_KEYS = ("model", "classes", "malignant", "threshold", "calibration", "diagnosis_rule")


def version_fingerprint(folder: Path) -> str:
    """What a version answers with, as 12 hex digits: its weights and the card keys that decide
    its answers (:data:`_ANSWER_KEYS`): a recalibration, a new threshold or retrained weights
    change it, an edited note does not; the working copy of a version shares its fingerprint."""
    card = json.loads((folder / registry.CARD_FILE).read_text())
    digest = hashlib.sha256(json.dumps({k: card.get(k) for k in _ANSWER_KEYS}, sort_keys=True).encode())
    for weights in sorted(folder.glob("*.pt")):
        digest.update(weights.read_bytes())
    return digest.hexdigest()[:12]


def answers_tag(folder: Path) -> str:
    """What a cached answer row holds beyond the version's answers, as 8 hex digits: the logged
    columns (:data:`~skinlesion.records.PREDICTION_COLUMNS`: a cache written before a column
    existed is not reused without it) and the version's OOD gate (``ood`` in its card: the
    texture distance each answer carries is measured by it)."""
    card = json.loads((folder / registry.CARD_FILE).read_text())
    what = {"columns": list(PREDICTION_COLUMNS), "ood": card.get("ood")}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:8]


def _cache_file(cache_dir: Path, version: registry.ModelVersion, transform_key: str) -> Path:
    return cache_dir / f"{transform_key}-{version_fingerprint(version.path)}-{answers_tag(version.path)}.parquet"


def answer_images(predictor: Predictor, rows: pd.DataFrame, transform_key: str,
                  transform: Transform | None, cache_dir: Path, *, batch_size: int = 32,
                  progress: bool = True) -> pd.DataFrame:
    """The Predictor's answer to each image of ``rows`` (dataset rows: path, metadata, diagnosis)
    after ``transform``, as predictions-table rows plus ``image``, ``lesion_id`` and
    ``diagnosis``, in the order of ``rows``. Answers are cached per version, transform, logged
    columns and OOD gate (:func:`answers_tag`) in ``cache_dir``: only images not answered before
    cost model time."""
    path = _cache_file(cache_dir, predictor.version, transform_key)
    cached = pd.read_parquet(path) if path.is_file() else pd.DataFrame(columns=["image"])
    todo = rows[~rows["image"].isin(set(cached["image"]))]
    out: list[dict[str, Any]] = []
    with tqdm(total=len(todo), desc=f"answering ({transform_key})", unit="img", file=sys.stderr,
              disable=not progress or todo.empty) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo.iloc[start:start + batch_size]
            images = [load_image(p) for p in batch["path"]]
            if transform is not None:
                images = [transform(image) for image in images]
            metadata = [_metadata(row) for _, row in batch.iterrows()]
            for answer, meta, (_, row) in zip(predictor.predict_batch(images, metadata), metadata,
                                              batch.iterrows(), strict=True):
                record = prediction_record(answer, source="batch", metadata=meta).to_row()
                out.append({**record, "image": row["image"], "lesion_id": str(row["lesion_id"]),
                            "diagnosis": row["diagnosis"]})
            bar.update(len(batch))
            if len(out) >= 4 * batch_size or start + batch_size >= len(todo):  # keep what is done
                cached = pd.concat([cached, pd.DataFrame(out)], ignore_index=True) if len(cached) else pd.DataFrame(out)
                out = []
                cache_dir.mkdir(parents=True, exist_ok=True)
                cached.to_parquet(path, index=False)
    return cached.set_index("image").loc[rows["image"]].reset_index()


# --- the version under test ---------------------------------------------------------------------------


def _split_rows(data: pd.DataFrame, manifest: pd.DataFrame, split: str) -> pd.DataFrame:
    names = manifest.loc[manifest["split"] == split, "image"]
    rows = data.set_index("image").reindex(names)
    missing = rows["path"].isna()
    if missing.any():
        raise DataError(f"{int(missing.sum())} {split} images of the version are not in the data "
                        f"folder (first: {names[missing.to_numpy()].iloc[0]}); pass the folder it was "
                        "trained on", field="data")
    return rows.reset_index()


def _has_gate(card: registry.ModelCard) -> bool:
    """Whether the card holds an OOD gate of the current form (the embedding's direction, the image
    statistics jointly and one by one)."""
    gate = (card.model_extra or {}).get("ood") or {}
    return gate.get("embedding_form") == "direction" and bool(gate.get("extremes"))


def prepare_version(models_dir: Path, version: str, data: pd.DataFrame, work_dir: Path, *,
                    progress: bool = True, seed: int = 0) -> tuple[Path, str]:
    """The models folder and id to validate: ``models_dir`` itself when the version has its OOD
    gate and lesion ids in its reference; else a working copy of the version under ``work_dir``
    with them added as registration now would (gate fitted on the monitoring embeddings of up to
    :data:`GATE_TRAIN_IMAGES` training images, lesion ids from the manifest's validation rows)."""
    loaded = registry.load_version(version, models_dir, device="cpu")
    reference = registry.read_reference(models_dir, loaded.id)
    if reference is None:
        raise DataError(f"version {loaded.id!r} has no reference answers: nothing to monitor against",
                        source="reference")
    if _has_gate(loaded.card) and "lesion_id" in reference.columns:
        return Path(models_dir), loaded.id
    copy_dir = work_dir / "models"
    target = copy_dir / loaded.id
    if ((target / registry.CARD_FILE).is_file() and _has_gate(registry.read_card(target))
            and version_fingerprint(target) == version_fingerprint(loaded.path)):
        return copy_dir, loaded.id
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(loaded.path, target)
    manifest = registry.read_manifest(models_dir, loaded.id)
    val = manifest[manifest["split"] == "val"].reset_index(drop=True)
    if len(val) != len(reference) or list(val["diagnosis"]) != list(reference["diagnosis"]):
        raise DataError("the reference answers do not follow the manifest's validation rows; "
                        "re-register the version", source="reference")
    reference["image"], reference["lesion_id"] = val["image"].to_numpy(), val["lesion_id"].to_numpy()
    reference.to_parquet(target / registry.REFERENCE_FILE, index=False)
    train = _split_rows(data, manifest, "train")
    train = train.sample(n=min(GATE_TRAIN_IMAGES, len(train)), random_state=seed)
    embeddings, stats = embed_images(train["path"], loaded.classifier.monitoring_embed, progress=progress)
    gate = fit_ood_gate(embeddings, stats, np.stack(reference["embedding"].to_list()), reference)
    card = json.loads((target / registry.CARD_FILE).read_text())
    card["ood"] = gate.as_dict()
    card.setdefault("notes", None)
    (target / registry.CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    return copy_dir, loaded.id


# --- replaying a scenario -----------------------------------------------------------------------------


def scenario_probabilities(pool: pd.DataFrame, scenario: Scenario) -> np.ndarray:
    """Each pool row's probability of being drawn under ``scenario``."""
    weights = scenario.weights(pool) if scenario.weights is not None else np.ones(len(pool))
    return weights / weights.sum()


def traffic_days(pool: pd.DataFrame, scenario: Scenario, *, windows: int, per_window: int,
                 seed: int) -> list[pd.DataFrame]:
    """``windows`` days of ``per_window`` answers drawn from ``pool``, each with a fresh request id
    and a time in its day. Uniform traffic from a pool at least a window large is drawn without
    replacement (a window drawn so from a random pool varies as one drawn from the population
    would); weighted traffic, or a window larger than the pool, with replacement (the pool stands
    for the population, so a weighted shift keeps its full size)."""
    rng = np.random.default_rng(seed)
    p = scenario_probabilities(pool, scenario)
    replace = scenario.weights is not None or per_window > len(pool)
    days = []
    for day in range(windows):
        n = per_window
        rows = pool.iloc[rng.choice(len(pool), size=n, replace=replace, p=p)].copy()
        offsets = np.sort(rng.uniform(60, 86_340, n))
        rows["ts"] = [START + timedelta(days=day, seconds=float(s)) for s in offsets]
        rows["request_id"] = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"{scenario.name}/{seed}/{day}/{i}"))
                              for i in range(n)]
        days.append(rows.reset_index(drop=True))
    return days


@dataclass
class WindowOutcome:
    """What the monitor said about one day's window, and what the labels later showed."""

    day: int
    status: str
    drift_status: str
    drift_score: float | None
    drifted: tuple[str, ...]
    ood_share: float | None
    ood_status: str
    quality_red: tuple[str, ...]
    estimates: dict[str, dict[str, Any]] = field(default_factory=dict)


def _window_outcome(day: int, result: Any, realised: dict[str, float], val_status: dict[str, str]) -> WindowOutcome:
    metrics = result.report.metrics
    drift = metrics[DRIFT_METRIC]
    ood = metrics.get(OOD_METRIC)
    quality_red = tuple(name for name, m in metrics.items()
                        if name in ESTIMATED_METRICS and m.effective_status is Status.RED
                        and val_status.get(name) != Status.RED.value)
    estimates = {}
    for name in SCORED_METRICS:
        m = metrics[name]
        value = realised.get(name)
        low, high = m.estimated_low, m.estimated_high
        estimates[name] = {
            "estimated": m.estimated, "low": low, "high": high, "realised": value,
            "unreliable": m.estimate_unreliable,
            "covered": None if value is None or low is None or high is None or math.isnan(value)
            else bool(low <= value <= high)}
    return WindowOutcome(day=day, status=result.report.status.value, drift_status=drift.status.value,
                         drift_score=drift.value, drifted=result.report.drifted_features,
                         ood_share=ood.value if ood else None,
                         ood_status=ood.status.value if ood else Status.UNKNOWN.value,
                         quality_red=quality_red, estimates=estimates)


def replay_scenario(scenario: Scenario, pool: pd.DataFrame, models_dir: Path, version: str,
                    policy: Policy, work_dir: Path, *, windows: int, per_window: int, seed: int,
                    malignant: tuple[str, ...], val_status: dict[str, str]) -> list[WindowOutcome]:
    """Log ``scenario``'s traffic in a fresh store under ``work_dir``, run the monitor at the end of
    each day, then score each window against its labels."""
    db = work_dir / f"replay-{scenario.transform_key}-{hashlib.sha1(scenario.name.encode()).hexdigest()[:8]}.duckdb"
    for stale in work_dir.glob(db.name + "*"):
        stale.unlink()
    store = Store(db)
    try:
        store.set_route(ServingRoute(active_version=version), actor="monitoring-validation", role="admin",
                        reason=f"replay: {scenario.name}")
        days = traffic_days(pool, scenario, windows=windows, per_window=per_window, seed=seed)
        outcomes = []
        for day, rows in enumerate(days):
            store.bulk_load(rows.drop(columns=["image", "lesion_id", "diagnosis"]))
            result = run_once(store, models_dir, policy, now=START + timedelta(days=day + 1), window="24h")
            labelled = rows.assign(threshold=rows["threshold"].astype(float))
            realised = label_metrics(labelled, malignant)
            outcomes.append(_window_outcome(day, result, realised, val_status))
        store.add_labels(LabelRecord(request_id=r, diagnosis=d, source="histopathology",
                                     labelled_by="monitoring-validation", ts=t + timedelta(days=7))
                         for r, d, t in zip(days[-1]["request_id"], days[-1]["diagnosis"], days[-1]["ts"],
                                            strict=True))
    finally:
        store.release()
    return outcomes


# --- summaries ----------------------------------------------------------------------------------------


def _share(values: Sequence[bool]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def summarise(scenario: Scenario, outcomes: Sequence[WindowOutcome], pool: pd.DataFrame) -> dict[str, Any]:
    """Per scenario: rates of red / yellow drift, red reports and red quality tiles, detection
    delay (hours from the shift's start to the end of the first window with drift red), the
    features named, whether they match the shift, estimate error and band coverage."""
    n = len(outcomes)
    red = [o.drift_status == "red" for o in outcomes]
    first_red = next((o.day for o in outcomes if o.drift_status == "red"), None)
    named: dict[str, int] = {}
    for o in outcomes:
        for f in o.drifted:
            named[f] = named.get(f, 0) + 1
    matching = [bool(set(o.drifted) & set(scenario.expected)) for o in outcomes if o.drift_status == "red"]
    estimates: dict[str, Any] = {}
    for name in SCORED_METRICS:
        rows = [o.estimates[name] for o in outcomes]
        errors = [r["estimated"] - r["realised"] for r in rows
                  if r["estimated"] is not None and r["realised"] is not None and not math.isnan(r["realised"])]
        covered = [r["covered"] for r in rows if r["covered"] is not None]
        estimates[name] = {"mean_abs_error": float(np.mean(np.abs(errors))) if errors else None,
                           "mean_error": float(np.mean(errors)) if errors else None,
                           "band_coverage": _share(covered),
                           "unreliable_share": _share([bool(r["unreliable"]) for r in rows])}
    ood = [o.ood_share for o in outcomes if o.ood_share is not None]
    return {
        "scenario": scenario.name, "kind": scenario.kind, "size": scenario.size,
        "expected_features": list(scenario.expected), "windows": n,
        "drift_red_rate": _share(red), "drift_yellow_rate": _share([o.drift_status == "yellow" for o in outcomes]),
        "drift_not_judged_rate": _share([o.drift_status == "unknown" for o in outcomes]),
        "report_red_rate": _share([o.status == "red" for o in outcomes]),
        "quality_red_rate": _share([bool(o.quality_red) for o in outcomes]),
        "quality_red_metrics": sorted({m for o in outcomes for m in o.quality_red}),
        "detection_delay_hours": None if first_red is None else 24.0 * (first_red + 1),
        "features_named": dict(sorted(named.items(), key=lambda kv: -kv[1])),
        "named_match_rate": _share(matching),
        "ood_share_mean": float(np.mean(ood)) if ood else None,
        "ood_red_rate": _share([o.ood_status == "red" for o in outcomes]),
        "estimates": estimates,
    }


# --- the OOD gate's own check -------------------------------------------------------------------------


def gate_check(predictor: Predictor, gate: OODGate, test: pd.DataFrame, cache_dir: Path, *,
               seed: int, progress: bool = True) -> dict[str, Any]:
    """Share of images the gate flags: the replayed test images (answered already), synthetic
    lesions (:mod:`skinlesion.data.synthetic`, answered by the Predictor without metadata) and
    :data:`STRONG_SHIFTS` of the first :data:`OOD_CHECK_IMAGES` of them (``test`` comes
    shuffled)."""
    answered = answer_images(predictor, test, "identity", None, cache_dir, progress=progress)
    out: dict[str, Any] = {"test_split": _flagged(gate, answered)}
    subset = test.iloc[:OOD_CHECK_IMAGES]
    for key, transform in STRONG_SHIFTS.items():
        out[key] = _flagged(gate, answer_images(predictor, subset, key, transform, cache_dir, progress=progress))
    rng = np.random.default_rng(seed)
    images = [render_lesion(str(c), rng) for c in rng.choice(CLASSES, size=OOD_CHECK_IMAGES)]
    answers = predictor.predict_batch(images, [Metadata() for _ in images])
    out["synthetic"] = _flagged(gate, pd.DataFrame([{**a.image_stats, "embedding": a.embedding,
                                                     "texture_distance": a.texture_distance} for a in answers]))
    return out


def _flagged(gate: OODGate, answers: pd.DataFrame) -> dict[str, Any]:
    """How many of ``answers`` (embedding, image statistics and logged texture distance) the gate
    flags, in all and by check (the texture check: none without one)."""
    by_embedding, by_stats = gate.flags_by_check(np.stack(answers["embedding"].to_list()), answers)
    by_texture = gate.texture_flags(answers["texture_distance"])
    return {"images": len(answers), "flagged": float((by_embedding | by_stats | by_texture).mean()),
            "by_embedding": float(by_embedding.mean()), "by_statistics": float(by_stats.mean()),
            "by_texture": float(by_texture.mean()) if gate.texture_bound is not None else None}


# --- everything ---------------------------------------------------------------------------------------


def replay_pools(test: pd.DataFrame, *, seed: int, test_images: int | None,
                 acquisition_images: int | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The test images replayed untransformed (the first ``test_images`` of a seeded shuffle of
    the split) and those replayed under each acquisition transform (the first
    ``acquisition_images`` of them)."""
    shuffled = test.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    pool = shuffled.iloc[:test_images] if test_images is not None else shuffled
    return pool, pool.iloc[:acquisition_images]


def validate_monitoring(data_dir: Path, models_dir: Path, work_dir: Path, *, version: str = "reference",
                        policy: Policy, windows: int = 30, per_window: int = 300, seed: int = 0,
                        scenarios: Sequence[str] | None = None, test_images: int | None = TEST_IMAGES,
                        acquisition_images: int | None = ACQUISITION_IMAGES,
                        progress: bool = True) -> dict[str, Any]:
    """Replay every scenario (or those named) and check the OOD gate; the results as a dict (see
    the module docstring). ``work_dir`` keeps the answer cache and the replay stores."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    data = read_dataset(data_dir)
    models, vid = prepare_version(Path(models_dir), version, data, work_dir, progress=progress, seed=seed)
    predictor = Predictor.from_registry(vid, models, device="cpu")
    card = predictor.version.card
    malignant = tuple(card.malignant)
    manifest = registry.read_manifest(models, vid)
    test = _split_rows(data, manifest, "test")
    cache_dir = work_dir / "answers" / vid
    chosen = [s for s in default_scenarios(malignant) if scenarios is None or s.name in scenarios]
    unknown = set(scenarios or ()) - {s.name for s in default_scenarios(malignant)}
    if unknown:
        raise ValueError(f"unknown scenarios {sorted(unknown)}; known: "
                         f"{', '.join(s.name for s in default_scenarios(malignant))}")
    val_metrics = card.metrics.get("val", {})
    val_status = {name: policy.status(name, val_metrics.get(name)).value for name in ESTIMATED_METRICS}
    test, acquisition_rows = replay_pools(test, seed=seed, test_images=test_images,
                                          acquisition_images=acquisition_images)
    results = []
    for scenario in chosen:
        rows = test if scenario.transform is None else acquisition_rows
        pool = answer_images(predictor, rows, scenario.transform_key, scenario.transform, cache_dir,
                             progress=progress)
        outcomes = replay_scenario(scenario, pool, models, vid, policy, work_dir, windows=windows,
                                   per_window=per_window, seed=seed, malignant=malignant,
                                   val_status=val_status)
        summary = summarise(scenario, outcomes, pool)
        summary["traffic"] = _traffic_summary(pool, scenario, malignant)
        results.append(summary)
    gate = version_gate(models, vid)
    return {"version": vid, "created": card.created, "data": str(data_dir), "windows": windows,
            "per_window": per_window, "seed": seed, "test_images": len(test),
            "acquisition_images": len(acquisition_rows),
            "validation_status": val_status, "scenarios": results,
            "ood_gate": gate_check(predictor, gate, test, cache_dir, seed=seed, progress=progress)}


def _traffic_summary(pool: pd.DataFrame, scenario: Scenario, malignant: tuple[str, ...]) -> dict[str, float]:
    """What the scenario's traffic looks like on average (the shift's realised size)."""
    p = scenario_probabilities(pool, scenario)
    return {"mean_age": round(float(np.nansum(p * pool["age_approx"].to_numpy(dtype=float))
                                     / p[pool["age_approx"].notna().to_numpy()].sum()), 1),
            "head_neck_share": round(float(p[(pool["anatom_site_general"] == "head/neck").to_numpy()].sum()), 3),
            "malignant_share": round(float(p[pool["diagnosis"].isin(list(malignant)).to_numpy()].sum()), 3)}


# --- reporting ----------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def results_table(results: dict[str, Any]) -> str:
    """The README's tables of a :func:`validate_monitoring` result (Markdown): per scenario the
    drift verdicts, detection, features named, estimate error and band coverage; then the OOD
    gate's flag rates."""
    lines = ["| scenario | size | drift red | drift yellow | quality tile red* | delay | features named "
             "(windows) | recall est. error | band covers acc / prec / rec / spec / AUROC / log loss "
             "| estimate unreliable | OOD share |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in results["scenarios"]:
        est = s["estimates"]
        named = ", ".join(f"{k} ({v})" for k, v in list(s["features_named"].items())[:5]) or "–"
        delay = "–" if s["detection_delay_hours"] is None else f"{s['detection_delay_hours']:.0f} h"
        error = est["recall"]["mean_error"]
        ood = "–" if s["ood_share_mean"] is None else f"{100 * s['ood_share_mean']:.1f}%"
        covers = " / ".join(_pct(est[m]["band_coverage"]) for m in SCORED_METRICS)
        lines.append(
            f"| {s['scenario']} | {s['size']} | {_pct(s['drift_red_rate'])} | {_pct(s['drift_yellow_rate'])} "
            f"| {_pct(s['quality_red_rate'])} | {delay} | {named} "
            f"| {'–' if error is None else f'{error:+.3f}'} | {covers} "
            f"| {_pct(est['recall']['unreliable_share'])} | {ood} |")
    gate = results["ood_gate"]
    lines += ["", "| OOD gate: images | flagged | by the embedding | by the image statistics | by the texture |",
              "|---|---|---|---|---|"]
    lines += [f"| {name} ({v['images']}) | {_pct(v['flagged'])} | {_pct(v['by_embedding'])} "
              f"| {_pct(v['by_statistics'])} | {_pct(v.get('by_texture'))} |" for name, v in gate.items()]
    return "\n".join(lines)
