"""Image preprocessing for the neural models: aspect-kept resize to a fixed size, normalisation,
orientation views (for caching and test-time augmentation) and training augmentation.

Everything is described by JSON-able dicts stored in the model card, so a loaded version preprocesses
exactly as it was trained. Dermoscopy has no "up": flips and 180-degree turns show the same lesion, so
they serve both as augmentation and as test-time views.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

#: Orientation views of an image. All keep a landscape image landscape (no 90-degree turns).
VIEWS: tuple[str, ...] = ("identity", "hflip", "vflip", "rot180")

#: Normalisation of the EfficientNet-Lite ImageNet weights: (255 * x - 127) / 128.
LITE_MEAN: tuple[float, float, float] = (127 / 255,) * 3
LITE_STD: tuple[float, float, float] = (128 / 255,) * 3
#: Normalisation of the torchvision ImageNet weights.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
             "lanczos": Image.Resampling.LANCZOS}


@dataclass(frozen=True)
class Preprocessing:
    """Resize an RGB image to ``width`` x ``height`` keeping its aspect ratio, then normalise.

    A portrait image is first turned 90 degrees when the target is landscape (lossless for
    dermoscopy); an image of another aspect ratio is scaled to fit and padded ("letterbox") with the
    mean colour, which normalises to zero."""

    width: int = 256
    height: int = 192
    mean: tuple[float, float, float] = LITE_MEAN
    std: tuple[float, float, float] = LITE_STD
    resample: str = "bicubic"
    rotate_portrait: bool = True

    def __post_init__(self) -> None:
        if self.width < 8 or self.height < 8:
            raise ValueError(f"image size must be at least 8x8 pixels, got {self.width}x{self.height}")
        if self.resample not in _RESAMPLE:
            raise ValueError(f"resample must be one of {', '.join(_RESAMPLE)}, got {self.resample!r}")

    def to_dict(self) -> dict:
        return asdict(self) | {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return cls(**(d | {"mean": tuple(d["mean"]), "std": tuple(d["std"])}))

    @property
    def fill(self) -> tuple[int, int, int]:
        """Letterbox colour: the normalisation mean, in 0-255."""
        r, g, b = (round(255 * m) for m in self.mean)
        return r, g, b

    def fit(self, image: Image.Image) -> Image.Image:
        """The image resized to exactly ``width`` x ``height``, aspect ratio kept (letterboxed)."""
        image = image.convert("RGB")
        w, h = image.size
        if self.rotate_portrait and (h > w) != (self.height > self.width) and h != w:
            image = image.transpose(Image.Transpose.ROTATE_90)
            w, h = image.size
        scale = min(self.width / w, self.height / h)
        new_w = max(1, min(self.width, round(w * scale)))
        new_h = max(1, min(self.height, round(h * scale)))
        resized = image.resize((new_w, new_h), _RESAMPLE[self.resample])
        if (new_w, new_h) == (self.width, self.height):
            return resized
        canvas = Image.new("RGB", (self.width, self.height), self.fill)
        canvas.paste(resized, ((self.width - new_w) // 2, (self.height - new_h) // 2))
        return canvas

    def to_uint8(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Resized images as a uint8 tensor (n, 3, height, width)."""
        arrays = np.stack([np.asarray(self.fit(img), dtype=np.uint8) for img in images])
        return torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (n, 3, H, W) -> normalised float32 (n, 3, H, W) in channels-last memory (faster on
        CPU convolutions)."""
        mean = torch.tensor(self.mean, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
        x = (batch.float() / 255.0 - mean) / std
        return x.contiguous(memory_format=torch.channels_last)

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images -> normalised float tensor (n, 3, height, width)."""
        return self.normalize(self.to_uint8(images))


def apply_view(batch: torch.Tensor, view: str) -> torch.Tensor:
    """The batch (n, C, H, W) seen in orientation ``view`` (one of :data:`VIEWS`)."""
    if view == "identity":
        return batch
    if view == "hflip":
        return batch.flip(-1)
    if view == "vflip":
        return batch.flip(-2)
    if view == "rot180":
        return batch.flip(-2, -1)
    raise ValueError(f"unknown view {view!r}; allowed: {', '.join(VIEWS)}")


def check_views(views: Sequence[str]) -> tuple[str, ...]:
    """Validated tuple of views (at least one, all known, no repeats)."""
    views = tuple(views)
    unknown = [v for v in views if v not in VIEWS]
    if unknown or not views or len(set(views)) != len(views):
        raise ValueError(f"views must be distinct names from {', '.join(VIEWS)}, got {list(views)}")
    return views


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation on uint8 batches: a random orientation view per image and a random
    brightness/contrast/saturation change of up to +-``color_jitter`` (0 = none)."""

    views: tuple[str, ...] = VIEWS
    color_jitter: float = 0.2

    def to_dict(self) -> dict:
        return {"views": list(self.views), "color_jitter": self.color_jitter}

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augmented copy of a uint8 batch (n, 3, H, W); randomness only from ``generator``."""
        from torchvision.transforms.v2 import functional as tvf

        views = torch.randint(len(self.views), (len(batch),), generator=generator).tolist()
        out = torch.stack([apply_view(img[None], self.views[v])[0] for img, v in zip(batch, views)])
        if self.color_jitter > 0:
            factors = 1 + self.color_jitter * (2 * torch.rand(len(batch), 3, generator=generator) - 1)
            out = torch.stack([
                tvf.adjust_saturation(tvf.adjust_contrast(tvf.adjust_brightness(
                    img, float(f[0])), float(f[1])), float(f[2]))
                for img, f in zip(out, factors)])
        return out
