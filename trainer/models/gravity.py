"""Biased MF with whole-table regularisation and a gravity term (kind ``gravity``).

Loss = MSE on the observed ratings (plus mf's batch L2 when ``--l2`` is set)
       + lambda_r * (mean_i ||U_i||^2 + mean_j ||V_j||^2)
       + lambda_g * mean over all N x M (user, movie) pairs of <U_i, V_j>^2.

The last term (Google's recommendation-systems course calls it gravity) pulls the score of every pair,
rated or not, towards zero. MSE on observed pairs alone only says where rated movies go; gravity also
teaches the embedding that most pairs are *not* similar, which spreads unrelated movies apart (fewer
"folded" spurious neighbours). It is computed without the N x M matrix:
``sum_ij <U_i, V_j>^2 = trace((U^T U)(V^T V))`` (:func:`trainer.losses.gravity`), O((N + M) d^2).

The network is mf's :class:`~trainer.models.mf.BiasedMF` (biases, offset, sigmoid output, side features)
with a ``regularizer()`` the shared epoch loop adds once per step; prediction, ranking and export are mf's.
Gravity acts on the factor dot product only: biases and the offset are not pulled to zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from trainer import losses
from trainer.data.dataset import RatingsData
from trainer.models.base import ModelExport, Recommender, register
from trainer.models.mf import BiasedMF, MFModel, MFParams


@dataclass(frozen=True)
class GravityParams:
    """mf's hyper-parameters plus the two whole-table terms' weights."""

    mf: MFParams = field(default_factory=MFParams)
    lambda_r: float = 0.0
    lambda_g: float = 0.0

    def __post_init__(self) -> None:
        if self.lambda_r < 0 or self.lambda_g < 0:
            raise ValueError(f"lambda_r and lambda_g must be >= 0, got {self.lambda_r}, {self.lambda_g}")

    @classmethod
    def from_settings(cls, s: Any) -> GravityParams:
        """From :class:`trainer.config.TrainSettings` (duck-typed: config imports the models, not the reverse)."""
        return cls(mf=s.mf_params(), lambda_r=s.gravity_lambda_r, lambda_g=s.gravity_lambda_g)


class GravityMF(BiasedMF):
    """BiasedMF whose ``regularizer()`` is lambda_r * row-mean L2 of both tables + lambda_g * gravity."""

    def __init__(self, *args: Any, lambda_r: float = 0.0, lambda_g: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lambda_r = lambda_r
        self.lambda_g = lambda_g

    def tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(U, V): every user's vector and every movie's vector as the dot product sees it."""
        v = self.item_emb.weight
        if self.genre_emb is not None or self.year_emb is not None:
            v = self.item_vectors(torch.arange(v.shape[0], device=v.device))
        return self.user_emb.weight, v

    def regularizer(self) -> torch.Tensor:
        u, v = self.tables()
        total = u.new_zeros(())
        if self.lambda_r:
            # batch_l2 of whole tables is exactly mean_i ||U_i||^2 + mean_j ||V_j||^2
            total = total + self.lambda_r * losses.batch_l2(u, v)
        if self.lambda_g:
            total = total + self.lambda_g * losses.gravity(u, v)
        return total


@register
class GravityModel(MFModel):
    """mf trained with the gravity loss; everything but the module and the loss is mf's."""

    kind = "gravity"

    def __init__(
        self, params: GravityParams | Any, device: torch.device, generator: torch.Generator | None = None
    ) -> None:
        gp = params if isinstance(params, GravityParams) else GravityParams.from_settings(params)
        super().__init__(gp.mf, device, generator)
        self.gravity_params = gp

    module_class = GravityMF

    def _module_kwargs(self, train: RatingsData) -> dict[str, Any]:
        gp = self.gravity_params
        return {**super()._module_kwargs(train), "lambda_r": gp.lambda_r, "lambda_g": gp.lambda_g}

    def export(self) -> ModelExport:
        exported = super().export()
        exported.hyperparameters.update(lambda_r=self.gravity_params.lambda_r, lambda_g=self.gravity_params.lambda_g)
        return exported


# --------------------------------------------------------------------------------------------------------
# Inspecting the embedding: neighbours by dot and cosine, and the scores over all pairs
# --------------------------------------------------------------------------------------------------------

MEASURES = ("dot", "cosine")


def movie_neighbours(item_factors: np.ndarray, movies: Sequence[int], k: int = 10) -> dict[str, np.ndarray]:
    """Top-``k`` neighbours of each of ``movies`` (codes) by dot product and by cosine of the movie vectors.

    Returns {"dot": (len(movies), k), "cosine": (len(movies), k)} movie codes, best first, the movie itself
    excluded. Dot favours long (popular) vectors; cosine only looks at direction.
    """
    V = np.asarray(item_factors, dtype=np.float64)
    q = np.asarray(movies, dtype=np.int64)
    if k >= V.shape[0]:
        raise ValueError(f"k must be below the number of movies ({V.shape[0]}), got {k}")
    norms = np.linalg.norm(V, axis=1)
    dot = V[q] @ V.T
    cos = dot / np.maximum(norms[q, None] * norms[None, :], 1e-12)
    out = {}
    for name, scores in (("dot", dot), ("cosine", cos)):
        scores = scores.copy()
        scores[np.arange(len(q)), q] = -np.inf
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        out[name] = np.take_along_axis(top, order, axis=1)
    return out


def model_neighbours(model: Recommender, movies: Sequence[int], k: int = 10) -> dict[str, np.ndarray]:
    """:func:`movie_neighbours` of a trained model's exported movie factors (any kind)."""
    return movie_neighbours(model.export().arrays["item_factors"], movies, k)


def neighbour_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, the Jaccard overlap |A & B| / |A | B| of two (rows, k) neighbour lists (as sets)."""
    return np.array([len(set(x) & set(y)) / max(1, len(set(x) | set(y))) for x, y in zip(a, b, strict=True)])


def score_moments(user_factors: np.ndarray, item_factors: np.ndarray) -> tuple[float, float]:
    """(mean, mean square) of ``<U_i, V_j>`` over all N x M pairs, without the N x M matrix.

    mean = (sum_i U_i) . (sum_j V_j) / (N M); mean square = trace((U^T U)(V^T V)) / (N M), the gravity term.
    """
    U = np.asarray(user_factors, dtype=np.float64)
    V = np.asarray(item_factors, dtype=np.float64)
    nm = U.shape[0] * V.shape[0]
    return float(U.sum(0) @ V.sum(0)) / nm, float(np.sum((U.T @ U) * (V.T @ V))) / nm
