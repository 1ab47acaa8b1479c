"""What the dashboard's monitoring pages show, computed without streamlit: the active model's status,
the metric tiles of a health window, the threshold bands behind the charts, and one window's health
with its data drift.

The dashboard (``dashboard/``) only fetches these and renders them, so everything that decides
what a person sees (which colour, which change, whether the model is a demo) is testable here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from skinlesion.errors import ModelNotFoundError
from skinlesion.registry import ModelCard, read_card, resolve_version
from skinlesion.store import ServingRoute, Store

#: Words that mark a model card's data as synthetic (a demo model, not for clinical use).
SYNTHETIC_MARKERS: tuple[str, ...] = ("synthetic", "simulated", "demo")


def is_synthetic(card: ModelCard) -> bool:
    """Whether ``card`` says its model was trained on synthetic data: its data name or notes
    mention it, or the card carries ``synthetic: true`` / ``demo: true``."""
    extra = card.model_extra or {}
    if extra.get("synthetic") is True or extra.get("demo") is True:
        return True
    text = f"{card.data.name} {card.notes or ''}".lower()
    return any(marker in text for marker in SYNTHETIC_MARKERS)


@dataclass(frozen=True)
class ActiveModel:
    """The serving route with the card of the version answering now.

    ``serving_version`` is the fallback while it is engaged, else the active version; ``card`` is
    its model card (None when the version is not in the models folder: ``problem`` says so);
    ``synthetic`` whether that card says it was trained on synthetic data."""

    route: ServingRoute
    serving_version: str
    card: ModelCard | None
    synthetic: bool
    problem: str = ""

    @property
    def fallback_engaged(self) -> bool:
        return self.route.fallback_engaged

    @property
    def restricted(self) -> bool:
        return self.route.restricted_to_clear_cases


def active_model(store: Store, models_dir: Path) -> ActiveModel:
    """The route (from the store) and the card of the version answering now (from ``models_dir``)."""
    route = store.get_route()
    serving = route.fallback_version if route.fallback_engaged and route.fallback_version \
        else route.active_version
    try:
        card = read_card(Path(models_dir) / resolve_version(models_dir, serving))
    except ModelNotFoundError as err:
        return ActiveModel(route, serving, None, False, problem=str(err))
    return ActiveModel(route, serving, card, is_synthetic(card))
