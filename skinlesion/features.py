"""A network's image inputs and logits for dataset rows: frozen-backbone outputs read from (or added
to) the on-disk activation cache (:class:`FeatureSource`: trunk activations at a cut point for
fine-tuning, pooled embeddings for head training, per orientation view), or images to augment
online, and the logits averaged over the test-time views (:func:`network_logits`)."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from skinlesion.cache import ActivationCache
from skinlesion.data.images import file_sha256, load_image
from skinlesion.data.transforms import Preprocessing, apply_view
from skinlesion.model.backbones import Backbone
from skinlesion.model.fusion import FusionNet
from skinlesion.schema import CLASSES, METADATA_FIELDS
from skinlesion.train_config import TrainConfig


def weights_id(blocks: Sequence[torch.nn.Module]) -> str:
    """Fingerprint of the frozen blocks' weights (so a cache entry never outlives its weights)."""
    h = hashlib.sha256()
    for block in blocks:
        for name, t in block.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class FeatureSource:
    """Frozen-backbone outputs for dataset rows, via the on-disk cache: trunk activations at a cut
    point (finetune) or pooled embeddings (head), per orientation view."""

    def __init__(self, backbone: Backbone, preprocessing: Preprocessing, cache_dir: Path, *,
                 device: torch.device, batch_size: int = 32, progress: bool = True):
        self.backbone, self.preprocessing, self.device = backbone, preprocessing, device
        self.cache = ActivationCache(cache_dir)
        self.batch_size, self.progress = batch_size, progress
        self._folded: dict[int | None, Backbone] = {}
        self._shas: dict[str, str] = {}

    def shas(self, df: pd.DataFrame) -> list[str]:
        out = []
        for path in df["path"].astype(str):
            if path not in self._shas:
                self._shas[path] = file_sha256(path)
            out.append(self._shas[path])
        return out

    def _trunk(self, stop: int | None) -> Backbone:
        if stop not in self._folded:
            self._folded[stop] = self.backbone.folded(stop).to(self.device)
        return self._folded[stop]

    def _spec(self, what: str, cut: int, view: str) -> dict:
        return {"what": what, "backbone": self.backbone.name, "cut": cut, "view": view,
                "weights": weights_id(self.backbone.blocks[:cut] if what == "trunk"
                                       else self.backbone.blocks),
                "backbone_config": self.backbone.config,
                "preprocessing": self.preprocessing.to_dict()}

    @torch.inference_mode()
    def trunk(self, df: pd.DataFrame, view: str, cut: int) -> np.ndarray:
        """Output of backbone blocks [:cut] for each row's image in ``view``: float16 (n, C, h, w)."""
        paths = df["path"].astype(str).tolist()
        trunk = self._trunk(cut)

        def compute(idx: list[int]) -> np.ndarray:
            images = [load_image(paths[i]) for i in idx]
            x = apply_view(self.preprocessing(images).to(self.device), view)
            return trunk(x).float().cpu().numpy()

        return self.cache.get(self._spec("trunk", cut, view), self.shas(df), compute,
                              batch_size=self.batch_size, desc=f"{self.backbone.name} blocks[:{cut}] "
                              f"{view}", progress=self.progress)

    @torch.inference_mode()
    def embeddings(self, df: pd.DataFrame, view: str, cut: int) -> np.ndarray:
        """Pooled frozen-backbone embedding per row and ``view``: float16 (n, num_features),
        computed from the cached trunk activations at ``cut`` (which are cached too)."""
        tail = self._trunk(None)
        n_all = len(self.backbone.blocks)

        def compute(idx: list[int]) -> np.ndarray:
            if cut == n_all:
                images = [load_image(p) for p in df["path"].astype(str).iloc[idx]]
                x = apply_view(self.preprocessing(images).to(self.device), view)
                return tail.embed(x).float().cpu().numpy()
            acts = self.trunk(df.iloc[idx], view, cut)
            x = torch.from_numpy(acts).float().to(self.device).contiguous(
                memory_format=torch.channels_last)
            return tail.embed(x, start=cut).float().cpu().numpy()

        return self.cache.get(self._spec("embedding", n_all, view), self.shas(df), compute,
                              batch_size=256 if cut < n_all else self.batch_size,
                              desc=f"{self.backbone.name} embeddings {view}",
                              progress=self.progress and cut == n_all)


