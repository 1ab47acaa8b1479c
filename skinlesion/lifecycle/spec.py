"""What a retraining job is asked to do (:class:`RetrainSpec`, stored as the job's config), and
where a retrain reports its progress (:class:`Reporter`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from skinlesion.lifecycle.data import RetrainPlan, retrain_plan
from skinlesion.lifecycle.policy import RetrainingPolicy
from skinlesion.registry import read_card, resolve_version
from skinlesion.store import Store


class RetrainSpec(BaseModel):
    """What a retraining job is asked to do (stored as the job's config)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_version: str
    models_dir: str
    cache_dir: str
    #: the base's original dataset folder; None = the folder its card names
    data_dir: str | None = None
    mode: Literal["head", "finetune"] = "head"
    epochs: int = Field(30, ge=1)
    holdout_share: float = Field(0.3, ge=0.0, lt=1.0)
    include_review_queue: bool = True
    bootstrap_resamples: int = Field(1000, ge=100)
    seed: int = 0
    device: str = "auto"
    #: further skinlesion.train.TrainConfig fields (e.g. patience, batch_size)
    train_overrides: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_policy(cls, policy: RetrainingPolicy, **fields: Any) -> RetrainSpec:
        """A spec with the policy's training and gate settings; ``fields`` add or override."""
        return cls(**{"mode": policy.mode, "epochs": policy.epochs,
                      "holdout_share": policy.holdout_share,
                      "include_review_queue": policy.include_review_queue,
                      "bootstrap_resamples": policy.bootstrap_resamples, "seed": policy.seed,
                      **fields})


def active_spec(store: Store, policy: RetrainingPolicy, *, models_dir: Path, cache_dir: Path,
                **fields: Any) -> RetrainSpec:
    """A spec retraining the active version (by its id) with the policy's settings; ``fields``
    (e.g. ``data_dir``) add or override."""
    base = resolve_version(models_dir, store.get_route().active_version)
    return RetrainSpec.from_policy(policy, base_version=base, models_dir=str(models_dir),
                                   cache_dir=str(cache_dir), **fields)


def plan(store: Store, spec: RetrainSpec) -> RetrainPlan:
    """What a job of ``spec`` would train on (:func:`skinlesion.lifecycle.data.retrain_plan`);
    its ``refusal`` says why there is nothing to, before any job is started."""
    models_dir = Path(spec.models_dir)
    card = read_card(models_dir / resolve_version(models_dir, spec.base_version))
    return retrain_plan(store, card, models_dir, data_dir=spec.data_dir,
                        holdout_share=spec.holdout_share,
                        include_review_queue=spec.include_review_queue)


class Reporter(Protocol):
    """Where a retrain reports: progress (0..1 with a message) and log lines. A job's reporter
    raises when the job is cancelled, which stops the retrain between steps and epochs."""

    def progress(self, fraction: float, message: str) -> None: ...

    def log(self, line: str) -> None: ...


class QuietReporter:
    """A :class:`Reporter` that discards progress and log lines (a retrain run without a job)."""

    def progress(self, fraction: float, message: str) -> None:
        """Discard."""

    def log(self, line: str) -> None:
        """Discard."""
