"""Inference runtimes: the batched views, the exports, the accuracy gate, the choice at load.

One tiny seeded version (EfficientNet-Lite0 at 64x48, random weights, all four views) registered on
the synthetic set; every test exports from it or from a deliberately perturbed copy of it.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from skinlesion.data.images import load_image
from skinlesion.data.metadata import MetadataEncoder
from skinlesion.data.readers import read_dataset
from skinlesion.data.splits import split_dataset
from skinlesion.data.transforms import VIEWS, Preprocessing, apply_view
from skinlesion.export import export_target, export_version, reference_rows
from skinlesion.model import runtime
from skinlesion.model.neural import NeuralClassifier, ViewsNet, backbone_outputs, build_network
from skinlesion.model.runtime import (ExportSettings, RuntimeFallbackWarning, export, export_key,
                                      select_runtime)
from skinlesion.model.threads import ThreadPolicy
from skinlesion.predict import Predictor
from skinlesion.register import register
from skinlesion.registry import load_version, read_card
from skinlesion.schema import METADATA_FIELDS, Metadata

EXPORTED = ("openvino", "onnxruntime")


def tiny_classifier(df, *, tta=VIEWS, seed: int = 0) -> NeuralClassifier:
    torch.manual_seed(seed)
    encoder = MetadataEncoder().fit(df.loc[:, list(METADATA_FIELDS)])
    net = build_network("efficientnet_lite0", inputs="image+metadata",
                        n_metadata=len(encoder.feature_names_), pretrained=False)
    with torch.no_grad():  # spread the answers, so decisions and classes differ between images
        net.fc.weight.mul_(200)
    config = {"architecture": "efficientnet_lite0", "inputs": "image+metadata",
              "backbone_config": {"drop_connect_rate": 0.2}, "meta_hidden": 32, "dropout": 0.3}
    return NeuralClassifier(net.eval(), config=config, preprocessing=Preprocessing(64, 48),
                            encoder=encoder, tta=tta, device="cpu", batch_size=8)


@pytest.fixture(scope="module")
def models_dir(synthetic_df, tmp_path_factory) -> Path:
    """A models folder with the tiny version ``tiny`` registered (threshold: median p_malignant)."""
    folder = tmp_path_factory.mktemp("models")
    clf = tiny_classifier(synthetic_df)
    split = split_dataset(synthetic_df, seed=0)
    val = synthetic_df[split == "val"]
    probs = clf.predict_proba([load_image(p) for p in val["path"]], val.loc[:, list(METADATA_FIELDS)])
    p_mal = probs[:, [0, 2, 3, 7]].sum(1)
    register(folder, clf, synthetic_df, split, threshold=float(np.median(p_mal)), val_probs=probs,
             data_name="synthetic", version_id="tiny", progress=False)
    return folder


@pytest.fixture(scope="module")
def exported(models_dir, synthetic_dir) -> dict:
    """Both runtimes exported and gated once on the version's validation images."""
    return {r.runtime: r for r in export_version(models_dir, "tiny", synthetic_dir)}


@pytest.fixture(scope="module")
def batch(synthetic_df):
    rows = synthetic_df.iloc[:6]
    return [load_image(p) for p in rows["path"]], rows.loc[:, list(METADATA_FIELDS)]