def metadata_frame(df: pd.DataFrame) -> pd.DataFrame:
    return df.loc[:, list(METADATA_FIELDS)].reset_index(drop=True)


def cut_point(config: TrainConfig, backbone: Backbone | None) -> int:
    if backbone is None:
        return 0
    if config.mode == "head":
        return len(backbone.blocks)
    cut = backbone.default_cut if config.cut is None else config.cut
    if not 0 <= cut < len(backbone.blocks):
        raise ValueError(f"cut must be within 0..{len(backbone.blocks) - 1} for {backbone.name} "
                         f"(blocks to keep frozen), got {cut}")
    return cut


class Inputs:
    """Per-view image inputs of some rows: cached arrays (trunk activations or embeddings) or, for
    cut=0, uint8 images to augment online. ``batch(rows, views)`` -> float tensor."""

    def __init__(self, arrays: dict[str, np.ndarray] | None = None, images: torch.Tensor | None = None):
        self.arrays, self.images = arrays, images

    def batch(self, rows: np.ndarray, views: np.ndarray, *, names: Sequence[str],
              device: torch.device, normalize=None, augment=None,
              generator: torch.Generator | None = None) -> torch.Tensor:
        if self.images is not None:
            x = self.images[torch.from_numpy(rows)]
            if augment is not None:
                x = augment(x, generator)
            else:
                x = torch.stack([apply_view(img[None], names[v])[0] for img, v in zip(x, views)])
            return normalize(x.to(device))
        x = np.stack([self.arrays[names[v]][r] for r, v in zip(rows, views)])
        t = torch.from_numpy(x).to(device).float()
        return t.contiguous(memory_format=torch.channels_last) if t.ndim == 4 else t


def gather_inputs(net: FusionNet, features: FeatureSource | None, df: pd.DataFrame, views: Sequence[str],
            cut: int, config: TrainConfig) -> Inputs | None:
    if not net.uses_image:
        return None
    if config.mode == "finetune" and cut == 0:
        images = [load_image(p) for p in tqdm(df["path"].astype(str), desc="load images",
                                              file=sys.stderr, disable=not features.progress)]
        return Inputs(images=features.preprocessing.to_uint8(images))
    if config.mode == "head":  # pooled embeddings, derived from the trunk cache at the usual cut
        source = features.backbone.default_cut if config.cut is None else config.cut
        return Inputs({v: features.embeddings(df, v, source) for v in views})
    return Inputs({v: features.trunk(df, v, cut) for v in views})


def forward_logits(net: FusionNet, x: torch.Tensor | None, meta: torch.Tensor, config: TrainConfig,
             cut: int) -> torch.Tensor:
    if not net.uses_image:
        return net(None, meta)
    if config.mode == "head":
        return net.classify(x, meta)
    return net(x, meta, start=cut)


@torch.inference_mode()
def network_logits(net: FusionNet, features: FeatureSource | None, meta: np.ndarray, df: pd.DataFrame,
            config: TrainConfig, inputs: Inputs | None = None) -> np.ndarray:
    """Logits averaged over the TTA views for ``df`` rows (eval mode)."""
    net.eval()
    cut = cut_point(config, net.backbone)
    device = next(net.parameters()).device
    views = config.tta
    if inputs is None:
        inputs = gather_inputs(net, features, df, views, cut, config)
    m = torch.from_numpy(meta)
    out = []
    for s in range(0, len(df), 128):
        rows = np.arange(s, min(s + 128, len(df)))
        mb = m[rows].to(device)
        if inputs is None:
            out.append(net(None, mb).float().cpu())
            continue
        acc = 0
        for k in range(len(views)):
            x = inputs.batch(rows, np.full(len(rows), k), names=views, device=device,
                             normalize=features.preprocessing.normalize if features else None)
            acc = acc + forward_logits(net, x, mb, config, cut).float().cpu()
        out.append(acc / len(views))
    return torch.cat(out).double().numpy() if out else np.zeros((0, len(CLASSES)))
