"""Registering a fitted classifier: manifest, fingerprint, split metrics and reference answers."""

from __future__ import annotations

import pandas as pd

from skinlesion import registry
from skinlesion.data.splits import split_dataset
from skinlesion.register import register
from tests.standins import STANDIN_KIND, STANDIN_PATH, BrightnessClassifier


def test_register_writes_a_self_described_version(tmp_path, synthetic_df, monkeypatch):
    monkeypatch.setitem(registry.CLASSIFIER_KINDS, STANDIN_KIND, STANDIN_PATH)
    split = split_dataset(synthetic_df, seed=0)
    clf = BrightnessClassifier()
    val, test = synthetic_df[split == "val"], synthetic_df[split == "test"]
    from skinlesion.data.images import load_image

    def probs(rows: pd.DataFrame):
        return clf.predict_proba([load_image(p) for p in rows["path"]], rows)

    card = register(tmp_path, clf, synthetic_df, split, threshold=0.4, val_probs=probs(val),
                    test_probs=probs(test), data_name="synthetic", progress=False)
    assert card.data.n_images == len(synthetic_df)
    assert card.data.split_counts == split.value_counts().sort_index().to_dict()
    assert set(card.metrics) == {"val", "test"} and card.metrics["test"]["n"] == len(test)
    reference = registry.read_reference(tmp_path, card.id)
    assert len(reference) == len(val)
    assert {"brightness", "p_malignant", "p_MEL", "diagnosis", "sex"} <= set(reference.columns)
    assert reference["brightness"].between(0, 1).all()
    assert reference["lesion_id"].tolist() == val["lesion_id"].astype(str).tolist()
    described = card.model_extra["reference"]
    assert (described["split"], described["rows"]) == ("val", len(val))
    assert described["lesions"] == val["lesion_id"].nunique() and "one row per image" in described["weighting"]
    assert "ood" not in card.model_extra  # no monitoring embedding: no gate
    manifest = registry.read_manifest(tmp_path, card.id)
    assert manifest["sha256"].str.len().eq(64).all() and manifest["split"].isin(
        ["train", "val", "test"]).all()
    # loading it back answers like the original
    loaded = registry.load_version(card.id, tmp_path)
    assert loaded.card.image_stats_reference["brightness"]["median"] > 0
