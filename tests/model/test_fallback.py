"""The rule-based fallback: segmentation, ABCD features, fit/calibrate/threshold, save/load."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.exceptions import NotFittedError

from skinlesion import metrics
from skinlesion.data.images import load_image
from skinlesion.data.splits import split_dataset
from skinlesion.errors import SkinLesionError
from skinlesion.model.abcd import (
    FEATURE_DOCS, FEATURES, abcd_features, extract_features, image_features,
)
from skinlesion.model.base import Classifier
from skinlesion.model.fallback import ABCDFallback, fit_fallback
from skinlesion.model.lesion_segmentation import segment_lesion, segment_work, to_work
from skinlesion.schema import CLASSES, METADATA_FIELDS, class_index

SKIN = (222, 178, 160)
H, W = 150, 200


def _canvas(seed: int = 0, noise: float = 6.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.broadcast_to(np.array(SKIN, float), (H, W, 3))
    return base + rng.normal(0, noise, (H, W, 3))


def _disc(cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2


def _image(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _paint(mask: np.ndarray, rgb=(95, 60, 45), seed: int = 0) -> Image.Image:
    arr = _canvas(seed)
    arr[mask] = np.array(rgb, float) + np.random.default_rng(seed + 1).normal(0, 4, (mask.sum(), 3))
    return _image(arr)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_every_feature_is_documented_once():
    assert len(FEATURES) == len(set(FEATURES)) == len(FEATURE_DOCS)
    assert all(doc.strip() for doc in FEATURE_DOCS.values())


def test_segmentation_finds_a_dark_disc_off_centre():
    truth = _disc(70, 115, 32)
    mask = segment_lesion(_paint(truth))
    assert mask.shape == (H, W) and mask.dtype == bool
    assert _iou(mask, truth) > 0.8


def test_segmentation_ignores_the_dark_vignette_corners():
    truth = _disc(75, 100, 25)
    arr = np.asarray(_paint(truth), float).copy()
    vignette = ~_disc(75, 100, 90)  # black outside the circular field of view
    arr[vignette] = 5.0
    mask = segment_lesion(_image(arr))
    assert _iou(mask, truth) > 0.8
    assert not (mask & vignette).any()


def test_segmentation_without_a_lesion_falls_back_to_the_central_ellipse():
    img = _image(_canvas(3, noise=2.0))
    seg = segment_work(to_work(img))
    assert seg.fallback
    mask = segment_lesion(img)
    assert mask.shape == (H, W) and mask[H // 2, W // 2] and not mask[0, 0]
    features = abcd_features(img, mask)
    assert set(features) == set(FEATURES)
    assert all(np.isfinite(v) for v in features.values())


def test_abcd_features_accept_an_empty_mask():
    img = _paint(_disc(75, 100, 30))
    features = abcd_features(img, np.zeros((H, W), bool))
    assert features["seg_fallback"] == 1.0


def test_a_circle_is_more_symmetric_than_an_irregular_blob():
    circle = _disc(75, 100, 35)
    blob = _disc(75, 90, 30) | _disc(50, 125, 16) | _disc(105, 120, 10)
    a_circle = abcd_features(_paint(circle), circle)
    a_blob = abcd_features(_paint(blob), blob)
    assert a_circle["asym_major"] + a_circle["asym_minor"] < 0.5 * (a_blob["asym_major"]
                                                                    + a_blob["asym_minor"])
    assert a_circle["border_compactness"] < a_blob["border_compactness"]
    assert a_circle["A_score"] <= a_blob["A_score"]


def test_a_multicolour_lesion_counts_more_colours():
    lesion = _disc(75, 100, 40)
    single = abcd_features(_paint(lesion, rgb=(150, 100, 20)), lesion)
    arr = _canvas(1)
    yy, xx = np.mgrid[:H, :W]
    quadrants = {(True, True): (10, 10, 10), (True, False): (200, 50, 50),
                 (False, True): (50, 150, 150), (False, False): (150, 100, 20)}
    for (top, left), rgb in quadrants.items():
        arr[lesion & ((yy < 75) == top) & ((xx < 100) == left)] = rgb
    multi = abcd_features(_image(arr), lesion)
    assert single["C_score"] == 1.0
    assert multi["C_score"] >= 4.0
    assert single["colour_std_L"] < multi["colour_std_L"]
    assert single["TDS"] < multi["TDS"]


def test_features_do_not_depend_much_on_resolution():
    truth = _disc(75, 100, 35)
    small = _paint(truth)
    large = small.resize((600, 450), Image.BILINEAR)
    f_small = image_features(small)
    f_large = image_features(large)
    i = FEATURES.index("area_frac")
    assert f_small[i] == pytest.approx(f_large[i], rel=0.1)


# --- the classifier on the synthetic dataset ------------------------------------------------------


@pytest.fixture(scope="module")
def fitted(synthetic_df):
    split = split_dataset(synthetic_df, seed=0)
    model, info = fit_fallback(synthetic_df, split, seed=0, progress=False, n_jobs=1)
    return model, info, split


def _rows(df, split, name):
    rows = df[split == name]
    y = np.array([class_index(d) for d in rows["diagnosis"]])
    return rows, y, rows.loc[:, list(METADATA_FIELDS)].reset_index(drop=True)


def test_fit_beats_chance_and_meets_the_target_sensitivity(fitted, synthetic_df):
    model, info, split = fitted
    assert isinstance(model, Classifier) and model.kind == "fallback"
    assert info["n_train"] == int((split == "train").sum()) and info["n_val"] > 0
    assert info["val"]["auroc"] > 0.8
    # the threshold is chosen on validation data for >= 95% sensitivity, and answers match it
    _, y_val, meta_val = _rows(synthetic_df, split, "val")
    assert info["val_probs"].shape == (len(y_val), len(CLASSES))
    assert metrics.recall(y_val, info["val_probs"], threshold=info["threshold"]) >= 0.95
    assert info["val"]["recall"] >= 0.95
    assert model.threshold_ == info["threshold"]
    # held-out test split: unseen lesions, still well above chance
    rows, y_test, meta_test = _rows(synthetic_df, split, "test")
    probs = model.predict_proba([load_image(p) for p in rows["path"]], meta_test)
    assert probs.shape == (len(rows), len(CLASSES))
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert metrics.auroc(y_test, probs) > 0.7


def test_the_threshold_follows_the_target_sensitivity(fitted, synthetic_df):
    model, _, split = fitted
    rows, y_val, meta_val = _rows(synthetic_df, split, "val")
    features = extract_features(rows["path"].tolist())
    strict = copy.deepcopy(model)
    strict_threshold = strict.calibrate_features(features, meta_val, y_val)
    lenient = copy.deepcopy(model)
    lenient_threshold = lenient.calibrate_features(features, meta_val, y_val,
                                                   target_sensitivity=0.5)
    assert lenient_threshold > strict_threshold  # fewer cancers must be caught: fewer alarms
    for clf, target in ((strict, 0.95), (lenient, 0.5)):
        probs = clf.predict_proba_features(features, meta_val)
        assert metrics.recall(y_val, probs, threshold=clf.threshold_) >= target


def test_save_then_load_gives_identical_probabilities(fitted, synthetic_df, tmp_path):
    model, _, split = fitted
    section = model.save(tmp_path)
    json.dumps(section)  # the card section is plain JSON
    assert section["architecture"] == "abcd_rule"
    assert section["features"] == list(FEATURES)
    assert section["metadata_encoder"]["age_mean"] == model.encoder_.age_mean_
    assert set(section["coefficients"]["largest"]) <= set(CLASSES)
    assert not list(tmp_path.glob("*.pkl")) and not list(tmp_path.glob("*.joblib"))
    loaded = ABCDFallback.load(tmp_path, json.loads(json.dumps(section)))
    rows, _, meta = _rows(synthetic_df, split, "test")
    images = [load_image(p) for p in rows["path"]]
    # equal to the last bits or so: other numpy/scikit-learn builds may order the sums differently
    np.testing.assert_allclose(loaded.predict_proba(images, meta), model.predict_proba(images, meta),
                               rtol=1e-12, atol=1e-15)
    assert loaded.threshold_ == model.threshold_


def test_unfitted_and_misaligned_inputs_fail_clearly(fitted, synthetic_df):
    model, _, split = fitted
    rows, y, meta = _rows(synthetic_df, split, "test")
    features = extract_features(rows["path"].tolist()[:2])
    with pytest.raises(NotFittedError, match="not fitted"):
        ABCDFallback().predict_proba_features(features, meta.iloc[:2])
    with pytest.raises(ValueError, match="one metadata row per image"):
        model.predict_proba_features(features, meta.iloc[:1])
    with pytest.raises(ValueError, match="class indices"):
        ABCDFallback().fit_features(features, meta.iloc[:2], np.array([0, 99]))
    with pytest.raises(SkinLesionError, match="missing"):
        ABCDFallback.load(Path(synthetic_df["path"].iloc[0]).parent, {})
