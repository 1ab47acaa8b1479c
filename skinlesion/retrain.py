"""Retraining a model version: its training data, the candidate, and the champion/challenger gate.

A retrain of the version ``base`` (the active model when the job was launched) trains on

- the base's **original data**: the dataset folder its card names (``retraining.data_dir`` of a
  retrained version, else ``data.name`` when that is a folder, else the folder given), with the
  train/val/test split its manifest records, so the original test split stays unseen;
- the **labelled production cases**: answers whose image was kept (``Settings.retain_images``) and
  that have a label (late ground truth, or a dermatologist's diagnosis from the review queue — the
  active-learning cases), one row per image with its latest label. Images already in the original
  data are left out. Cases the base trained on stay in training; of the others, the newest
  ``holdout_share`` (by answer time) is held out: unseen by both models, it is the **recent
  hold-out** of the gate; the rest join the training split.

The candidate is fitted with :func:`skinlesion.train.fit` (the base's recipe, with the policy's
mode and epochs) and registered with :func:`skinlesion.register.register`: its manifest and
fingerprint record the data (production images are named ``prod-<first 16 hex of their hash>``),
so :func:`skinlesion.registry.diff_manifests` names the images two versions differ by. It is a
candidate only: nothing here changes the serving route.

The gate (:func:`compare`) scores candidate and base side by side on the recent hold-out and on the
original test split, each at its own operating threshold, with a paired, stratified bootstrap
confidence interval for the difference in AUROC and sensitivity. The report goes into the
candidate's card (``gate``) and the job's result, for the Models page.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy.stats import rankdata

from skinlesion import metrics
from skinlesion.errors import DataError, SkinLesionError
from skinlesion.monitoring.policy import RetrainingPolicy
from skinlesion.registry import (ModelCard, build_manifest, data_fingerprint, new_version_id,
                                 read_card, read_manifest, resolve_version)
from skinlesion.schema import CLASSES, DEFAULT_MALIGNANT, METADATA_FIELDS, class_index, malignant_mask
from skinlesion.store import Store

#: name prefix of production images in a version's manifest
PRODUCTION_PREFIX = "prod-"
HOLDOUT = "recent hold-out"
ORIGINAL_TEST = "original test"
#: metrics shown side by side in the gate (the card's headline metrics)
GATE_METRICS: tuple[str, ...] = ("auroc", "recall", "specificity", "precision", "balanced_accuracy",
                                 "log_loss", "ece")
#: metrics whose candidate-minus-active difference gets a bootstrap confidence interval
GATE_DIFFERENCES: tuple[str, ...] = ("auroc", "recall")
#: the review queue's label source (skinlesion.monitoring.review.REVIEW_SOURCE)
REVIEW_SOURCE = "review"


class RetrainSpec(BaseModel):
    """What a retraining job is asked to do (stored as the job's config)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_version: str
    models_dir: str
    cache_dir: str
    #: the base's original dataset folder; None = the folder its card names
    data_dir: str | None = None
    mode: Literal["head", "finetune"] = "head"
    epochs: int = Field(30, ge=1)
    holdout_share: float = Field(0.3, ge=0.0, lt=1.0)
    include_review_queue: bool = True
    bootstrap_resamples: int = Field(1000, ge=100)
    seed: int = 0
    device: str = "auto"
    #: further skinlesion.train.TrainConfig fields (e.g. patience, batch_size)
    train_overrides: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_policy(cls, policy: RetrainingPolicy, **fields: Any) -> RetrainSpec:
        """A spec with the policy's training and gate settings; ``fields`` add or override."""
        return cls(**{"mode": policy.mode, "epochs": policy.epochs,
                      "holdout_share": policy.holdout_share,
                      "include_review_queue": policy.include_review_queue,
                      "bootstrap_resamples": policy.bootstrap_resamples, "seed": policy.seed,
                      **fields})


def active_spec(store: Store, policy: RetrainingPolicy, *, models_dir: Path, cache_dir: Path,
                **fields: Any) -> RetrainSpec:
    """A spec retraining the active version (by its id) with the policy's settings; ``fields``
    (e.g. ``data_dir``) add or override."""
    base = resolve_version(models_dir, store.get_route().active_version)
    return RetrainSpec.from_policy(policy, base_version=base, models_dir=str(models_dir),
                                   cache_dir=str(cache_dir), **fields)


class Reporter(Protocol):
    """Where a retrain reports: progress (0..1 with a message) and log lines. A job's reporter
    raises when the job is cancelled, which stops the retrain between steps and epochs."""

    def progress(self, fraction: float, message: str) -> None: ...

    def log(self, line: str) -> None: ...


# --- the training data of a retrain ----------------------------------------------------------------


class TrainingData(BaseModel):
    """The rows a retrain fits on (``df`` with ``split``: the original data plus production cases
    in training) and the ``holdout`` (production cases held out for the gate), all in the dataset
    table's columns; ``data_dir`` and ``data_name`` of the original data."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    df: pd.DataFrame
    split: pd.Series
    holdout: pd.DataFrame
    data_dir: str
    data_name: str

    def counts(self) -> dict[str, int]:
        """How many rows of each kind: ``original``, ``production_train``, ``review_labels``
        (production training rows labelled through the review queue) and ``holdout``."""
        production = self.df["image"].str.startswith(PRODUCTION_PREFIX)
        review = production & self.df.get("label_source", pd.Series("", index=self.df.index)).eq(
            REVIEW_SOURCE)
        return {"original": int((~production).sum()), "production_train": int(production.sum()),
                "review_labels": int(review.sum()), "holdout": len(self.holdout)}


def _lineage(card: ModelCard) -> dict[str, Any]:
    """The card's ``retraining`` section ({} for a version that was not retrained)."""
    return dict((card.model_extra or {}).get("retraining") or {})


def original_data_dir(card: ModelCard, override: Path | str | None = None) -> Path:
    """The folder of ``card``'s original dataset: ``override``, else the card's
    ``retraining.data_dir``, else ``data.name`` when it is a folder; DataError otherwise."""
    if override:
        if not Path(override).expanduser().is_dir():
            raise DataError(f"the data folder {override} does not exist", field="data_dir")
        return Path(override).expanduser().resolve()
    for candidate in (_lineage(card).get("data_dir"), card.data.name):
        if candidate and Path(candidate).expanduser().is_dir():
            return Path(candidate).expanduser().resolve()
    raise DataError(f"the card of {card.id} does not say where its training data is (data "
                    f"{card.data.name!r}); give the dataset folder (`skinlesion retrain --data DIR`)",
                    field="data_dir")


def original_data(card: ModelCard, models_dir: Path, data_dir: Path) -> tuple[pd.DataFrame,
                                                                               pd.Series]:
    """The base's original rows (dataset table) with the split its manifest records; DataError
    naming the missing images when the folder no longer holds them all."""
    from skinlesion.data.readers import read_dataset

    manifest = read_manifest(models_dir, card.id)
    manifest = manifest[~manifest["image"].str.startswith(PRODUCTION_PREFIX)]
    df = read_dataset(data_dir)
    missing = sorted(set(manifest["image"]) - set(df["image"]))
    if missing:
        raise DataError(f"{len(missing)} image(s) {card.id} was trained on are not in {data_dir} "
                        f"(e.g. {', '.join(missing[:3])}); give the folder it was trained on",
                        source=str(data_dir))
    split_of = manifest.set_index("image")["split"]
    df = df[df["image"].isin(split_of.index)].reset_index(drop=True)
    return df, df["image"].map(split_of).rename("split")


def production_rows(cases: pd.DataFrame, *, include_review_queue: bool = True) -> pd.DataFrame:
    """Labelled production cases (:meth:`Store.retained_labelled_cases`) as dataset-table rows:
    ``image`` (``prod-<hash prefix>``), ``path`` (the kept file), ``diagnosis``, metadata,
    ``lesion_id`` (the image: one case, one lesion), plus ``image_sha256``, ``ts`` (answer time)
    and ``label_source``. Cases whose file is gone are left out; without ``include_review_queue``
    so are the review-queue labels."""
    keep = cases["image_path"].map(lambda p: Path(p).is_file())
    if not include_review_queue:
        keep &= cases["label_source"].ne(REVIEW_SOURCE)
    cases = cases[keep]
    names = PRODUCTION_PREFIX + cases["image_sha256"].str[:16]
    return pd.DataFrame({
        "image": names.to_numpy(), "path": cases["image_path"].to_numpy(),
        "diagnosis": cases["diagnosis"].to_numpy(),
        **{field: cases[field].to_numpy() for field in METADATA_FIELDS},
        "lesion_id": names.to_numpy(), "image_sha256": cases["image_sha256"].to_numpy(),
        "ts": pd.to_datetime(cases["ts"], utc=True).to_numpy(),
        "label_source": cases["label_source"].to_numpy(),
    })


def split_production(rows: pd.DataFrame, *, trained: set[str], holdout_share: float
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(train, holdout)``: rows whose image the base trained on (``trained``: manifest image
    names) stay in training; of the others the newest ``holdout_share`` (by answer time, at least
    one when there are any and the share is above 0) is held out, the rest train."""
    seen = rows["image"].isin(trained)
    new = rows[~seen].sort_values(["ts", "image"], kind="stable")
    n_holdout = int(np.ceil(len(new) * holdout_share)) if holdout_share > 0 else 0
    holdout = new.iloc[len(new) - n_holdout:]
    train = pd.concat([rows[seen], new.iloc[:len(new) - n_holdout]])
    return train.reset_index(drop=True), holdout.reset_index(drop=True)


def training_data(store: Store, card: ModelCard, models_dir: Path, *,
                  data_dir: Path | str | None = None, holdout_share: float = 0.3,
                  include_review_queue: bool = True) -> TrainingData:
    """The data of a retrain of ``card`` (see the module docstring)."""
    folder = original_data_dir(card, data_dir)
    df, split = original_data(card, models_dir, folder)
    manifest = read_manifest(models_dir, card.id)
    rows = production_rows(store.retained_labelled_cases(), include_review_queue=include_review_queue)
    original = manifest[~manifest["image"].str.startswith(PRODUCTION_PREFIX)]
    rows = rows[~rows["image_sha256"].isin(set(original["sha256"]))]  # already in the dataset
    trained = set(manifest.loc[manifest["split"].isin(["train", "val"]), "image"])
    train, holdout = split_production(rows, trained=trained, holdout_share=holdout_share)
    combined = pd.concat([df, train], ignore_index=True)
    combined_split = pd.concat([split, pd.Series("train", index=range(len(train)))],
                               ignore_index=True).rename("split")
    name = _lineage(card).get("data_name") or card.data.name
    return TrainingData(df=combined, split=combined_split, holdout=holdout, data_dir=str(folder),
                        data_name=str(name))


# --- the champion / challenger gate ----------------------------------------------------------------


class MetricDelta(BaseModel):
    """Candidate minus active on one metric, with its bootstrap confidence interval and a verdict:
    ``better`` / ``worse`` when the interval excludes 0, ``no clear difference`` otherwise,
    ``undefined`` when the split cannot give the metric (one class only)."""

    model_config = ConfigDict(frozen=True)

    metric: str
    candidate: float | None
    active: float | None
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    verdict: Literal["better", "worse", "no clear difference", "undefined"]


class SplitComparison(BaseModel):
    """Both models on one evaluation split: headline metrics side by side and the differences."""

    model_config = ConfigDict(frozen=True)

    split: str
    n: int
    n_malignant: int
    candidate: dict[str, float | None]
    active: dict[str, float | None]
    deltas: list[MetricDelta]
    note: str = ""


class GateReport(BaseModel):
    """The champion/challenger comparison of a candidate with the active model it would replace."""

    model_config = ConfigDict(frozen=True)

    candidate: str
    active: str
    resamples: int
    seed: int
    confidence: float = 0.95
    splits: list[SplitComparison]
    holdout_fingerprint: str | None = None
    #: the operating thresholds compared: the candidate's own, and the active version's as served
    #: (its tuned threshold where the route sets one, else its card's)
    thresholds: dict[str, float] = Field(default_factory=dict)

    def summary(self) -> str:
        """One line per split and difference, e.g. ``recent hold-out: AUROC +0.031 [−0.004,
        +0.066] no clear difference``."""
        lines = []
        for split in self.splits:
            if split.note:
                lines.append(f"{split.split} (n={split.n}): {split.note}")
            for d in split.deltas:
                if d.difference is None:
                    continue
                lines.append(f"{split.split} (n={split.n}): {d.metric} {d.difference:+.3f} "
                             f"[{d.ci_low:+.3f}, {d.ci_high:+.3f}] {d.verdict}")
        return "\n".join(lines)


def _finite(value: float) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def _auroc_rows(scores: np.ndarray, n_pos: int) -> np.ndarray:
    """AUROC of each row of ``scores`` whose first ``n_pos`` columns are the positives
    (Mann-Whitney U from mid-ranks, so ties count one half)."""
    ranks = rankdata(scores, axis=-1)
    n_neg = scores.shape[-1] - n_pos
    return (ranks[..., :n_pos].sum(-1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def paired_bootstrap(truth: np.ndarray, candidate: np.ndarray, active: np.ndarray, *,
                     thresholds: tuple[float, float], resamples: int = 1000, seed: int = 0,
                     confidence: float = 0.95) -> dict[str, tuple[float, float, float]]:
    """``{metric: (difference, ci_low, ci_high)}`` of candidate minus active for ``auroc`` and
    ``recall`` (sensitivity at each model's threshold) on the same cases.

    Paired: each resample draws the same cases for both models. Stratified: malignant and benign
    cases are resampled separately (as pROC's default bootstrap), so every resample has both
    classes and the AUROC is always defined. Percentile interval; seeded, so repeatable. Needs
    at least one malignant and one benign case (DataError otherwise)."""
    truth = np.asarray(truth, dtype=bool)
    pos, neg = np.flatnonzero(truth), np.flatnonzero(~truth)
    if len(pos) == 0 or len(neg) == 0:
        raise DataError("a bootstrap of AUROC and sensitivity needs malignant and benign cases",
                        field="truth")
    rng = np.random.default_rng(seed)
    rows = np.concatenate([rng.choice(pos, size=(resamples, len(pos))),
                           rng.choice(neg, size=(resamples, len(neg)))], axis=1)
    original = np.concatenate([pos, neg])
    out: dict[str, tuple[float, float, float]] = {}
    tail = (1 - confidence) / 2 * 100
    for metric in GATE_DIFFERENCES:
        values = []
        for scores, threshold in zip((candidate, active), thresholds, strict=True):
            scores = np.asarray(scores, dtype=float)
            if metric == "auroc":
                values.append((_auroc_rows(scores[original], len(pos)),
                               _auroc_rows(scores[rows], len(pos))))
            else:
                values.append(((scores[pos] >= threshold).mean(),
                               (scores[rows[:, :len(pos)]] >= threshold).mean(axis=1)))
        point = float(values[0][0] - values[1][0])
        low, high = np.percentile(values[0][1] - values[1][1], [tail, 100 - tail])
        out[metric] = (point, float(low), float(high))
    return out


def _verdict(low: float, high: float) -> Literal["better", "worse", "no clear difference"]:
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "no clear difference"


def compare_split(name: str, diagnoses: pd.Series, candidate: np.ndarray, active: np.ndarray, *,
                  thresholds: tuple[float, float], resamples: int = 1000, seed: int = 0,
                  malignant: tuple[str, ...] = DEFAULT_MALIGNANT) -> SplitComparison:
    """Candidate and active (class probabilities of the same cases, each at its own threshold) on
    one split: :data:`GATE_METRICS` side by side and :func:`paired_bootstrap` differences."""
    y = np.array([class_index(d) for d in diagnoses], dtype=int)
    truth = np.asarray(malignant_mask(malignant))[y] if len(y) else np.zeros(0, dtype=bool)
    n_mal = int(truth.sum())
    if len(y) == 0:
        return SplitComparison(split=name, n=0, n_malignant=0, candidate={}, active={}, deltas=[],
                               note="no cases: nothing to compare on")
    sides = [{m: _finite(v) for m, v in metrics.summary(
        y, probs, threshold=t, malignant=malignant).items() if m in GATE_METRICS}
        for probs, t in zip((candidate, active), thresholds, strict=True)]
    p_mal = [metrics.p_malignant(probs, malignant) for probs in (candidate, active)]
    if n_mal == 0 or n_mal == len(y):
        deltas = [MetricDelta(metric=m, candidate=sides[0].get(m), active=sides[1].get(m),
                              difference=None, ci_low=None, ci_high=None, verdict="undefined")
                  for m in GATE_DIFFERENCES]
        return SplitComparison(split=name, n=len(y), n_malignant=n_mal, candidate=sides[0],
                               active=sides[1], deltas=deltas,
                               note="needs malignant and benign cases to compare AUROC and "
                                    "sensitivity")
    boot = paired_bootstrap(truth, p_mal[0], p_mal[1], thresholds=thresholds, resamples=resamples,
                            seed=seed)
    deltas = [MetricDelta(metric=m, candidate=sides[0].get(m), active=sides[1].get(m),
                          difference=diff, ci_low=low, ci_high=high, verdict=_verdict(low, high))
              for m, (diff, low, high) in boot.items()]
    return SplitComparison(split=name, n=len(y), n_malignant=n_mal, candidate=sides[0],
                           active=sides[1], deltas=deltas)


def gate_table(report: GateReport | dict) -> pd.DataFrame:
    """The gate as one row per split and metric: ``split, n, metric, candidate, active,
    difference, ci_low, ci_high, verdict`` (difference columns empty for metrics shown without
    an interval) — for the Models page and ``skinlesion jobs show``."""
    report = GateReport.model_validate(report)
    rows = []
    for split in report.splits:
        deltas = {d.metric: d for d in split.deltas}
        for metric in GATE_METRICS:
            if metric not in split.candidate:
                continue
            d = deltas.get(metric)
            rows.append({"split": split.split, "n": split.n, "metric": metric,
                         "candidate": split.candidate.get(metric), "active": split.active.get(metric),
                         "difference": d.difference if d else None, "ci_low": d.ci_low if d else None,
                         "ci_high": d.ci_high if d else None, "verdict": d.verdict if d else ""})
    return pd.DataFrame(rows, columns=["split", "n", "metric", "candidate", "active", "difference",
                                       "ci_low", "ci_high", "verdict"])


# --- the retrain -----------------------------------------------------------------------------------


class RetrainResult(BaseModel):
    """What a retrain produced: the candidate version, its parent, the data counts, the data diff
    against the parent (image names) and the gate."""

    model_config = ConfigDict(frozen=True)

    version: str
    parent: str
    fingerprint: str
    parent_fingerprint: str
    data: dict[str, int]
    added_images: list[str]
    removed_images: list[str]
    gate: GateReport


def _holdout_fingerprint(holdout: pd.DataFrame) -> str | None:
    if holdout.empty:
        return None
    return data_fingerprint(build_manifest(holdout, pd.Series("holdout", index=holdout.index),
                                           holdout["image_sha256"]))


def retrain(store: Store, spec: RetrainSpec, reporter: Reporter) -> RetrainResult:
    """Retrain ``spec.base_version`` on its original data plus the labelled production cases,
    compare the candidate with it (the gate) and register the candidate (never activated).

    Progress: 0–5 % data, 5–75 % training (per epoch), 75–90 % the gate, 90–100 % registering."""
    models_dir = Path(spec.models_dir)
    base_id = resolve_version(models_dir, spec.base_version)
    card = read_card(models_dir / base_id)
    if card.kind != "neural":
        raise SkinLesionError(f"{base_id} is a {card.kind!r} version; only neural versions are "
                              "retrained (the fallback is refitted with its own recipe)")
    # torch comes in with training: imported here so launching and listing jobs stay light
    from skinlesion.evaluate import predict_dataset
    from skinlesion.register import register
    from skinlesion.registry import diff_manifests, load_version
    from skinlesion.train import TrainConfig, fit, training_summary
    reporter.progress(0.0, f"collecting the training data of {base_id}")
    data = training_data(store, card, models_dir, data_dir=spec.data_dir,
                         holdout_share=spec.holdout_share,
                         include_review_queue=spec.include_review_queue)
    counts = data.counts()
    reporter.log(f"data: {counts['original']} original images from {data.data_dir}, "
                 f"{counts['production_train']} labelled production cases in training "
                 f"({counts['review_labels']} from the review queue), {counts['holdout']} held out")

    recipe = dict(card.training.get("config", {}))
    config = TrainConfig.model_validate({**recipe, "mode": spec.mode, "epochs": spec.epochs,
                                         "seed": spec.seed, "device": spec.device,
                                         **spec.train_overrides})

    def on_epoch(row: dict) -> None:
        reporter.progress(0.05 + 0.70 * row["epoch"] / row["epochs"],
                          f"epoch {row['epoch']}/{row['epochs']}: val AUROC {row['val_auroc']:.3f}, "
                          f"balanced accuracy {row['val_balanced_accuracy']:.3f}")

    reporter.progress(0.05, f"training ({config.mode}, {config.epochs} epochs)")
    fitted = fit(data.df, data.split, config, spec.cache_dir, progress=False, on_epoch=on_epoch)

    reporter.progress(0.75, f"gate: candidate vs {base_id} on the recent hold-out and the original "
                            "test split")
    active = load_version(base_id, models_dir, device=spec.device)
    test = data.df[data.split == "test"]
    test_probs = fitted.predict_proba(test)

    def answers(predict: Callable[[pd.DataFrame], np.ndarray], rows: pd.DataFrame) -> np.ndarray:
        return predict(rows) if len(rows) else np.zeros((0, len(CLASSES)))

    # the active version as it serves: at its tuned operating threshold where one is set
    served = store.get_route().threshold_for(base_id)
    thresholds = (fitted.threshold, active.card.threshold if served is None else served)
    splits = [compare_split(name, rows["diagnosis"], candidate_probs,
                            answers(lambda r: predict_dataset(active, r, progress=False), rows),
                            thresholds=thresholds,
                            resamples=spec.bootstrap_resamples, seed=spec.seed,
                            malignant=tuple(card.malignant))
              for name, rows, candidate_probs in (
                  (HOLDOUT, data.holdout, answers(fitted.predict_proba, data.holdout)),
                  (ORIGINAL_TEST, test, test_probs))]

    vid = new_version_id(config.backbone if config.inputs != "metadata" else "metadata")
    lineage = {"base": base_id, "data_dir": data.data_dir, "data_name": data.data_name,
               "counts": counts, "holdout_share": spec.holdout_share}
    gate = GateReport(candidate=vid, active=base_id, resamples=spec.bootstrap_resamples,
                      seed=spec.seed, splits=splits,
                      holdout_fingerprint=_holdout_fingerprint(data.holdout),
                      thresholds={"candidate": thresholds[0], "active": thresholds[1]})
    reporter.progress(0.90, f"registering the candidate {vid}")
    new = register(
        models_dir, fitted.classifier, data.df, data.split, threshold=fitted.threshold,
        val_probs=fitted.val_probs, test_probs=test_probs,
        data_name=f"{data.data_name} + {counts['production_train']} labelled production cases",
        history=fitted.history, training=training_summary(fitted), parent=base_id,
        target_sensitivity=config.target_sensitivity, malignant=tuple(card.malignant),
        notes=f"Retrained from {base_id}: a candidate, promoted only by a person.", version_id=vid,
        extra={"retraining": lineage, "gate": gate.model_dump(mode="json")}, progress=False)
    diff = diff_manifests(read_manifest(models_dir, base_id), read_manifest(models_dir, new.id))
    reporter.log(f"candidate {new.id}: {len(diff['added'])} images added, "
                 f"{len(diff['removed'])} removed, {len(diff['relabelled'])} relabelled, "
                 f"{len(diff['resplit'])} resplit against {base_id}")
    for line in gate.summary().splitlines():
        reporter.log(f"gate: {line}")
    return RetrainResult(version=new.id, parent=base_id, fingerprint=new.data.fingerprint,
                         parent_fingerprint=card.data.fingerprint, data=counts,
                         added_images=diff["added"], removed_images=diff["removed"],
                         gate=gate)


def quiet_reporter() -> Reporter:
    """A :class:`Reporter` that discards progress and log lines (a retrain run without a job)."""

    class _Quiet:
        def progress(self, fraction: float, message: str) -> None:
            """Discard."""

        def log(self, line: str) -> None:
            """Discard."""

    return _Quiet()
