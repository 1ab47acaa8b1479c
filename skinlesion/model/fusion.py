"""The dual-input network: image embedding (a :class:`Backbone`) + metadata branch -> class logits.

``inputs`` selects the ablation variant: ``image+metadata`` (the product), ``image`` (backbone only)
or ``metadata`` (age/sex/site only, no image network at all).
"""

from __future__ import annotations

import torch
from torch import nn

from skinlesion.model.backbones import Backbone

INPUTS: tuple[str, ...] = ("image+metadata", "image", "metadata")


def check_inputs(inputs: str) -> str:
    if inputs not in INPUTS:
        raise ValueError(f"inputs must be one of {', '.join(INPUTS)}, got {inputs!r}")
    return inputs


class FusionNet(nn.Module):
    """``logits = fc(dropout([pooled image embedding, metadata_mlp(metadata)]))``; with
    ``head_hidden > 0`` the head has a hidden layer:
    ``fc(dropout(relu(hidden(dropout([...])))))``. ``head_hidden = 0`` (the default) is the single
    linear head every version saved before the option existed was trained with (same weights keys).

    ``start`` arguments let training feed cached activations: the image input is then the output of
    backbone block ``start - 1`` instead of the normalised image batch."""

    def __init__(self, backbone: Backbone | None, *, n_metadata: int, n_classes: int,
                 inputs: str = "image+metadata", meta_hidden: int = 32, dropout: float = 0.3,
                 head_hidden: int = 0):
        super().__init__()
        if head_hidden < 0:
            raise ValueError(f"head_hidden must be 0 (single linear head) or a positive width, got "
                             f"{head_hidden}")
        self.inputs = check_inputs(inputs)
        uses_image = inputs != "metadata"
        if uses_image != (backbone is not None):
            raise ValueError(f"inputs={inputs!r} needs {'a' if uses_image else 'no'} backbone")
        self.backbone = backbone
        self.meta = None
        if inputs != "image":
            self.meta = nn.Sequential(nn.Linear(n_metadata, meta_hidden), nn.ReLU(),
                                      nn.Linear(meta_hidden, meta_hidden), nn.ReLU())
        width = (backbone.num_features if backbone is not None else 0) + (
            meta_hidden if self.meta is not None else 0)
        self.dropout = nn.Dropout(dropout)
        self.hidden = (nn.Sequential(nn.Linear(width, head_hidden), nn.ReLU()) if head_hidden
                       else None)
        self.fc = nn.Linear(head_hidden or width, n_classes)

    @property
    def uses_image(self) -> bool:
        return self.backbone is not None

    def embed(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Pooled image embedding (n, num_features)."""
        if self.backbone is None:
            raise ValueError("this network has no image branch (inputs='metadata')")
        return self.backbone.embed(x, start)

    def classify(self, embedding: torch.Tensor | None, metadata: torch.Tensor) -> torch.Tensor:
        """Logits from a pooled image embedding (None without image branch) and encoded metadata."""
        parts = []
        if self.backbone is not None:
            parts.append(embedding)
        if self.meta is not None:
            parts.append(self.meta(metadata))
        z = self.dropout(torch.cat(parts, dim=1))
        if self.hidden is not None:
            z = self.dropout(self.hidden(z))
        return self.fc(z)

    def forward(self, x: torch.Tensor | None, metadata: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Logits (n, n_classes); ``x`` is the image batch (or block ``start``'s input), ignored
        without image branch."""
        return self.classify(self.embed(x, start) if self.uses_image else None, metadata)

    def summary(self) -> str:
        """A short human-readable description of the architecture."""
        parts = [self.backbone.summary()] if self.backbone is not None else []
        if self.meta is not None:
            first = self.meta[0]
            parts.append(f"metadata MLP {first.in_features}->{first.out_features}->"
                         f"{self.meta[2].out_features}")
        if self.hidden is not None:
            parts.append(f"dropout {self.dropout.p:g} + linear {self.hidden[0].in_features}->"
                         f"{self.hidden[0].out_features} + ReLU")
        parts.append(f"dropout {self.dropout.p:g} + linear {self.fc.in_features}->"
                     f"{self.fc.out_features}")
        return f"{self.inputs}: " + "; ".join(parts)
