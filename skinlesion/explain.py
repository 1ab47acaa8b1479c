"""Where the model looked: Grad-CAM saliency for the neural classifier, the lesion outline for the
rule-based fallback.

Grad-CAM (Selvaraju et al., 2017) weights each channel of the last convolutional feature map by the
mean gradient of the target class logit with respect to it, sums the weighted channels and keeps
the positive part: the regions whose activation raises that class. The map is computed on the
network's input (the image resized and letterboxed by the version's preprocessing) and then mapped
back onto the original image, so it lines up with what the clinician uploaded.

The fallback (ABCD features of the segmented lesion) looks at exactly one thing, the lesion it
segments; its explanation is that outline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib import colormaps
from PIL import Image
from skimage.morphology import dilation, disk
from skimage.segmentation import find_boundaries

from skinlesion.errors import SkinLesionError
from skinlesion.schema import CLASSES, Metadata, class_index

#: opacity of the heatmap over the image
OVERLAY_ALPHA = 0.45
_OUTLINE_COLOUR = (0, 255, 255)


class ExplanationUnavailable(SkinLesionError):
    """The classifier offers no saliency (e.g. a metadata-only network or an unknown kind)."""


@dataclass(frozen=True)
class Explanation:
    """A saliency map of one answer: ``heatmap`` (float (H, W) in [0, 1], the image's size; for the
    fallback the lesion mask as 0/1), the ``overlay`` to show, the ``method`` and a ``caption``."""

    heatmap: np.ndarray
    overlay: Image.Image
    method: str
    caption: str


def unletterbox(saliency: np.ndarray, preprocessing: object, size: tuple[int, int]) -> np.ndarray:
    """Map a (height, width) map over the network input back onto an image of ``size`` (w, h):
    undo the letterbox padding and the portrait turn of ``Preprocessing.fit`` and resize."""
    width, height = size
    turned = (preprocessing.rotate_portrait and (height > width) !=  # type: ignore[attr-defined]
              (preprocessing.height > preprocessing.width) and height != width)  # type: ignore[attr-defined]
    w, h = (height, width) if turned else (width, height)
    scale = min(preprocessing.width / w, preprocessing.height / h)  # type: ignore[attr-defined]
    new_w = max(1, min(preprocessing.width, round(w * scale)))  # type: ignore[attr-defined]
    new_h = max(1, min(preprocessing.height, round(h * scale)))  # type: ignore[attr-defined]
    left = (preprocessing.width - new_w) // 2  # type: ignore[attr-defined]
    top = (preprocessing.height - new_h) // 2  # type: ignore[attr-defined]
    crop = np.asarray(saliency, dtype=np.float32)[top:top + new_h, left:left + new_w]
    resized = np.asarray(Image.fromarray(crop, mode="F").resize((w, h), Image.Resampling.BILINEAR))
    # Preprocessing.fit turned the image with ROTATE_90 (counter-clockwise); turn the map back.
    return np.rot90(resized, k=-1).copy() if turned else resized.copy()


def overlay_heatmap(image: Image.Image, heatmap: np.ndarray, *, alpha: float = OVERLAY_ALPHA,
                    cmap: str = "jet") -> Image.Image:
    """The image with ``heatmap`` (values in [0, 1], the image's size) blended over it in colour;
    the blend is proportional to the heat, so cold regions keep the image's own colours."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    colours = colormaps[cmap](np.clip(heatmap, 0.0, 1.0))[..., :3] * 255.0
    weight = (alpha * np.clip(heatmap, 0.0, 1.0))[..., None]
    return Image.fromarray(((1 - weight) * rgb + weight * colours).round().astype(np.uint8))


def _target_index(target_class: str | int | None, logits: np.ndarray | None = None) -> int:
    """The class index ``target_class`` names; None = the top class of ``logits``."""
    if target_class is None:
        return int(np.argmax(logits))
    if isinstance(target_class, str):
        return class_index(target_class)
    if not 0 <= int(target_class) < len(CLASSES):
        raise ValueError(f"target_class must be a class index 0..{len(CLASSES) - 1} or one of "
                         f"{', '.join(CLASSES)}, got {target_class!r}")
    return int(target_class)


def _metadata_frame(metadata: Metadata | pd.DataFrame) -> pd.DataFrame:
    if isinstance(metadata, pd.DataFrame):
        return metadata.reset_index(drop=True)
    return pd.DataFrame([metadata.as_dict()]).astype({"age_approx": float})


def grad_cam(classifier: object, image: Image.Image, metadata: Metadata | pd.DataFrame,
             target_class: str | int | None = None) -> tuple[np.ndarray, Image.Image]:
    """Grad-CAM of a :class:`~skinlesion.model.neural.NeuralClassifier` for one image.

    The feature map of the backbone's last block is captured with a forward hook and its gradient
    with a tensor hook; ``target_class`` (a class name or index) defaults to the predicted class.
    Returns the heatmap (float32 (H, W) in [0, 1], the size of ``image``; all zeros when no region
    raises the class) and the overlay image. Runs the upright view only, on the classifier's
    device; the classifier's answers are unchanged and no gradient is left on its parameters."""
    import torch

    net = classifier.net  # type: ignore[attr-defined]
    if net.backbone is None:
        raise ExplanationUnavailable("a metadata-only model does not look at the image; it has no "
                                     "saliency map")
    image = image.convert("RGB")
    device = classifier.device  # type: ignore[attr-defined]
    x = classifier.preprocessing([image]).to(device)  # type: ignore[attr-defined]
    meta = torch.from_numpy(
        classifier.encoder.transform(_metadata_frame(metadata))).to(device)  # type: ignore[attr-defined]
    captured: dict[str, torch.Tensor] = {}

    def keep(_module: object, _inputs: object, output: torch.Tensor) -> None:
        captured["features"] = output
        if output.requires_grad:
            output.register_hook(lambda grad: captured.__setitem__("grad", grad))

    was_training = net.training
    net.eval().to(device)
    handle = net.backbone.blocks[-1].register_forward_hook(keep)
    try:
        with torch.enable_grad():
            # The trunk may be frozen (no parameter needs a gradient): asking for the input's
            # gradient makes every activation part of the graph, so the hook sees the gradient.
            logits = net(x.requires_grad_(True), meta)
            target = _target_index(target_class, logits.detach().cpu().numpy()[0])
            logits[0, target].backward()
    finally:
        handle.remove()
        net.zero_grad(set_to_none=True)
        net.train(was_training)
    features, grad = captured["features"].detach()[0], captured["grad"].detach()[0]
    weights = grad.mean(dim=(1, 2))
    cam = torch.relu((weights[:, None, None] * features).sum(0))[None, None]
    cam = torch.nn.functional.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear",
                                          align_corners=False)[0, 0].float().cpu().numpy()
    heat = unletterbox(cam, classifier.preprocessing, image.size)  # type: ignore[attr-defined]
    heat = np.clip(heat, 0.0, None)
    peak = float(heat.max())
    heat = (heat / peak if peak > 0 else heat).astype(np.float32)
    return heat, overlay_heatmap(image, heat)