def sequential_logits(clf: NeuralClassifier, images, metadata) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The views one forward each (the way answers were computed before they were batched), and
    the texture statistics of the upright view alone."""
    net = clf._network()
    x, m = clf.preprocessing(images), clf._metadata(metadata, len(images))
    with torch.inference_mode():
        logits = sum(net.classify(net.embed(apply_view(x, v)), m) for v in clf.tta) / len(clf.tta)
        texture = backbone_outputs(net.backbone, x, len(x))[1]
        return logits.double().numpy(), net.embed(x).numpy(), texture.numpy()


def test_texture_statistics_are_channel_means_and_spreads_of_the_first_blocks(synthetic_df, batch):
    """After each of the first six blocks (EfficientNet-Lite0: 32, 16, 24, 24, 40, 40 channels),
    the per-channel mean and population standard deviation of the upright view."""
    clf = tiny_classifier(synthetic_df)
    net = clf._network()
    x = clf.preprocessing(batch[0])
    with torch.inference_mode():
        _, texture = backbone_outputs(net.backbone, x, len(x))
        first = net.backbone.blocks[0](x)
    assert texture.shape == (len(x), 2 * (32 + 16 + 24 + 24 + 40 + 40))
    np.testing.assert_allclose(texture[:, :32], first.mean(dim=(2, 3)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(texture[:, 32:64], first.std(dim=(2, 3), correction=0), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("tta", [VIEWS, ("hflip", "vflip")])
def test_batched_views_equal_the_sequential_answers(synthetic_df, batch, tta):
    clf = tiny_classifier(synthetic_df, tta=tta)
    logits, pooled, texture = sequential_logits(clf, *batch)
    probs, embedding, batched_texture = clf.predict_with_features(*batch)
    np.testing.assert_allclose(probs, clf._calibrated(logits), atol=1e-5)
    np.testing.assert_allclose(embedding, clf._project([pooled]), atol=1e-5)
    # the texture is the upright view's (first in the stack), even when the views leave it out
    np.testing.assert_allclose(batched_texture, texture, rtol=1e-4, atol=1e-5)
    assert np.ptp(texture, axis=0).max() > 0.01  # images differ in texture: the check has teeth
    assert np.ptp(probs, axis=0).max() > 0.05  # images get different answers: the check has teeth
    views_net = clf.views_net()
    assert views_net.stacked[0] == "identity" and len(views_net.stacked) == len(set(tta) | {"identity"})
    views_net.train()  # an exporter switching modes cannot turn dropout / drop-connect on
    assert not any(m.training for m in views_net.modules())


def test_views_net_needs_an_image_network(synthetic_df):
    net = build_network(None, inputs="metadata", n_metadata=14, pretrained=False)
    with pytest.raises(ValueError, match="metadata-only"):
        ViewsNet(net, VIEWS)


@pytest.mark.parametrize("name", EXPORTED)
def test_runtime_answers_equal_eager(models_dir, exported, batch, name):
    report = exported[name]
    assert report.passed, report.reason
    assert report.n_images > 0 and report.changed_decisions == 0 and report.max_abs_dp <= 1e-4
    version = load_version("tiny", models_dir, device="cpu")
    eager = version.classifier.predict_proba_and_embeddings(*batch)
    choice = select_runtime(version.classifier, "tiny", version.path, name)
    assert choice.runtime == name and choice.warning == ""
    version.classifier.use_engine(choice.engine)
    assert version.classifier.runtime == name
    probs, embedding = version.classifier.predict_proba_and_embeddings(*batch)
    np.testing.assert_allclose(probs, eager[0], atol=1e-4)
    np.testing.assert_allclose(embedding, eager[1], atol=1e-4)
    assert report.max_rel_texture is not None and report.max_rel_texture <= 1e-3
    eager_texture = runtime.answers_with_texture(version.classifier, None, *batch)[2]
    served_texture = version.classifier.predict_with_features(*batch)[2]  # the batching engine's too
    np.testing.assert_allclose(served_texture, eager_texture, rtol=1e-3, atol=1e-5)


def test_an_export_is_made_once_and_listed_on_the_card(models_dir, exported, synthetic_dir,
                                                       monkeypatch):
    calls = []
    monkeypatch.setattr(runtime, "write_export", lambda *a: calls.append(a))
    again = {r.runtime: r for r in export_version(models_dir, "tiny", synthetic_dir)}
    assert calls == [] and again == exported
    card = read_card(models_dir / "tiny")
    assert {e["runtime"] for e in card.exports if e["passed"]} == set(EXPORTED)


def test_export_key_follows_weights_and_settings(synthetic_df, monkeypatch):
    clf = tiny_classifier(synthetic_df)
    key = export_key(clf, "onnxruntime", ExportSettings())
    assert key == export_key(tiny_classifier(synthetic_df), "onnxruntime", ExportSettings())
    assert key != export_key(clf, "openvino", ExportSettings())
    assert key != export_key(clf, "onnxruntime", ExportSettings(opset=19))
    assert key != export_key(tiny_classifier(synthetic_df, seed=1), "onnxruntime", ExportSettings())
    # an export of the graph before the texture output is not loaded for the current graph
    monkeypatch.setattr(runtime, "OUTPUT_NAMES", ("logits", "pooled"))
    assert key != export_key(clf, "onnxruntime", ExportSettings())


def _perturbed_export(monkeypatch) -> list:
    """Make every export come from a copy of the network whose output bias is shifted."""
    made = []
    original = runtime.export_onnx

    def perturbed(classifier, path, settings):
        bad = copy.copy(classifier)
        bad.net = copy.deepcopy(classifier.net)
        with torch.no_grad():
            bad.net.fc.bias[0] += 0.05
        bad._inference = bad._engine = None
        made.append(path)
        return original(bad, path, settings)

    monkeypatch.setattr(runtime, "export_onnx", perturbed)
    return made


def test_the_gate_refuses_a_perturbed_export_and_the_version_serves_eager(
        models_dir, synthetic_dir, monkeypatch, tmp_path, batch):
    made = _perturbed_export(monkeypatch)
    version = load_version("tiny", models_dir, device="cpu")
    rows = reference_rows(version, models_dir, read_dataset(synthetic_dir), n=16)
    images = [load_image(p) for p in rows["path"]]
    settings = ExportSettings(opset=19)  # another key than the passed exports of the fixture
    report = export(export_target(version), "onnxruntime", images,
                    rows.loc[:, list(METADATA_FIELDS)], settings=settings)
    assert not report.passed and "max |Δp|" in report.reason and report.max_abs_dp > 1e-4
    folder = next(p for p in (models_dir / "tiny" / "exports").iterdir()
                  if p.name.startswith("onnxruntime-" + report.key[:16]))
    assert [p.name for p in folder.iterdir()] == ["gate.json"]  # the refused network is not kept
    # the refusal is kept: not exported again
    assert export(export_target(version), "onnxruntime", images,
                  rows.loc[:, list(METADATA_FIELDS)], settings=settings) == report
    assert len(made) == 1
    with pytest.warns(RuntimeFallbackWarning, match="refused by the accuracy gate.*max \\|Δp\\|"):
        choice = select_runtime(version.classifier, "tiny", version.path, "onnxruntime",
                                settings=settings)
    assert choice.runtime == "torch" and choice.engine is None
    with pytest.warns(RuntimeFallbackWarning, match="refused"):
        predictor = Predictor(version, runtime="onnxruntime", export_settings=settings)
    answer = predictor.predict(batch[0][0], Metadata.from_raw(50, "female", "posterior torso"))
    assert answer.runtime == "torch" and answer.device == "cpu"


class _ScaledTexture(torch.nn.Module):
    """A views network whose texture output is off by 1 % (logits and pooled features exact)."""

    def __init__(self, inner: ViewsNet):
        super().__init__()
        self.inner = inner
        self.eval()

    def forward(self, images, metadata):
        logits, pooled, texture = self.inner(images, metadata)
        return logits, pooled, texture * 1.01


def test_the_gate_refuses_an_export_whose_texture_is_off(models_dir, synthetic_dir, monkeypatch):
    original = runtime.export_onnx

    def perturbed(classifier, path, settings):
        bad = copy.copy(classifier)
        bad.views_net = lambda: _ScaledTexture(classifier.views_net())
        return original(bad, path, settings)

    monkeypatch.setattr(runtime, "export_onnx", perturbed)
    version = load_version("tiny", models_dir, device="cpu")
    rows = reference_rows(version, models_dir, read_dataset(synthetic_dir), n=8)
    report = export(export_target(version), "onnxruntime", [load_image(p) for p in rows["path"]],
                    rows.loc[:, list(METADATA_FIELDS)], settings=ExportSettings(opset=20))
    assert not report.passed and report.reason.startswith("texture statistics off by a relative")
    assert report.max_abs_dp <= 1e-4 and report.max_rel_texture > 5e-3


def test_a_runtime_not_exported_falls_back_to_eager_with_a_warning(synthetic_df, tmp_path):
    clf = tiny_classifier(synthetic_df, seed=2)
    with pytest.warns(RuntimeFallbackWarning, match="openvino: not exported.*skinlesion models export"):
        choice = select_runtime(clf, "v", tmp_path, "openvino")
    assert choice.runtime == "torch" and clf.runtime == "torch"
    with warnings.catch_warnings():  # auto and torch: eager, no warning (nothing was refused)
        warnings.simplefilter("error")
        assert select_runtime(clf, "v", tmp_path, "auto").runtime == "torch"
        assert select_runtime(clf, "v", tmp_path, "torch").runtime == "torch"
    with pytest.raises(ValueError, match="auto, openvino, onnxruntime, torch"):
        select_runtime(clf, "v", tmp_path, "tensorrt")


def test_auto_picks_the_fastest_gated_runtime(models_dir, exported, batch):
    version = load_version("tiny", models_dir, device="cpu")
    choice = select_runtime(version.classifier, "tiny", version.path, "auto")
    assert set(choice.timings_ms) == {"torch", *EXPORTED}
    assert choice.runtime == min(choice.timings_ms, key=choice.timings_ms.get)


def test_predictor_answers_record_the_runtime(models_dir, exported, batch):
    meta = Metadata.from_raw(50, "female", "posterior torso")
    eager = Predictor(load_version("tiny", models_dir, device="cpu")).predict(batch[0][0], meta)
    served = Predictor(load_version("tiny", models_dir, device="cpu"), runtime="openvino"
                       ).predict(batch[0][0], meta)
    assert eager.runtime == "torch" and eager.device == "cpu"
    assert served.runtime == "openvino" and served.device == "cpu/openvino"
    assert served.decision == eager.decision
    assert max(abs(served.probabilities[c] - eager.probabilities[c])
               for c in eager.probabilities) <= 1e-4


def test_auto_times_the_engines_in_turns_on_a_non_constant_image(synthetic_df):
    clf = tiny_classifier(synthetic_df)
    images, metadata = runtime.timing_inputs(clf)
    assert images.shape == (1, 3, 48, 64) and metadata.shape == (1, len(clf.encoder.feature_names_))
    assert float(images.std()) > 0.1  # noise, not a constant image a kernel may special-case
    assert torch.equal(images, runtime.timing_inputs(clf)[0])  # seeded
    calls = []

    class Recorder:
        def __init__(self, name, ms):
            self.name, self.ms = name, ms

        def __call__(self, images, metadata):
            calls.append(self.name)
            time.sleep(self.ms / 1000)
            return np.zeros((len(images), 8)), np.zeros((len(images), 4), np.float32)

    timings = runtime.time_engines({"slow": Recorder("slow", 30), "fast": Recorder("fast", 1)},
                                   clf, rounds=3)
    assert calls == ["slow", "fast"] * 4  # one warm-up each, then one forward each per round
    assert timings["fast"] < 15 <= 30 <= timings["slow"]
    with pytest.raises(ValueError, match="at least 1"):
        runtime.time_engines({}, clf, rounds=0)


def test_predictor_counts_forwards_and_the_images_they_carried(models_dir, exported, batch):
    from skinlesion.api.metrics import ApiMetrics

    predictor = Predictor(load_version("tiny", models_dir, device="cpu"), runtime="onnxruntime")
    meta = [Metadata.from_raw(50, "female", "posterior torso")] * 3
    predictor.predict_batch(batch[0][:3], meta)
    predictor.predict(batch[0][3], meta[0])
    assert predictor.batching() == (2, 4)
    metrics = ApiMetrics()
    metrics.watch_batching(lambda: {("tiny", "active"): predictor.batching()})
    text = metrics.render().decode()
    assert 'skinlesion_inference_forwards_total{model_role="active",model_version="tiny"} 2.0' in text
    assert 'skinlesion_inference_images_total{model_role="active",model_version="tiny"} 4.0' in text


def test_thread_policy():
    env = {"OMP_NUM_THREADS": "3"}
    policy = ThreadPolicy.for_machine(env)
    assert policy == ThreadPolicy(threads=3, passive=True)
    applied = policy.apply(env)
    assert applied["OMP_WAIT_POLICY"] == "PASSIVE" and applied["OMP_NUM_THREADS"] == "3"
    assert ThreadPolicy.for_machine({"OMP_WAIT_POLICY": "active"}).passive is False
    assert ThreadPolicy(2).apply({"OMP_WAIT_POLICY": "ACTIVE"})["OMP_WAIT_POLICY"] == "ACTIVE"
    assert ThreadPolicy(2).onnxruntime_options()["session.intra_op.allow_spinning"] == "0"
    assert ThreadPolicy(2).openvino_config()["INFERENCE_NUM_THREADS"] == "2"
    with pytest.raises(RuntimeError, match="before torch"):
        ThreadPolicy(2).apply()  # torch is loaded in the test process
    with pytest.raises(ValueError, match="at least 1"):
        ThreadPolicy(0)
    cores = ThreadPolicy.for_machine({}).threads
    assert ThreadPolicy.for_machine({}, processes=cores * 2).threads == 1  # never below one
    assert ThreadPolicy.for_machine({"OMP_NUM_THREADS": "5"}, processes=4).threads == 5


class _GatedEngine:
    """A stand-in engine: logits = per-image sums of the inputs; its first forward waits for
    ``release``; records the batch size of every forward."""

    name = "stand-in"

    def __init__(self):
        self.entered, self.release, self.sizes = threading.Event(), threading.Event(), []

    def __call__(self, images, metadata):
        self.entered.set()
        if not self.sizes:
            self.release.wait(30)
        self.sizes.append(len(images))
        if images.shape[0] and images[0, 0, 0, 0] < -1e6:
            raise ValueError("poisoned input")
        total = images.flatten(1).sum(1, keepdim=True) + metadata.sum(1, keepdim=True)
        return total.double().repeat(1, 8).numpy(), total.float().numpy(), (2 * total).float().numpy()


def test_concurrent_calls_share_one_forward_and_get_their_own_answers():
    inner = _GatedEngine()
    engine = runtime.BatchingEngine(inner, max_images=16)
    inputs = [(torch.full((1, 3, 2, 2), float(i)), torch.full((1, 4), float(i))) for i in range(4)]
    results = {}

    def call(i):
        results[i] = engine(*inputs[i])

    first = threading.Thread(target=call, args=(0,))
    first.start()
    assert inner.entered.wait(30)  # the first call runs (alone) and waits in the engine
    others = [threading.Thread(target=call, args=(i,)) for i in (1, 2, 3)]
    for t in others:
        t.start()
    while engine.queued < 3:  # the others queue behind it
        time.sleep(0.001)
    inner.release.set()
    for t in [first, *others]:
        t.join(30)
    assert inner.sizes == [1, 3]
    assert (engine.forwards, engine.images) == (2, 4)  # what /metrics reports as batching
    for i, (images, metadata) in enumerate(inputs):
        assert results[i][0].shape == (1, 8) and results[i][0][0, 0] == 12 * i + 4 * i
        assert results[i][2][0, 0] == 2 * (12 * i + 4 * i)  # the texture output split back too
    poisoned = torch.full((1, 3, 2, 2), -1e7)
    with pytest.raises(ValueError, match="poisoned"):
        engine(poisoned, torch.zeros(1, 4))
    assert engine(*inputs[2])[0][0, 0] == 32  # an error does not wedge the engine


def test_served_classifiers_run_behind_the_batching_engine(models_dir, exported, batch):
    version = load_version("tiny", models_dir, device="cpu")
    eager = version.classifier.predict_proba(*batch)
    choice = runtime.use_runtime(version.classifier, "tiny", version.path, "torch")
    assert choice.runtime == "torch" and isinstance(version.classifier.engine(),
                                                    runtime.BatchingEngine)
    # four views: concurrent calls share a forward up to 2 images (8 view images)
    assert version.classifier.engine().max_images == runtime.MAX_STACKED_VIEWS // 4 == 2
    assert version.classifier.runtime == "torch"
    np.testing.assert_allclose(version.classifier.predict_proba(*batch), eager, atol=1e-6)


def test_cli_models_export_reports_each_gate(models_dir, exported, synthetic_dir):
    from typer.testing import CliRunner

    from skinlesion.cli import app

    result = CliRunner().invoke(app, ["models", "export", "tiny", "--data", str(synthetic_dir),
                                      "--models-dir", str(models_dir)])
    assert result.exit_code == 0, result.output
    assert "openvino: passed on" in result.output and "onnxruntime: passed on" in result.output
    bad = CliRunner().invoke(app, ["models", "export", "tiny", "--data", str(synthetic_dir),
                                   "--models-dir", str(models_dir), "--runtime", "tensorrt"])
    assert bad.exit_code != 0 and "openvino, onnxruntime, all" in bad.output


def test_serve_applies_the_thread_policy_before_torch_loads():
    """``skinlesion serve`` in a fresh process (uvicorn replaced by a probe): the policy is in the
    environment when the server would start, and no threaded library was loaded before it."""
    code = ("import os, sys, uvicorn; "
            "uvicorn.run = lambda *a, **k: print(os.environ['OMP_WAIT_POLICY'], "
            "os.environ['OMP_NUM_THREADS'], k['workers'], "
            "sorted({'torch', 'openvino', 'onnxruntime'} & set(sys.modules))); "
            "from skinlesion.cli import app; app(['serve', '--workers', '2'], standalone_mode=False)")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split(maxsplit=3)
    assert out[0] == "PASSIVE" and int(out[1]) == max(1, os.cpu_count() // 2) and out[2] == "2"
    assert out[3].strip() == "[]"


def test_the_gate_images_must_be_the_versions_own(models_dir, synthetic_df, tmp_path):
    from PIL import Image

    from skinlesion.errors import DataError

    version = load_version("tiny", models_dir, device="cpu")
    with pytest.raises(DataError, match="none of version 'tiny'"):
        reference_rows(version, models_dir, synthetic_df.assign(image="X" + synthetic_df["image"]))
    other = tmp_path / "other.jpg"
    Image.new("RGB", (96, 72), "white").save(other)
    with pytest.raises(DataError, match="differ from the ones"):
        reference_rows(version, models_dir, synthetic_df.assign(path=str(other)))


def test_a_metadata_only_version_answers_in_torch(synthetic_df, tmp_path):
    encoder = MetadataEncoder().fit(synthetic_df.loc[:, list(METADATA_FIELDS)])
    net = build_network(None, inputs="metadata", n_metadata=len(encoder.feature_names_),
                        pretrained=False)
    clf = NeuralClassifier(net.eval(), config={"inputs": "metadata"}, preprocessing=Preprocessing(),
                           encoder=encoder, device="cpu")
    assert select_runtime(clf, "m", tmp_path, "auto").runtime == "torch"
    with pytest.warns(RuntimeFallbackWarning, match="no image network"):
        assert select_runtime(clf, "m", tmp_path, "openvino").runtime == "torch"
