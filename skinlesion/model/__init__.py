"""Models: image backbones by name (:func:`create_model`), the dual-input network, the classifiers.

The backbone registry is imported lazily, so the rule-based fallback (skinlesion.model.fallback)
loads without torch.
"""

from __future__ import annotations

__all__ = ["available_models", "create_model", "register_backbone"]


def __getattr__(name: str):
    if name in __all__:
        from skinlesion.model import backbones

        return getattr(backbones, name)
    raise AttributeError(f"module 'skinlesion.model' has no attribute {name!r}")
