"""NeuralClassifier: the Classifier protocol, save -> load, batching, devices."""

import warnings

import numpy as np
import pytest
import torch

from skinlesion.data.images import load_image
from skinlesion.data.splits import split_dataset
from skinlesion.model.base import Classifier
from skinlesion.model.neural import (MONITORING_DIM, NeuralClassifier, monitoring_projection,
                                     resolve_device)
from skinlesion.schema import METADATA_FIELDS
from skinlesion.train import TrainConfig, fit


@pytest.fixture(scope="module")
def fitted(synthetic_df, tmp_path_factory):
    # on CPU wherever the tests run: exact batching and save/load checks (tests/test_cuda.py
    # compares CUDA with CPU answers, within float tolerance)
    config = TrainConfig(mode="finetune", epochs=1, width=64, height=48, device="cpu",
                         train_views=("identity",), tta=("identity", "hflip"))
    with warnings.catch_warnings():  # one short epoch: the temperature search hits its bound
        warnings.filterwarnings("ignore", "fitted temperature")
        return fit(synthetic_df, split_dataset(synthetic_df, seed=0), config,
                   tmp_path_factory.mktemp("cache"), progress=False)


@pytest.fixture(scope="module")
def batch(synthetic_df):
    rows = synthetic_df.iloc[:5]
    return [load_image(p) for p in rows["path"]], rows.loc[:, list(METADATA_FIELDS)]


def test_it_is_a_classifier_with_calibrated_probabilities(fitted, batch):
    clf = fitted.classifier
    assert isinstance(clf, Classifier) and clf.kind == "neural"
    probs = clf.predict_proba(*batch)
    assert probs.shape == (5, 8)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-9)
    clf.batch_size = 2  # batching does not change the answer
    np.testing.assert_allclose(clf.predict_proba(*batch), probs, atol=1e-6)


def test_serving_path_matches_the_cached_training_path(fitted, synthetic_df, batch):
    cached = fitted.predict_proba(synthetic_df.iloc[:5])
    np.testing.assert_allclose(fitted.classifier.predict_proba(*batch), cached, atol=2e-3)


def test_save_then_load_gives_identical_probabilities(fitted, batch, tmp_path):
    section = fitted.classifier.save(tmp_path)
    state = torch.load(tmp_path / "weights.pt", weights_only=True)
    assert not any("_fc" in k for k in state)
    assert section["architecture"] == "efficientnet_lite0" and section["tta"] == ["identity", "hflip"]
    assert 0 < section["parameters"]["trainable"] < section["parameters"]["total"]
    assert {"preprocessing", "metadata_encoder", "temperature", "summary", "config"} <= set(section)
    loaded = NeuralClassifier.load(tmp_path, section | {"device": "cpu"})
    np.testing.assert_allclose(loaded.predict_proba(*batch), fitted.classifier.predict_proba(*batch),
                               rtol=1e-5, atol=1e-7)
    assert loaded.save(tmp_path / "again")["parameters"] == section["parameters"]


def test_monitoring_embeddings_come_with_the_answers_and_keep_distances(fitted, batch):
    images, metadata = batch
    probs, emb = fitted.classifier.predict_proba_and_embeddings(images, metadata)
    np.testing.assert_allclose(probs, fitted.classifier.predict_proba(images, metadata), rtol=1e-6)
    assert emb.shape == (5, MONITORING_DIM) and np.isfinite(emb).all()
    np.testing.assert_allclose(fitted.classifier.monitoring_embed(images), emb, rtol=1e-4, atol=1e-5)
    # the projection is fixed (same for every version of the backbone) and keeps distances roughly
    pooled = np.random.default_rng(0).normal(size=(50, 1280)).astype(np.float32)
    projected = monitoring_projection(1280).transform(pooled)
    np.testing.assert_array_equal(projected, monitoring_projection(1280).transform(pooled))
    ratio = np.linalg.norm(projected[1:] - projected[0], axis=1) / np.linalg.norm(
        pooled[1:] - pooled[0], axis=1)
    assert 0.5 < ratio.min() and ratio.max() < 1.5


def test_input_checks(fitted, batch):
    with pytest.raises(ValueError, match="metadata rows"):
        fitted.classifier.predict_proba(batch[0], batch[1].iloc[:3])


def test_device_choice():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")


@pytest.mark.parametrize("head_hidden", [0, 16])
def test_the_head_width_round_trips_through_save_and_load(head_hidden, synthetic_df, batch,
                                                         tmp_path):
    config = TrainConfig(inputs="metadata", mode="head", epochs=2, device="cpu",
                         head_hidden=head_hidden)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "fitted temperature")
        clf = fit(synthetic_df, split_dataset(synthetic_df, seed=0), config, tmp_path / "cache",
                  progress=False).classifier
    section = clf.save(tmp_path / "version")
    assert section["config"]["head_hidden"] == head_hidden
    if head_hidden == 0:  # a card written before head_hidden existed has no such key
        section["config"] = {k: v for k, v in section["config"].items() if k != "head_hidden"}
    loaded = NeuralClassifier.load(tmp_path / "version", section | {"device": "cpu"})
    assert (loaded.net.hidden is None) == (head_hidden == 0)
    np.testing.assert_allclose(loaded.predict_proba(*batch), clf.predict_proba(*batch),
                               rtol=1e-5, atol=1e-7)
