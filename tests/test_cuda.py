"""The CUDA paths, where a GPU is present (skipped otherwise; CI has none): fine-tuning the whole
network in mixed precision, and the Predictor on CUDA answering as it does on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skinlesion.data.splits import split_dataset
from skinlesion.predict import Predictor
from skinlesion.register import register
from skinlesion.schema import Metadata
from skinlesion.train import TrainConfig, fit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SMALL = {"width": 64, "height": 48, "tta": ("identity", "hflip")}


@pytest.fixture(scope="module")
def split(synthetic_df):
    return split_dataset(synthetic_df, seed=0)


def test_full_finetune_runs_on_cuda_in_mixed_precision(synthetic_df, split, tmp_path):
    config = TrainConfig(mode="finetune", cut=0, epochs=2, device="cuda", **SMALL)
    result = fit(synthetic_df, split, config, tmp_path / "cache", progress=False)
    assert next(result.classifier.net.parameters()).device.type == "cuda"
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"]) for h in result.history)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    np.testing.assert_allclose(result.val_probs.sum(axis=1), 1, atol=1e-5)


def test_predictor_answers_on_cuda_as_on_cpu(synthetic_df, split, tmp_path):
    config = TrainConfig(mode="head", epochs=3, device="cpu", **SMALL)
    result = fit(synthetic_df, split, config, tmp_path / "cache", progress=False)
    models = tmp_path / "models"
    card = register(models, result.classifier, synthetic_df, split, threshold=result.threshold,
                    val_probs=result.val_probs, data_name="synthetic", progress=False)
    rows = synthetic_df.iloc[:8]
    images = [open(p, "rb").read() for p in rows["path"]]
    meta = [Metadata.from_raw(r.age_approx, r.sex, r.anatom_site_general)
            for r in rows.itertuples()]
    on_cpu = Predictor.from_registry(card.id, models, device="cpu").predict_batch(images, meta)
    on_gpu = Predictor.from_registry(card.id, models, device="cuda").predict_batch(images, meta)
    assert all(a.device.startswith("cuda") for a in on_gpu)
    for a, b in zip(on_cpu, on_gpu, strict=True):
        assert abs(a.p_malignant - b.p_malignant) < 1e-3
        assert a.predicted_class == b.predicted_class and a.decision == b.decision
