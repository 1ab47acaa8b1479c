"""The neural classifier: preprocessing + :class:`FusionNet` + temperature (+ test-time views).

:class:`NeuralClassifier` implements the Classifier protocol (skinlesion/model/base.py): it turns PIL
images and a metadata table into calibrated class probabilities, saves itself as ``weights.pt`` (a
state_dict) plus the card's ``model`` section, and is rebuilt from those two alone.

The test-time views run as one batched forward (:class:`ViewsNet`: the views of ``n`` images are
stacked into one batch of ``views x n``); the same forward gives the upright view's texture
statistics (:func:`texture_statistics` after each of the first :data:`TEXTURE_BLOCKS` backbone
blocks), which the OOD gate's texture check reads (skinlesion.model.ood). The network itself runs in an :class:`InferenceEngine`:
eager torch (:class:`TorchEngine`, the default) or an exported runtime (skinlesion.model.runtime)
that the classifier is handed with :meth:`NeuralClassifier.use_engine`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Protocol

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
#: Backbone blocks after which the upright view's texture statistics are taken (the OOD gate's
#: texture check): EfficientNet-Lite0's stem and first five blocks (32, 16, 24, 24, 40 and 40
#: channels: 352 statistics). A backbone with fewer blocks gives the statistics of all it has.
TEXTURE_BLOCKS = 6


def texture_statistics(x: torch.Tensor) -> torch.Tensor:
    """Per-channel mean and standard deviation over the positions of feature maps (n, C, H, W):
    (n, 2C), the means first (population standard deviation, as plain reductions so that every
    runtime's export computes the same)."""
    mean = x.mean(dim=(2, 3))
    spread = (x - mean[:, :, None, None]).square().mean(dim=(2, 3))
    return torch.cat([mean, spread.sqrt()], dim=1)


def backbone_outputs(backbone: torch.nn.Module, images: torch.Tensor, upright: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The pooled features of every image of ``images`` (a batch through ``backbone``'s blocks)
    and the :func:`texture_statistics` of its first ``upright`` images after each of the first
    :data:`TEXTURE_BLOCKS` blocks (n_upright, sum of 2 x their channels): one pass, a few
    reductions over activations the forward computes anyway."""
    texture = []
    x = images
    for i, block in enumerate(backbone.blocks):
        x = block(x)
        if i < TEXTURE_BLOCKS:
            texture.append(texture_statistics(x[:upright]))
    return x.mean(dim=(2, 3)), torch.cat(texture, dim=1)


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


def batch_views(views: Sequence[str]) -> tuple[str, ...]:
    """The views stacked into one forward: the upright view first (its pooled features are the
    monitoring embedding, also when the test-time ``views`` leave it out), then the others."""
    return ("identity",) + tuple(v for v in check_views(views) if v != "identity")


class ViewsNet(torch.nn.Module):
    """A FusionNet with an image branch over its test-time views, in one batched forward.

    ``forward(images (n, 3, H, W), metadata (n, m)) -> (logits (n, 8), upright pooled (n, F),
    upright texture (n, T))``: the logits averaged over ``views``, the pooled features of the
    upright view and its texture statistics (:func:`backbone_outputs`). The views of the batch are
    stacked (``k x n`` images, view-major, the upright view first) and run through the backbone
    once; the same module is what the runtimes export, so every engine computes the same graph."""

    def __init__(self, net: FusionNet, views: Sequence[str]):
        super().__init__()
        if not net.uses_image:
            raise ValueError("a metadata-only network has no views to batch")
        self.net, self.views = net, tuple(views)
        self.stacked = batch_views(views)
        #: the averaged views start here in the stack (1: the upright view is there only for the
        #: monitoring embedding)
        self.first = 0 if "identity" in self.views else 1
        self.eval()  # inference only: a module in training mode would run dropout, drop-connect

    def train(self, mode: bool = True) -> ViewsNet:
        """Stays in eval mode whatever is asked (exporters switch modes around tracing)."""
        return super().train(False)

    def forward(self, images: torch.Tensor, metadata: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        k = len(self.stacked)
        pooled, texture = backbone_outputs(
            self.net.backbone, torch.cat([apply_view(images, v) for v in self.stacked]), images.shape[0])
        logits = self.net.classify(pooled, metadata.repeat(k, 1))
        per_view = logits.reshape(k, -1, logits.shape[-1])[self.first:]
        return per_view.mean(dim=0), pooled.reshape(k, -1, pooled.shape[-1])[0], texture


class InferenceEngine(Protocol):
    """What runs the network of a classifier with an image branch: normalised images (n, 3, H, W)
    and encoded metadata (n, m), float32 CPU tensors, to the logits averaged over the test-time
    views (n, 8), the upright view's pooled features (n, F) and its texture statistics (n, T), as
    numpy arrays (a :class:`ViewsNet` forward). ``name`` is the runtime recorded with every
    answer."""

    name: str

    def __call__(self, images: torch.Tensor, metadata: torch.Tensor
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ...


class TorchEngine:
    """Eager torch: the :class:`ViewsNet` on ``device`` (the reference every runtime is gated
    against; also the one for CUDA)."""

    name = "torch"

    def __init__(self, views_net: ViewsNet, device: torch.device):
        self.views_net, self.device = views_net.eval().to(device), device

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, metadata: torch.Tensor
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        logits, pooled, texture = self.views_net(images.to(self.device), metadata.to(self.device))
        return logits.double().cpu().numpy(), pooled.float().cpu().numpy(), texture.float().cpu().numpy()


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
        self._engine: InferenceEngine | None = None
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

    def views_net(self) -> ViewsNet:
        """The inference network over the test-time views (:class:`ViewsNet`) on the device."""
        return ViewsNet(self._network(), self.tta)

    def engine(self) -> InferenceEngine:
        """What runs the network: the engine handed over by :meth:`use_engine`, else eager torch."""
        if self._engine is None:
            self._engine = TorchEngine(self.views_net(), self.device)
        return self._engine

    def use_engine(self, engine: InferenceEngine | None) -> None:
        """Run the network in ``engine`` from now on (None: back to eager torch). The caller
        vouches that it computes what :meth:`views_net` computes (skinlesion.model.runtime gates
        every export against eager before handing it over)."""
        if engine is not None and not self.net.uses_image:
            raise ValueError("a metadata-only model runs in torch only (there is no image network "
                             "to export)")
        self._engine = engine

    @property
    def runtime(self) -> str:
        """The runtime answering: ``torch`` (eager) or the exported engine's name."""
        return self._engine.name if self._engine is not None else "torch"

    def _metadata(self, metadata: pd.DataFrame, n: int) -> torch.Tensor:
        if len(metadata) != n:
            raise ValueError(f"got {n} images but {len(metadata)} metadata rows; pass one row per "
                             "image (columns age_approx, sex, anatom_site_general)")
        return torch.from_numpy(self.encoder.transform(metadata.reset_index(drop=True)))

    @torch.inference_mode()
    def network_outputs(self, images: Sequence[Image.Image], metadata: pd.DataFrame
                        ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Uncalibrated logits (n, 8), averaged over the test-time views, the monitoring
        embeddings of the upright view (:meth:`monitoring_embed`) and its texture statistics
        (:func:`backbone_outputs`; both None without an image branch), from one batched forward
        per ``batch_size`` view images (the views of ``batch_size / views`` images together,
        :class:`ViewsNet`): the upright view's activations are reused, so monitoring and the OOD
        gate cost no extra pass."""
        meta = self._metadata(metadata, len(images))
        if not self.net.uses_image:
            net = self._network()
            return np.concatenate([net(None, meta[s:s + self.batch_size].to(self.device))
                                   .double().cpu().numpy()
                                   for s in range(0, len(images), self.batch_size)]
                                  or [np.zeros((0, len(CLASSES)))]), None, None
        engine = self.engine()
        step = max(1, self.batch_size // len(batch_views(self.tta)))  # views count in the batch
        logits, pooled, texture = [], [], []
        for start in range(0, len(images), step):
            out = engine(self.preprocessing(images[start:start + step]), meta[start:start + step])
            logits.append(np.asarray(out[0], dtype=np.float64))
            pooled.append(np.asarray(out[1], dtype=np.float32))
            texture.append(np.asarray(out[2], dtype=np.float32))
        if not logits:
            return np.zeros((0, len(CLASSES))), self._project([]), np.zeros((0, 0), np.float32)
        return np.concatenate(logits), self._project(pooled), np.concatenate(texture)

    def predict_logits(self, images: Sequence[Image.Image], metadata: pd.DataFrame) -> np.ndarray:
        """Uncalibrated logits (n, 8), averaged over the test-time views."""
        return self.network_outputs(images, metadata)[0]

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
        probs, embeddings, _ = self.predict_with_features(images, metadata)
        return probs, embeddings

    def predict_with_features(self, images: Sequence[Image.Image], metadata: pd.DataFrame
                              ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """:meth:`predict_proba`, the monitoring embeddings and the texture statistics, in one set
        of forward passes (:meth:`network_outputs`)."""
        logits, embeddings, texture = self.network_outputs(images, metadata)
        return self._calibrated(logits), embeddings, texture

    def monitoring_embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """The image embeddings logged with each answer for drift monitoring (n,
        ``min(MONITORING_DIM, num_features)``): the upright view's pooled backbone features through
        a fixed Gaussian random projection (:func:`monitoring_projection`)."""
        return self.upright_features(images)[0]

    @torch.inference_mode()
    def upright_features(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """The monitoring embeddings (:meth:`monitoring_embed`) and the texture statistics
        (:func:`backbone_outputs`) of the upright view of ``images``, in one eager pass of that
        view alone (what registration fits the OOD gate on)."""
        net = self._network()
        if not net.uses_image:
            raise ValueError("a metadata-only model has no image embedding")
        pooled, texture = [], []
        for s in range(0, len(images), self.batch_size):
            batch = self.preprocessing(images[s:s + self.batch_size]).to(self.device)
            p, t = backbone_outputs(net.backbone, batch, len(batch))
            pooled.append(p.float().cpu().numpy())
            texture.append(t.float().cpu().numpy())
        return self._project(pooled), (np.concatenate(texture) if texture else np.zeros((0, 0), np.float32))

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
