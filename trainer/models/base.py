"""The one interface every model kind implements, and the registry the CLI picks kinds from.

The pipeline only talks to this interface: fit on a train set (with an optional validation set for early
stopping), predict ratings for (user, item) code pairs, score every item for a batch of users (for top-K
evaluation), and export plain arrays in the artifact contract's vocabulary.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from trainer.data.dataset import RatingsData
from trainer.training import EpochMetrics, History


@dataclass
class ModelExport:
    """What a model hands to the artifact writer.

    ``arrays`` holds at least user_factors, item_factors, user_bias and item_bias (float32); a kind may add
    arrays of its own. ``output`` is the transform applied to the raw score:
    {"transform": "sigmoid"|"linear", "low": float, "high": float}.
    """

    arrays: dict[str, np.ndarray]
    global_offset: float
    output: dict[str, Any]
    hyperparameters: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


class Recommender(ABC):
    """A trainable model over RatingsData codes."""

    kind: ClassVar[str]

    @abstractmethod
    def fit(
        self,
        train: RatingsData,
        valid: RatingsData | None = None,
        on_epoch: Callable[[EpochMetrics], None] | None = None,
    ) -> History:
        """Train on ``train``; ``valid`` (same id maps) drives early stopping where the kind supports it."""

    @abstractmethod
    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predicted ratings (float32, on the rating scale's range) for parallel arrays of codes."""

    @abstractmethod
    def score_items(self, users: np.ndarray) -> np.ndarray:
        """(len(users), n_items) scores whose order is the model's ranking for each user."""

    @abstractmethod
    def export(self) -> ModelExport:
        """Arrays and manifest fields for :func:`movierec.artifacts.publish`."""


_REGISTRY: dict[str, type[Recommender]] = {}


def register(cls: type[Recommender]) -> type[Recommender]:
    _REGISTRY[cls.kind] = cls
    return cls


def model_class(kind: str) -> type[Recommender]:
    if kind not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "(none)"
        raise ValueError(f"unknown model kind {kind!r}; known kinds: {known}")
    return _REGISTRY[kind]


def known_kinds() -> list[str]:
    return sorted(_REGISTRY)
