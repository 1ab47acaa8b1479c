"""The rule-based fallback model: dermoscopy ABCD features + metadata -> logistic regression.

What clinicians fall back to when the neural model turns red: no neural network, a few dozen
interpretable numbers per image, and an operating threshold chosen for sensitivity.

Pipeline (all at a fixed working resolution, long side ``WORK_SIZE`` px, so features mean the
same thing whatever the camera resolution):

1. :func:`~skinlesion.model.lesion_segmentation.segment_lesion` — remove the dark vignette of the
   dermatoscope, suppress hairs (grey closing), Otsu-threshold a darkness channel inside the field
   of view, clean with morphology and keep the largest component nearest the centre; a central
   ellipse (flagged) when that fails.
2. :func:`~skinlesion.model.abcd.abcd_features` — the dermoscopy ABCD rule of Stolz (Asymmetry,
   Border, Colours, Differential structures), each as continuous measures and as the classic
   scores, plus the Total Dermoscopy Score ``TDS = 1.3*A + 0.1*B + 0.5*C + 0.5*D``.
3. :class:`ABCDFallback` — standardised features + encoded metadata -> class-balanced multinomial
   logistic regression over the 8 classes; probabilities are put back on the training prevalence
   and temperature-scaled on validation data so they are calibrated; the threshold on p_malignant
   is chosen on validation data for a target sensitivity (0.95 by default).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from skinlesion import metrics
from skinlesion.calibration import apply_temperature, fit_temperature, threshold_for_sensitivity
from skinlesion.data.metadata import MetadataEncoder
from skinlesion.errors import DataError, SkinLesionError
from skinlesion.metrics import p_malignant
from skinlesion.model.abcd import FEATURES, extract_features
from skinlesion.model.lesion_segmentation import WORK_SIZE
from skinlesion.schema import (
    CLASSES, DEFAULT_MALIGNANT, METADATA_FIELDS, class_index, malignant_mask,
)

#: File the fitted state is written to (plain JSON: no pickle is ever loaded).
STATE_FILE = "fallback.json"
ARCHITECTURE = "abcd_rule"


# --- the classifier -------------------------------------------------------------------------------

#: logit standing in for a class never seen in training (probability ~1e-22, finite for the maths)
_ABSENT_LOGIT = -50.0


def _as_class_indices(y: object, n: int) -> np.ndarray:
    """Class indices (n,) from integer indices or diagnosis labels; ValueError names the problem."""
    values = np.asarray(y)
    if values.shape != (n,):
        raise ValueError(f"y must hold one diagnosis per image ({n}), got shape {values.shape}")
    if values.dtype.kind in "OUS":
        return np.array([class_index(str(v)) for v in values], dtype=np.int64)
    if values.dtype.kind not in "iu" or (n and (values.min() < 0 or values.max() >= len(CLASSES))):
        raise ValueError(f"y must hold class indices 0..{len(CLASSES) - 1} or labels "
                         f"{', '.join(CLASSES)}")
    return values.astype(np.int64)


class ABCDFallback:
    """Rule-based fallback classifier: ABCD features + encoded metadata -> class-balanced
    multinomial logistic regression (scikit-learn) over the 8 classes.

    The regression is fitted with balanced class weights so rare malignant classes shape the
    decision surface; its logits are then moved back to the training prevalence (+ log prior) and
    divided by a temperature fitted on validation data (:meth:`calibrate`), so :meth:`predict_proba`
    answers calibrated probabilities. :meth:`calibrate` also picks the operating threshold on
    p_malignant for the target sensitivity (0.95 by default: the fallback favours sensitivity).
    The fitted state is a handful of arrays, saved as JSON (no pickle)."""

    kind: ClassVar[str] = "fallback"

    def __init__(self, *, C: float = 0.3, malignant: Sequence[str] = DEFAULT_MALIGNANT,
                 n_jobs: int = 1, seed: int = 0):
        self.C = C
        self.malignant = tuple(malignant)
        self.n_jobs = n_jobs
        self.seed = seed

    # -- fitting --

    def fit(self, images: Sequence[Image.Image], metadata: pd.DataFrame, y: object, *,
            target_sensitivity: float = 0.95) -> ABCDFallback:
        """Fit on training images, their metadata (age_approx, sex, anatom_site_general) and
        diagnoses ``y`` (class indices in CLASSES order, or labels)."""
        features = extract_features(images, n_jobs=self.n_jobs)
        return self.fit_features(features, metadata, y, target_sensitivity=target_sensitivity)

    def fit_features(self, features: np.ndarray, metadata: pd.DataFrame, y: object, *,
                     target_sensitivity: float = 0.95) -> ABCDFallback:
        """:meth:`fit` from a precomputed :func:`extract_features` matrix."""
        if not 0.0 < target_sensitivity <= 1.0:
            raise ValueError(f"target_sensitivity must lie in (0, 1], got {target_sensitivity}")
        malignant_mask(self.malignant)  # validates the malignant set
        labels = _as_class_indices(y, len(features))
        present = np.unique(labels)
        if len(present) < 2:
            raise ValueError("the training data must contain at least two diagnoses, got "
                             f"{[CLASSES[i] for i in present]}")
        self.encoder_ = MetadataEncoder().fit(metadata)
        design = self._design(features, metadata)
        scaler = StandardScaler().fit(design)
        regression = LogisticRegression(C=self.C, class_weight="balanced", max_iter=5000,
                                        random_state=self.seed)
        regression.fit(scaler.transform(design), labels)
        self.n_features_in_ = design.shape[1]
        self.scaler_mean_ = scaler.mean_
        self.scaler_scale_ = scaler.scale_
        self.classes_ = regression.classes_.astype(np.int64)
        # a two-class regression answers one logit column; spell out both classes' logits
        coef, intercept = regression.coef_, regression.intercept_
        if len(self.classes_) == 2:
            coef = np.vstack([-coef / 2, coef / 2])
            intercept = np.array([-intercept[0], intercept[0]]) / 2
        self.coef_, self.intercept_ = coef, intercept
        counts = np.bincount(labels, minlength=len(CLASSES))[self.classes_]
        self.log_prior_ = np.log(counts / counts.sum())
        self.temperature_ = 1.0
        self.target_sensitivity_ = float(target_sensitivity)
        self.threshold_: float | None = None
        return self

    def calibrate(self, images: Sequence[Image.Image], metadata: pd.DataFrame, y: object, *,
                  target_sensitivity: float | None = None) -> float:
        """Fit the temperature and choose the operating threshold on validation data; returns the
        threshold (see :meth:`calibrate_features`)."""
        features = extract_features(images, n_jobs=self.n_jobs)
        return self.calibrate_features(features, metadata, y, target_sensitivity=target_sensitivity)

    def calibrate_features(self, features: np.ndarray, metadata: pd.DataFrame, y: object, *,
                           target_sensitivity: float | None = None) -> float:
        """On validation data: fit the temperature of the prevalence-corrected logits
        (:func:`skinlesion.calibration.fit_temperature`), then set ``threshold_``, the highest
        threshold on p_malignant whose validation sensitivity reaches ``target_sensitivity``
        (default: the one given to :meth:`fit`), with
        :func:`skinlesion.calibration.threshold_for_sensitivity`. Returns the threshold."""
        self._check_fitted()
        labels = _as_class_indices(y, len(features))
        logits = self._logits(features, metadata)
        self.temperature_ = fit_temperature(logits, labels)
        if target_sensitivity is not None:
            if not 0.0 < target_sensitivity <= 1.0:
                raise ValueError(f"target_sensitivity must lie in (0, 1], got {target_sensitivity}")
            self.target_sensitivity_ = float(target_sensitivity)
        probs = apply_temperature(logits, self.temperature_)
        is_malignant = np.asarray(malignant_mask(self.malignant))[labels]
        score = p_malignant(probs, self.malignant)
        self.threshold_ = threshold_for_sensitivity(is_malignant, score,
                                                    target=self.target_sensitivity_)
        return self.threshold_

    # -- predicting --

    def predict_proba(self, images: Sequence[Image.Image], metadata: pd.DataFrame) -> np.ndarray:
        """Calibrated class probabilities (n, 8) in CLASSES order."""
        return self.predict_proba_features(extract_features(images, n_jobs=self.n_jobs), metadata)

    def predict_proba_features(self, features: np.ndarray, metadata: pd.DataFrame) -> np.ndarray:
        """:meth:`predict_proba` from a precomputed :func:`extract_features` matrix."""
        self._check_fitted()
        return apply_temperature(self._logits(features, metadata), self.temperature_)

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError("this ABCDFallback is not fitted yet: call fit() (or "
                                 "fit_fallback) first, or load a saved version")

    def _design(self, features: np.ndarray, metadata: pd.DataFrame) -> np.ndarray:
        """ABCD features next to the encoded metadata; ValueError when they do not line up."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != len(FEATURES):
            raise ValueError(f"features must have shape (n, {len(FEATURES)}), got {features.shape}")
        if len(metadata) != len(features):
            raise ValueError(f"metadata has {len(metadata)} rows for {len(features)} images; "
                             "give one metadata row per image")
        bad = np.flatnonzero(~np.isfinite(features).all(axis=1))
        if len(bad):
            raise ValueError("ABCD features are not finite for the image(s) at position "
                             f"{bad[:5].tolist()}")
        return np.hstack([features, self.encoder_.transform(metadata).astype(np.float64)])

    def _logits(self, features: np.ndarray, metadata: pd.DataFrame) -> np.ndarray:
        """Prevalence-corrected logits (n, 8) before temperature scaling."""
        design = (self._design(features, metadata) - self.scaler_mean_) / self.scaler_scale_
        logits = np.full((len(design), len(CLASSES)), _ABSENT_LOGIT)
        logits[:, self.classes_] = design @ self.coef_.T + self.intercept_ + self.log_prior_
        return logits

    # -- persistence --

    def _input_names(self) -> list[str]:
        return list(FEATURES) + [f"meta:{name}" for name in self.encoder_.feature_names_]

    def coefficient_summary(self, top: int = 3) -> dict[str, list[list[object]]]:
        """Per class, the ``top`` inputs with the largest standardised weights, [name, weight]."""
        self._check_fitted()
        names = self._input_names()
        return {CLASSES[c]: [[names[j], round(float(row[j]), 4)]
                             for j in np.argsort(-np.abs(row))[:top]]
                for c, row in zip(self.classes_, self.coef_, strict=True)}

    def save(self, directory: Path) -> dict:
        """Write the fitted state as JSON into ``directory``; return the card's model section."""
        self._check_fitted()
        encoder_state = self.encoder_.get_state()
        state = {
            "format": 1, "features": list(FEATURES), "work_size": WORK_SIZE,
            "classes": [CLASSES[c] for c in self.classes_], "malignant": list(self.malignant),
            "C": self.C, "seed": self.seed,
            "scaler_mean": self.scaler_mean_.tolist(), "scaler_scale": self.scaler_scale_.tolist(),
            "coef": self.coef_.tolist(), "intercept": self.intercept_.tolist(),
            "log_prior": self.log_prior_.tolist(), "temperature": self.temperature_,
            "threshold": self.threshold_, "target_sensitivity": self.target_sensitivity_,
            "metadata_encoder": encoder_state,
        }
        (Path(directory) / STATE_FILE).write_text(json.dumps(state))
        return {
            "architecture": ARCHITECTURE, "state_file": STATE_FILE,
            "features": list(FEATURES), "metadata_features": list(self.encoder_.feature_names_),
            "preprocessing": {"work_size": WORK_SIZE, "segmentation": "otsu_inverted_blue",
                              "colour_constancy": "shades_of_grey_p6"},
            "metadata_encoder": encoder_state,
            "regression": {"type": "multinomial_logistic", "class_weight": "balanced", "C": self.C,
                           "prior_corrected": True},
            "temperature": self.temperature_, "threshold": self.threshold_,
            "target_sensitivity": self.target_sensitivity_,
            "coefficients": {"n_inputs": self.n_features_in_, "classes": len(self.classes_),
                             "largest": self.coefficient_summary()},
            "n_params": int(self.coef_.size + self.intercept_.size),
        }

    @classmethod
    def load(cls, directory: Path, model_section: dict) -> ABCDFallback:
        """Rebuild a fitted fallback from its folder (the JSON state file the section names)."""
        path = Path(directory) / model_section.get("state_file", STATE_FILE)
        if not path.is_file():
            raise SkinLesionError(f"fallback state file {path} is missing; the version folder is "
                                  "incomplete: save the version again")
        state = json.loads(path.read_text())
        if state["features"] != list(FEATURES) or state["work_size"] != WORK_SIZE:
            raise SkinLesionError(f"{path} was written for other ABCD features or working size "
                                  "than this skinlesion version computes; retrain the fallback "
                                  "(`fit_fallback`) with this version")
        model = cls(C=state["C"], malignant=state["malignant"], seed=state["seed"])
        model.encoder_ = MetadataEncoder.from_state(state["metadata_encoder"])
        model.classes_ = np.array([class_index(c) for c in state["classes"]], dtype=np.int64)
        model.scaler_mean_ = np.array(state["scaler_mean"])
        model.scaler_scale_ = np.array(state["scaler_scale"])
        model.coef_ = np.array(state["coef"])
        model.intercept_ = np.array(state["intercept"])
        model.log_prior_ = np.array(state["log_prior"])
        model.n_features_in_ = model.coef_.shape[1]
        model.temperature_ = float(state["temperature"])
        model.threshold_ = state["threshold"]
        model.target_sensitivity_ = float(state["target_sensitivity"])
        return model


