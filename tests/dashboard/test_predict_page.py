"""The Predict page: an image with its metadata answered by the serving model, logged as 'dashboard',
with the probabilities, p_malignant against the threshold, the decision and where the model looked."""

from __future__ import annotations

import json

import pandas as pd
import torch
from torch import nn

from skinlesion import registry
from skinlesion.data.metadata import MetadataEncoder
from skinlesion.data.transforms import LITE_MEAN, LITE_STD, Preprocessing
from skinlesion.model import available_models, register_backbone
from skinlesion.model.backbones import Backbone
from skinlesion.model.neural import NeuralClassifier, build_network
from skinlesion.schema import CLASSES
from skinlesion.store import ServingRoute
from tests.dashboard.clinic import QUEUE_LABEL, assert_clean, clinic, page  # noqa: F401 (fixture)
from tests.standins import BrightnessClassifier

TINY = "tiny_cam_test"
if TINY not in available_models():
    @register_backbone(TINY)
    def _tiny(*, pretrained: bool, weights_path=None) -> Backbone:
        blocks = [nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU()),
                  nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())]
        return Backbone(TINY, blocks, num_features=16, mean=LITE_MEAN, std=LITE_STD, default_cut=1,
                        config={})


def predict_queued_case(role: str = "clinician"):
    at = page("predict", role)
    at.radio(key="predict_source").set_value(QUEUE_LABEL).run()
    return at.button(key="predict_run").click().run()


def test_a_queued_case_is_answered_and_logged_from_the_dashboard(clinic):
    store = clinic["store"]
    at = predict_queued_case()
    assert_clean(at)
    logged = store.query_predictions(source="dashboard")
    assert len(logged) == 1
    assert logged["model_version"].iloc[0] == "v2"
    assert logged["p_malignant"].iloc[0] > 0.4  # the uncertain case (grey 128) is queued first
    answer = [m.value for m in at.markdown if "Probability of malignancy" in m.value]
    assert answer and "threshold 50.0%" in answer[0]
    assert any(logged["decision"].iloc[0].upper() in box.value
               for box in [*at.error, *at.warning, *at.success])
    assert len(at.get("plotly_chart")) == 2  # the gauge and the class probabilities
    assert any(m.value.startswith("#### Diagnosis: ") for m in at.markdown)  # the class named
    assert any("standin" in i.value for i in at.info)  # no saliency for the stand-in kind


def test_a_neural_model_shows_its_grad_cam(clinic):
    torch.manual_seed(0)
    encoder = MetadataEncoder().fit(pd.DataFrame({"age_approx": [50.0], "sex": ["male"],
                                                  "anatom_site_general": ["head/neck"]}))
    config = {"architecture": TINY, "inputs": "image+metadata", "meta_hidden": 8, "dropout": 0.0}
    net = build_network(TINY, inputs="image+metadata", n_metadata=14, pretrained=False,
                        meta_hidden=8, dropout=0.0)
    classifier = NeuralClassifier(net.eval(), config=config, preprocessing=Preprocessing(64, 48),
                                  encoder=encoder, device="cpu")
    card = registry.read_card(clinic["home"] / "models" / "v2")
    registry.save_version(clinic["home"] / "models", classifier, threshold=0.3, data=card.data,
                          manifest=registry.read_manifest(clinic["home"] / "models", "v2"),
                          version_id="net-1")
    clinic["store"].set_route(ServingRoute(active_version="net-1"), actor="t", role="ml_lead",
                              reason="test")
    at = predict_queued_case()
    assert_clean(at)
    captions = [c for image in at.get("image") for c in image.captions]
    assert any("Grad-CAM" in c for c in captions), captions
    assert clinic["store"].query_predictions(source="dashboard")["model_version"].tolist() == ["net-1"]


def test_an_unreadable_upload_is_named_and_nothing_is_logged(clinic):
    at = page("predict", "clinician")
    at.file_uploader(key="predict_upload").set_value(("lesion.png", b"not an image", "image/png"))
    at = at.run()
    assert not at.exception
    assert any("uploaded file" in e.value for e in at.error)
    assert at.button(key="predict_run").disabled
    assert clinic["store"].count_predictions(source="dashboard") == 0


def test_a_viewer_cannot_open_the_predict_page(clinic):
    at = page("predict", "viewer")
    assert any("clinician" in e.value for e in at.error)
    assert not at.button


def test_an_answer_from_a_demo_model_says_it_was_trained_on_synthetic_data(clinic):
    models = clinic["home"] / "models"
    manifest = registry.read_manifest(models, "v2")
    registry.save_version(models, BrightnessClassifier(), threshold=0.5, manifest=manifest,
                          data=registry.data_info(manifest, name="synthetic dermoscopy (demo)"),
                          version_id="demo-1")
    clinic["store"].set_route(ServingRoute(active_version="demo-1"), actor="t", role="ml_lead",
                              reason="demo")
    at = predict_queued_case()
    assert not at.exception
    assert any("demo model trained on synthetic data" in e.value for e in at.error)


def test_a_diagnosis_other_than_the_largest_bar_says_why(clinic):
    card_file = clinic["home"] / "models" / "v2" / "card.json"
    card = json.loads(card_file.read_text())
    prior = {c: 0.9 if c == "NV" else 0.1 / (len(CLASSES) - 1) for c in CLASSES}
    card["diagnosis_rule"] = {"rule": "balanced", "class_prior": prior}
    card_file.write_text(json.dumps(card))
    at = predict_queued_case()  # grey 128: NV 50.2 %, MEL 49.8 %; weighed by the prior, MEL is named
    assert_clean(at)
    assert any(m.value.startswith("#### Diagnosis: melanoma (MEL)") for m in at.markdown), \
        [m.value for m in at.markdown]
    assert any("most probable class is melanocytic nevus (50%)" in c.value for c in at.caption), \
        [c.value for c in at.caption]