def lesion_outline(image: Image.Image, *, width: int | None = None) -> tuple[np.ndarray, Image.Image]:
    """The fallback's lesion segmentation: the mask (bool (H, W)) and the image with its outline
    drawn (``width`` pixels; default about 0.5% of the image's long side)."""
    from skinlesion.model.lesion_segmentation import segment_lesion

    image = image.convert("RGB")
    mask = segment_lesion(image)
    edge = find_boundaries(mask, mode="inner")
    edge = dilation(edge, disk(width or max(1, round(max(image.size) / 200))))
    drawn = np.asarray(image).copy()
    drawn[edge] = _OUTLINE_COLOUR
    return mask, Image.fromarray(drawn)


def explain(classifier: object, image: Image.Image, metadata: Metadata | pd.DataFrame,
            target_class: str | int | None = None) -> Explanation:
    """The saliency fitting the classifier's kind: Grad-CAM for ``neural``, the lesion outline for
    ``fallback``; ExplanationUnavailable for any other kind."""
    kind = getattr(classifier, "kind", None)
    if kind == "neural":
        heat, overlay = grad_cam(classifier, image, metadata, target_class)
        described = ("the predicted class" if target_class is None
                     else CLASSES[_target_index(target_class)])
        return Explanation(heat, overlay, "grad-cam",
                           f"Grad-CAM for {described}: warm colours mark the regions that raised it")
    if kind == "fallback":
        mask, overlay = lesion_outline(image)
        return Explanation(mask.astype(np.float32), overlay, "segmentation",
                           "The rule-based fallback measures asymmetry, border, colour and structure "
                           "inside this outline only")
    raise ExplanationUnavailable(f"no saliency method for model kind {kind!r}; available for "
                                 "neural (Grad-CAM) and fallback (lesion outline) versions")