# --- training from a dataset table ----------------------------------------------------------------


def fit_fallback(df: pd.DataFrame, split: pd.Series, *, seed: int = 0, progress: bool = True,
                 target_sensitivity: float = 0.95, n_jobs: int = 2,
                 C: float = 0.3) -> tuple[ABCDFallback, dict]:
    """Fit the fallback on ``split == "train"``, calibrate it and choose its threshold on
    ``split == "val"``.

    ``df`` is a dataset table (:func:`skinlesion.data.readers.read_dataset`: columns path,
    diagnosis, age_approx, sex, anatom_site_general); ``split`` is aligned with it (e.g.
    :func:`skinlesion.data.splits.split_dataset`). Images are loaded from ``df["path"]`` and their
    features computed on ``n_jobs`` processes with a progress bar on stderr. Returns the model and
    an info dict: sizes, threshold, temperature, feature-extraction time, share of images whose
    segmentation fell back to the central ellipse, the validation metrics
    (:func:`skinlesion.metrics.summary` at the chosen threshold) and ``val_probs``, the calibrated
    answers on the ``val`` rows in row order (an array, as :func:`skinlesion.register.register`
    wants them)."""
    missing = [c for c in ("path", "diagnosis", *METADATA_FIELDS) if c not in df.columns]
    if missing:
        raise DataError(f"the dataset table lacks column(s) {', '.join(missing)}; read it with "
                        "skinlesion.data.readers.read_dataset")
    if not split.index.equals(df.index):
        raise ValueError("split must be aligned with df (same index), e.g. split_dataset(df)")
    rows = {name: (split == name).to_numpy() for name in ("train", "val")}
    for name, chosen in rows.items():
        if not chosen.any():
            raise DataError(f"no '{name}' rows in the split; the fallback needs train and val rows")
        unlabelled = df.loc[chosen, "diagnosis"].isna()
        if unlabelled.any():
            raise DataError(f"{int(unlabelled.sum())} '{name}' row(s) have no diagnosis (first: "
                            f"{df.loc[chosen].loc[unlabelled, 'path'].iloc[0]}); train only on a "
                            "labelled dataset", field="diagnosis")
    used = rows["train"] | rows["val"]
    start = time.perf_counter()
    features = extract_features(df.loc[used, "path"].tolist(), n_jobs=n_jobs, progress=progress)
    seconds = time.perf_counter() - start
    table = df.loc[used].reset_index(drop=True)
    part = {name: chosen[used] for name, chosen in rows.items()}
    labels = np.array([class_index(d) for d in table["diagnosis"]], dtype=np.int64)
    meta = table.loc[:, list(METADATA_FIELDS)]
    model = ABCDFallback(C=C, seed=seed, n_jobs=n_jobs)
    model.fit_features(features[part["train"]], meta[part["train"]], labels[part["train"]],
                       target_sensitivity=target_sensitivity)
    threshold = model.calibrate_features(features[part["val"]], meta[part["val"]],
                                         labels[part["val"]])
    val_probs = model.predict_proba_features(features[part["val"]], meta[part["val"]])
    info = {
        "n_train": int(part["train"].sum()), "n_val": int(part["val"].sum()),
        "threshold": threshold, "temperature": model.temperature_,
        "target_sensitivity": model.target_sensitivity_,
        "feature_seconds": round(seconds, 2),
        "ms_per_image": round(1000.0 * seconds / max(int(used.sum()), 1), 2),
        "segmentation_fallback_share": float(features[:, FEATURES.index("seg_fallback")].mean()),
        "val": metrics.summary(labels[part["val"]], val_probs, threshold=threshold,
                               malignant=model.malignant),
        "val_probs": val_probs,
    }
    return model, info
