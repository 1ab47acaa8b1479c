"""Saliency: Grad-CAM on neural classifiers lines up with the uploaded image; the fallback's outline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageDraw
from torch import nn

from skinlesion.data.metadata import MetadataEncoder
from skinlesion.data.transforms import LITE_MEAN, LITE_STD, Preprocessing
from skinlesion.explain import ExplanationUnavailable, explain, grad_cam, unletterbox
from skinlesion.model.backbones import Backbone
from skinlesion.model.fusion import FusionNet
from skinlesion.model.neural import NeuralClassifier, build_network
from skinlesion.schema import CLASSES, Metadata

PRE = Preprocessing(width=64, height=48)
META = Metadata.from_raw(55, "male", "posterior torso")


def _encoder() -> MetadataEncoder:
    return MetadataEncoder().fit(pd.DataFrame({"age_approx": [40.0, 60.0], "sex": ["male", "female"],
                                               "anatom_site_general": ["head/neck", "missing"]}))


def _classifier(net: FusionNet, config: dict) -> NeuralClassifier:
    return NeuralClassifier(net, config=config, preprocessing=PRE, encoder=_encoder(), device="cpu")


def _brightness_classifier() -> NeuralClassifier:
    """A hand-set network whose only feature is pixel brightness and whose MEL logit grows with it:
    its Grad-CAM for MEL must be the bright regions."""
    conv = nn.Conv2d(3, 1, kernel_size=1)
    with torch.no_grad():
        conv.weight.fill_(1 / 3)
        conv.bias.zero_()
    backbone = Backbone("brightness", [conv], num_features=1, mean=LITE_MEAN, std=LITE_STD,
                        default_cut=0, config={})
    net = FusionNet(backbone, n_metadata=14, n_classes=len(CLASSES), inputs="image")
    with torch.no_grad():
        net.fc.weight.zero_()
        net.fc.bias.zero_()
        net.fc.weight[CLASSES.index("MEL"), 0] = 1.0
    return _classifier(net.eval(), {"architecture": None, "inputs": "image"})


def test_unletterbox_inverts_the_preprocessing_of_a_portrait_image():
    # smooth, asymmetric content: a turned or mirrored map would not correlate
    yy, xx = np.mgrid[0:90, 0:40]
    grey = (120 + 100 * np.sin(xx / 9.0) * np.cos(yy / 23.0) + 20 * yy / 90).clip(0, 255)
    image = Image.fromarray(np.repeat(grey[..., None], 3, axis=2).astype(np.uint8))
    fitted = np.asarray(PRE.fit(image).convert("L"), dtype=np.float32)
    back = unletterbox(fitted, PRE, image.size)
    assert back.shape == (90, 40)
    corr = np.corrcoef(back.ravel(), grey.ravel())[0, 1]
    assert corr > 0.9, corr


@pytest.mark.parametrize("size", [(120, 90), (50, 110)])  # landscape, and portrait (turned inside)
def test_grad_cam_marks_the_planted_bright_patch(size):
    w, h = size
    image = Image.new("RGB", size, (60, 50, 40))
    ImageDraw.Draw(image).rectangle([2, 2, w // 3, h // 3], fill=(250, 250, 250))
    heat, overlay = grad_cam(_brightness_classifier(), image, META, target_class="MEL")
    assert heat.shape == (h, w) and overlay.size == size
    assert heat.max() == pytest.approx(1.0) and heat.min() >= 0.0
    inside = heat[4:h // 3 - 2, 4:w // 3 - 2].mean()
    outside = heat[h // 2:, w // 2:].mean()
    assert inside > 0.8 and outside < 0.1, (inside, outside)


def test_grad_cam_on_a_tiny_untrained_network_has_the_image_size_and_varies():
    torch.manual_seed(0)
    blocks = [nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
              nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU())]
    backbone = Backbone("tiny", blocks, num_features=16, mean=LITE_MEAN, std=LITE_STD,
                        default_cut=1, config={})
    net = FusionNet(backbone, n_metadata=14, n_classes=len(CLASSES)).eval()
    for p in net.backbone.parameters():  # a frozen trunk, as a served version has
        p.requires_grad_(False)
    clf = _classifier(net, {"architecture": "tiny", "inputs": "image+metadata"})
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 255, (70, 100, 3), dtype=np.uint8))
    before = clf.predict_proba([image], pd.DataFrame([META.as_dict()]))
    explanation = explain(clf, image, META)
    assert explanation.method == "grad-cam"
    assert explanation.heatmap.shape == (70, 100)
    assert explanation.heatmap.std() > 0.01
    assert explanation.overlay.size == image.size
    # explaining changes nothing: same answer afterwards, no gradients left behind
    np.testing.assert_allclose(clf.predict_proba([image], pd.DataFrame([META.as_dict()])), before)
    assert all(p.grad is None for p in net.parameters())


def test_metadata_only_model_has_no_saliency():
    net = build_network(None, inputs="metadata", n_metadata=14, pretrained=False)
    clf = _classifier(net, {"architecture": None, "inputs": "metadata"})
    with pytest.raises(ExplanationUnavailable, match="metadata-only"):
        explain(clf, Image.new("RGB", (64, 48)), META)


def test_fallback_explanation_outlines_the_lesion():
    class Fallback:
        kind = "fallback"

    image = Image.new("RGB", (160, 120), (200, 160, 140))
    ImageDraw.Draw(image).ellipse([50, 35, 110, 85], fill=(70, 40, 30))
    explanation = explain(Fallback(), image, META)
    assert explanation.method == "segmentation"
    mask = explanation.heatmap.astype(bool)
    assert mask.shape == (120, 160)
    assert mask[60, 80] and not mask[5, 5]
    drawn = np.asarray(explanation.overlay)
    assert (drawn == (0, 255, 255)).all(axis=2).any()


def test_unknown_kind_is_refused():
    class Other:
        kind = "standin"

    with pytest.raises(ExplanationUnavailable, match="standin"):
        explain(Other(), Image.new("RGB", (64, 48)), META)
