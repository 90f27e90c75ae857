"""Biased matrix factorisation: the network only; losses live in trainer.losses, the loop in trainer.training.

prediction = u . v + b_u + b_i + offset, optionally through a sigmoid range. Every part is switchable so
the ablations of the literature (biases on/off, offset, init scheme, sigmoid range, side features) are
configurations of one module rather than separate classes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from trainer.data.dataset import RatingsData
from trainer.models.base import ModelExport, Recommender, register
from trainer.training import EpochMetrics, History, OptimConfig, RatingTensors, fit

YEAR_BUCKET_START = 1900
YEAR_BUCKET_WIDTH = 5
N_YEAR_BUCKETS = 1 + (2030 - YEAR_BUCKET_START) // YEAR_BUCKET_WIDTH + 1  # bucket 0 = unknown year


def year_buckets(years: np.ndarray) -> np.ndarray:
    """Map release years to 5-year buckets (0 = unknown) for the year side-feature embedding."""
    years = np.asarray(years, dtype=np.int64)
    b = 1 + (np.clip(years, YEAR_BUCKET_START, 2030) - YEAR_BUCKET_START) // YEAR_BUCKET_WIDTH
    return np.where(years > 0, b, 0).astype(np.int64)


@dataclass(frozen=True)
class OutputRange:
    """Sigmoid range (low, high) or a linear output (None)."""

    low: float
    high: float


class BiasedMF(nn.Module):
    """u.v + b_u + b_i + offset, with optional genre/year embeddings added to the movie vector."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int,
        *,
        biases: bool = True,
        offset: float | None = 0.0,
        output: OutputRange | None = None,
        init: str = "uniform",
        init_scale: float = 0.05,
        item_genres: np.ndarray | None = None,
        item_years: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.output = output
        self.user_emb = nn.Embedding(n_users, dim)
        self.item_emb = nn.Embedding(n_items, dim)
        if init == "uniform":
            # Datadote/fastai: small positive uniform init keeps early dot products near zero and positive.
            nn.init.uniform_(self.user_emb.weight, 0.0, init_scale)
            nn.init.uniform_(self.item_emb.weight, 0.0, init_scale)
        elif init == "normal":
            # Scaled normal: std init_scale/sqrt(dim) so u.v has variance ~init_scale^4 whatever the dim.
            std = init_scale / math.sqrt(dim) if dim else init_scale
            nn.init.normal_(self.user_emb.weight, 0.0, std)
            nn.init.normal_(self.item_emb.weight, 0.0, std)
        else:
            raise ValueError(f"unknown init scheme {init!r}; expected 'uniform' or 'normal'")
        self.user_bias = nn.Parameter(torch.zeros(n_users)) if biases else None
        self.item_bias = nn.Parameter(torch.zeros(n_items)) if biases else None
        self.offset = nn.Parameter(torch.tensor(float(offset))) if offset is not None else None

        self.genre_emb: nn.Parameter | None = None
        self.year_emb: nn.Embedding | None = None
        if item_genres is not None:
            g = torch.as_tensor(np.asarray(item_genres, dtype=np.float32))
            # Average of the movie's genre vectors; movies without a genre get nothing added.
            g = g / g.sum(dim=1, keepdim=True).clamp(min=1.0)
            self.register_buffer("item_genre_weights", g)
            self.genre_emb = nn.Parameter(torch.zeros(g.shape[1], dim))
        if item_years is not None:
            self.register_buffer("item_year_bucket", torch.as_tensor(year_buckets(item_years)))
            self.year_emb = nn.Embedding(N_YEAR_BUCKETS + 1, dim)
            nn.init.zeros_(self.year_emb.weight)

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """The movie vector the dot product uses: its own embedding plus any side-feature embeddings."""
        v = self.item_emb(items)
        if self.genre_emb is not None:
            v = v + self.item_genre_weights[items] @ self.genre_emb
        if self.year_emb is not None:
            v = v + self.year_emb(self.item_year_bucket[items])
        return v

    def raw(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Pre-transform score and the parameter rows the batch touched (for the batch L2 penalty)."""
        u = self.user_emb(users)
        v = self.item_vectors(items)
        score = (u * v).sum(dim=1)
        touched = {"user": u, "item": v}
        if self.user_bias is not None and self.item_bias is not None:
            bu = self.user_bias[users]
            bi = self.item_bias[items]
            score = score + bu + bi
            touched["user_bias"] = bu.unsqueeze(1)
            touched["item_bias"] = bi.unsqueeze(1)
        if self.offset is not None:
            score = score + self.offset
        return score, touched

    def transform(self, raw: torch.Tensor) -> torch.Tensor:
        if self.output is None:
            return raw
        return self.output.low + (self.output.high - self.output.low) * torch.sigmoid(raw)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        raw, _ = self.raw(users, items)
        return self.transform(raw)

    @torch.no_grad()
    def export(self) -> dict[str, np.ndarray | float]:
        """Plain arrays whose numpy formula reproduces forward(): side features folded into item_factors."""
        n_items = self.item_emb.num_embeddings
        items = torch.arange(n_items, device=self.item_emb.weight.device)
        out: dict[str, np.ndarray | float] = {
            "user_factors": self.user_emb.weight.detach().float().cpu().numpy().copy(),
            "item_factors": self.item_vectors(items).detach().float().cpu().numpy().copy(),
        }
        n_users = self.user_emb.num_embeddings
        if self.user_bias is not None and self.item_bias is not None:
            out["user_bias"] = self.user_bias.detach().float().cpu().numpy().copy()
            out["item_bias"] = self.item_bias.detach().float().cpu().numpy().copy()
        else:
            out["user_bias"] = np.zeros(n_users, dtype=np.float32)
            out["item_bias"] = np.zeros(n_items, dtype=np.float32)
        out["global_offset"] = float(self.offset.item()) if self.offset is not None else 0.0
        return out


SIGMOID_MARGIN = 0.5  # half a star beyond the scale: [0, 5.5] for 0.5..5 ratings (fastai, Datadote)


@dataclass(frozen=True)
class MFParams:
    """Hyper-parameters of biased MF; defaults are the tuned ones the benchmark reports."""

    dim: int = 64
    biases: bool = True
    offset: bool = True
    output: str = "sigmoid"  # sigmoid | linear
    sigmoid_low: float | None = None  # default: scale.low - 0.5
    sigmoid_high: float | None = None  # default: scale.high + 0.5
    init: str = "uniform"  # uniform | normal
    init_scale: float = 0.05
    side_features: tuple[str, ...] = ()  # any of "genre", "year"
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        bad = set(self.side_features) - {"genre", "year"}
        if bad:
            raise ValueError(f"unknown side feature(s) {sorted(bad)}; expected 'genre' and/or 'year'")
        if self.output not in ("sigmoid", "linear"):
            raise ValueError(f"unknown output {self.output!r}; expected 'sigmoid' or 'linear'")
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")


@register
class MFModel(Recommender):
    """Biased MF trained by mini-batch gradient descent on device-resident rating tensors."""

    kind = "mf"
    module_class: type[BiasedMF] = BiasedMF  # the network fit() builds (gravity: GravityMF)

    def __init__(self, params: MFParams, device: torch.device, generator: torch.Generator | None = None):
        self.params = params
        self.device = device
        self.generator = generator
        self.module: BiasedMF | None = None
        self._clip: tuple[float, float] = (-np.inf, np.inf)

    def _output_range(self, data: RatingsData) -> OutputRange | None:
        if self.params.output == "linear":
            return None
        low = self.params.sigmoid_low if self.params.sigmoid_low is not None else data.scale.low - SIGMOID_MARGIN
        high = self.params.sigmoid_high if self.params.sigmoid_high is not None else data.scale.high + SIGMOID_MARGIN
        if not high > low:
            raise ValueError(f"sigmoid range needs high > low, got [{low}, {high}]")
        return OutputRange(float(low), float(high))

    def _initial_offset(self, data: RatingsData, out: OutputRange | None) -> float | None:
        """The offset that makes an untrained model predict the training mean (through the sigmoid)."""
        if not self.params.offset:
            return None
        mean = float(np.mean(data.ratings))
        if out is None:
            return mean
        p = (mean - out.low) / (out.high - out.low)
        p = min(max(p, 1e-4), 1 - 1e-4)
        return math.log(p / (1 - p))

    def _module_kwargs(self, train: RatingsData) -> dict[str, Any]:
        """Constructor arguments of the network; subclasses add theirs (gravity: its lambdas)."""
        p = self.params
        out = self._output_range(train)
        return dict(
            biases=p.biases,
            offset=self._initial_offset(train, out),
            output=out,
            init=p.init,
            init_scale=p.init_scale,
            item_genres=train.item_genres if "genre" in p.side_features and train.item_genres.shape[1] else None,
            item_years=train.item_years if "year" in p.side_features else None,
        )

    def fit(
        self,
        train: RatingsData,
        valid: RatingsData | None = None,
        on_epoch: Callable[[EpochMetrics], None] | None = None,
    ) -> History:
        p = self.params
        self._clip = (train.scale.low, train.scale.high)
        self.module = self.module_class(train.n_users, train.n_items, p.dim, **self._module_kwargs(train)).to(
            self.device
        )
        t = RatingTensors.from_arrays(train.users, train.items, train.ratings, self.device)
        v = (
            RatingTensors.from_arrays(valid.users, valid.items, valid.ratings, self.device)
            if valid is not None and len(valid)
            else None
        )
        return fit(self.module, t, p.optim, v, self.generator, on_epoch)

    def _require(self) -> BiasedMF:
        if self.module is None:
            raise RuntimeError("model is not trained; call fit() first")
        return self.module

    @torch.no_grad()
    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        m = self._require().eval()
        out = []
        for s in range(0, len(users), 1 << 18):
            u = torch.as_tensor(users[s : s + (1 << 18)], dtype=torch.long, device=self.device)
            i = torch.as_tensor(items[s : s + (1 << 18)], dtype=torch.long, device=self.device)
            out.append(m(u, i).float().cpu().numpy())
        pred = np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
        return np.clip(pred, *self._clip).astype(np.float32)

    @torch.no_grad()
    def score_items(self, users: np.ndarray) -> np.ndarray:
        """Raw scores u.v + b_i (+ b_u + offset); the sigmoid is monotone so the order equals the rating's."""
        m = self._require().eval()
        u = torch.as_tensor(users, dtype=torch.long, device=self.device)
        all_items = torch.arange(m.item_emb.num_embeddings, device=self.device)
        scores = m.user_emb(u) @ m.item_vectors(all_items).T
        if m.item_bias is not None:
            scores = scores + m.item_bias
        return scores.float().cpu().numpy()

    def export(self) -> ModelExport:
        m = self._require()
        arrays = m.export()
        offset = float(arrays.pop("global_offset"))  # type: ignore[arg-type]
        out = m.output
        output = (
            {"transform": "sigmoid", "low": out.low, "high": out.high}
            if out is not None
            else {"transform": "linear", "low": self._clip[0], "high": self._clip[1]}
        )
        hp = asdict(self.params)
        hp["side_features"] = list(self.params.side_features)
        return ModelExport(
            arrays={k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()},
            global_offset=offset,
            output=output,
            hyperparameters=hp,
        )
