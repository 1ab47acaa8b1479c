"""The neural classifier: preprocessing + :class:`FusionNet` + temperature (+ test-time views).

:class:`NeuralClassifier` implements the Classifier protocol (skinlesion/model/base.py): it turns PIL
images and a metadata table into calibrated class probabilities, saves itself as ``weights.pt`` (a
state_dict) plus the card's ``model`` section, and is rebuilt from those two alone.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.random_projection import GaussianRandomProjection

from skinlesion.data.metadata import MetadataEncoder
from skinlesion.data.transforms import Preprocessing, apply_view, check_views
from skinlesion.model.backbones import create_model
from skinlesion.model.fusion import FusionNet
from skinlesion.schema import CLASSES

WEIGHTS_FILE = "weights.pt"
#: Length of the image embedding logged with every answer for drift monitoring (128 bytes a row,
#: where the pooled features would take kilobytes).
MONITORING_DIM = 32


def monitoring_projection(num_features: int, dim: int = MONITORING_DIM) -> GaussianRandomProjection:
    """The fixed projection of pooled backbone features (``num_features``) to the logged monitoring
    embedding: a seeded Gaussian random projection, which keeps distances between embeddings
    approximately (Johnson-Lindenstrauss), so a shift of the pooled features shows in the logged
    components. It depends on ``num_features`` alone, so reference and production embeddings of
    any version of a backbone agree without storing it."""
    return GaussianRandomProjection(n_components=min(dim, num_features), random_state=0).fit(
        np.zeros((1, num_features), dtype=np.float32))


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cpu``/``cuda`` as asked (cuda must exist)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use auto or cpu")
    return torch.device(device)


def build_network(architecture: str | None, *, inputs: str, n_metadata: int, pretrained: bool,
                  backbone_config: dict | None = None, meta_hidden: int = 32,
                  dropout: float = 0.3, head_hidden: int = 0,
                  weights_path: str | Path | None = None) -> FusionNet:
    """The FusionNet for ``inputs`` (no backbone when it is ``metadata``)."""
    backbone = None
    if inputs != "metadata":
        if architecture is None:
            raise ValueError(f"inputs={inputs!r} needs a backbone architecture")
        backbone = create_model(architecture, pretrained=pretrained, weights_path=weights_path,
                                **(backbone_config or {}))
    return FusionNet(backbone, n_metadata=n_metadata, n_classes=len(CLASSES), inputs=inputs,
                     meta_hidden=meta_hidden, dropout=dropout, head_hidden=head_hidden)


def freeze_trunk(net: FusionNet, cut: int) -> None:
    """Freeze the first ``cut`` backbone blocks (parameters and BatchNorm statistics)."""
    if net.backbone is None:
        return
    for block in net.backbone.blocks[:cut]:
        block.eval()
        for p in block.parameters():
            p.requires_grad_(False)


def parameter_counts(net: torch.nn.Module) -> dict[str, int]:
    return {"total": sum(p.numel() for p in net.parameters()),
            "trainable": sum(p.numel() for p in net.parameters() if p.requires_grad)}


def has_monitoring_embedding(classifier: object) -> bool:
    """Whether ``classifier`` logs a monitoring embedding with its answers (a neural version with
    an image branch; not the rule-based fallback or a metadata-only model)."""
    return isinstance(classifier, NeuralClassifier) and classifier.net.uses_image


class NeuralClassifier:
    """A trained FusionNet ready to serve.

    ``config`` holds what rebuilds the network (architecture, inputs, backbone_config, meta_hidden,
    dropout, head_hidden (absent from versions saved before it existed: 0), cut); ``tta`` the
    orientation views whose logits are averaged (one = no TTA)."""

    kind: ClassVar[str] = "neural"

    def __init__(self, net: FusionNet, *, config: dict, preprocessing: Preprocessing,
                 encoder: MetadataEncoder, temperature: float = 1.0,
                 tta: Sequence[str] = ("identity",), device: str = "auto", batch_size: int = 32):
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.net, self.config, self.preprocessing = net, dict(config), preprocessing
        self.encoder, self.temperature, self.tta = encoder, float(temperature), check_views(tta)
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self._inference: FusionNet | None = None
        self._projection: GaussianRandomProjection | None = None

    def _network(self) -> FusionNet:
        """The network in eval mode on the device, BatchNorm folded (built once; same outputs)."""
        if self._inference is None:
            net = self.net.eval()
            if net.backbone is not None:
                net = copy.deepcopy(net)
                net.backbone = self.net.backbone.folded()
            self._inference = net.eval().to(self.device)
        return self._inference

    def _metadata(self, metadata: pd.DataFrame, n: int) -> torch.Tensor:
        if len(metadata) != n:
            raise ValueError(f"got {n} images but {len(metadata)} metadata rows; pass one row per "
                             "image (columns age_approx, sex, anatom_site_general)")
        return torch.from_numpy(self.encoder.transform(metadata.reset_index(drop=True)))

    @torch.inference_mode()
    def logits_and_embeddings(self, images: Sequence[Image.Image],
                              metadata: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        """Uncalibrated logits (n, 8), averaged over the test-time views, and the monitoring
        embeddings of the upright view (:meth:`monitoring_embed`; None without an image branch),
        from the same forward passes: the upright view's pooled features are reused, so
        monitoring costs no extra pass unless the test-time views leave the upright one out."""
        net = self._network()
        meta = self._metadata(metadata, len(images))
        out = np.zeros((len(images), len(CLASSES)), dtype=np.float64)
        pooled: list[np.ndarray] = []
        for start in range(0, len(images), self.batch_size):
            m = meta[start:start + self.batch_size].to(self.device)
            if not net.uses_image:
                out[start:start + len(m)] = net(None, m).double().cpu().numpy()
                continue
            x = self.preprocessing(images[start:start + self.batch_size]).to(self.device)
            views = {v: net.embed(apply_view(x, v)) for v in self.tta}
            logits = sum(net.classify(e, m) for e in views.values()) / len(views)
            out[start:start + len(m)] = logits.double().cpu().numpy()
            upright = views["identity"] if "identity" in views else net.embed(x)
            pooled.append(upright.float().cpu().numpy())
        return out, (self._project(pooled) if net.uses_image else None)

    def predict_logits(self, images: Sequence[Image.Image], metadata: pd.DataFrame) -> np.ndarray:
        """Uncalibrated logits (n, 8), averaged over the test-time views."""
        return self.logits_and_embeddings(images, metadata)[0]

    def _calibrated(self, logits: np.ndarray) -> np.ndarray:
        z = logits / self.temperature
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def predict_proba(self, images: Sequence[Image.Image], metadata: pd.DataFrame) -> np.ndarray:
        """Calibrated probabilities (n, 8) in CLASSES order: softmax(mean view logits / T)."""
        return self._calibrated(self.predict_logits(images, metadata))

    def predict_proba_and_embeddings(self, images: Sequence[Image.Image], metadata: pd.DataFrame
                                     ) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`predict_proba` and the monitoring embeddings, in one set of forward passes."""
        logits, embeddings = self.logits_and_embeddings(images, metadata)
        return self._calibrated(logits), embeddings

    @torch.inference_mode()
    def monitoring_embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """The image embeddings logged with each answer for drift monitoring (n,
        ``min(MONITORING_DIM, num_features)``): the upright view's pooled backbone features through
        a fixed Gaussian random projection (:func:`monitoring_projection`)."""
        net = self._network()
        if not net.uses_image:
            raise ValueError("a metadata-only model has no image embedding")
        return self._project([net.embed(self.preprocessing(images[s:s + self.batch_size])
                                        .to(self.device)).float().cpu().numpy()
                              for s in range(0, len(images), self.batch_size)])

    def _project(self, pooled: list[np.ndarray]) -> np.ndarray:
        """Batches of pooled upright-view features (num_features wide; none for no image) as one
        array of monitoring embeddings."""
        num_features = self.net.backbone.num_features
        if self._projection is None:
            self._projection = monitoring_projection(num_features)
        features = np.concatenate(pooled) if pooled else np.zeros((0, num_features), np.float32)
        return self._projection.transform(features).astype(np.float32)

    def save(self, directory: Path) -> dict:
        """Write ``weights.pt`` (state_dict) into ``directory``; return the card's model section."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.net.state_dict().items()}
        torch.save(state, directory / WEIGHTS_FILE)
        return {
            "architecture": self.config.get("architecture") or "metadata_mlp",
            "config": self.config,
            "classes": list(CLASSES),
            "preprocessing": self.preprocessing.to_dict(),
            "metadata_encoder": self.encoder.get_state(),
            "temperature": self.temperature,
            "tta": list(self.tta),
            "parameters": parameter_counts(self.net),
            "summary": self.net.summary(),
            "weights_file": WEIGHTS_FILE,
        }

    @classmethod
    def load(cls, directory: Path, model_section: dict) -> NeuralClassifier:
        """Rebuild from ``weights.pt`` and the card's model section (optionally with ``device``)."""
        if list(model_section["classes"]) != list(CLASSES):
            raise ValueError(f"the version's classes {model_section['classes']} differ from "
                             f"{list(CLASSES)}; it was made for another label set")
        config = model_section["config"]
        encoder = MetadataEncoder.from_state(model_section["metadata_encoder"])
        net = build_network(config.get("architecture"), inputs=config["inputs"],
                            n_metadata=len(encoder.feature_names_), pretrained=False,
                            backbone_config=config.get("backbone_config"),
                            meta_hidden=config["meta_hidden"], dropout=config["dropout"],
                            head_hidden=config.get("head_hidden", 0))
        state = torch.load(Path(directory) / model_section.get("weights_file", WEIGHTS_FILE),
                           map_location="cpu", weights_only=True)
        net.load_state_dict(state)
        freeze_trunk(net, config.get("cut", 0))
        return cls(net.eval(), config=config,
                   preprocessing=Preprocessing.from_dict(model_section["preprocessing"]),
                   encoder=encoder, temperature=model_section["temperature"],
                   tta=model_section["tta"], device=model_section.get("device", "auto"))
