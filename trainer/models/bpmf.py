"""Bayesian PMF by Gibbs sampling (kind ``bpmf``; Salakhutdinov & Mnih, ICML 2008).

Why: PMF fitted to a point estimate (``als``, ``mf``) needs its priors tuned and still overfits sparse
users; integrating over the factors and their hyper-parameters controls capacity by itself and averages
over many plausible factorisations. On ml-100k u1..u5 it is the most accurate rating model here.

Model: ratings centred on the training mean, ``r_ij - mean ~ N(U_i . V_j, 1 / alpha)``; user rows
``U_i ~ N(mu_U, Lambda_U^-1)`` with a Normal-Wishart hyper-prior on ``(mu_U, Lambda_U)`` (mu_0 = 0,
beta_0, nu_0 = dim, W_0 = I), movies likewise. Each iteration samples, in order, the user
hyper-parameters given U, every user row given V (all at once: the per-user Gram matrices come from the
same sparse products as ALS's normal equations, then one batched Cholesky), the movie hyper-parameters
and every movie row given U. After ``burn_in`` iterations the samples are the posterior; the prediction is
their average, ``mean + (1/S) sum_s U_i^s . V_j^s``.

Export: ``keep`` evenly spaced post-burn-in samples are kept, and the average over them is one dot
product of concatenated vectors, ``[U_i^1 .. U_i^S] / sqrt(S) . [V_j^1 .. V_j^S] / sqrt(S)``, so the
artifact's plain formula (factors, zero biases, offset = mean, linear output clipped to the scale)
serves exactly the model's prediction, at width ``dim * keep``. Epoch metrics: the training RMSE of the
current sample, and the validation RMSE of the running posterior mean (all post-burn-in samples).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from trainer.data.dataset import RatingsData
from trainer.models.als import GRAM_CHUNK_FLOATS, RatingsSide, normal_equations, rating_sides
from trainer.models.base import ModelExport, Recommender, register
from trainer.training import EpochMetrics, History, record_epoch


@dataclass(frozen=True)
class BPMFParams:
    """Hyper-parameters; the defaults are the ones measured on ml-100k u1..u5 (``bench/bench_models.py``)."""

    dim: int = 10
    iterations: int = 150
    burn_in: int = 20
    keep: int = 32  # samples kept for prediction and export (evenly spaced after burn-in)
    alpha: float = 1.5  # observation precision: rating noise std 1/sqrt(alpha) ~ 0.82 stars
    beta0: float = 2.0  # Normal-Wishart: weight of the prior mean mu_0 = 0
    init_std: float = 0.1

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")
        if self.iterations <= self.burn_in or self.burn_in < 0:
            raise ValueError(f"iterations ({self.iterations}) must exceed burn_in ({self.burn_in}) >= 0")
        if self.keep < 1:
            raise ValueError(f"keep must be >= 1, got {self.keep}")
        if self.alpha <= 0 or self.beta0 <= 0:
            raise ValueError("alpha and beta0 must be > 0")

    @classmethod
    def from_settings(cls, s: Any) -> BPMFParams:
        """From :class:`trainer.config.TrainSettings`: ``dim`` and ``epochs`` (= iterations) are shared."""
        return cls(dim=s.dim, iterations=s.epochs, burn_in=s.bpmf_burn_in, keep=s.bpmf_keep, alpha=s.bpmf_alpha)


def sample_normal_wishart(x: np.ndarray, beta0: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, Lambda)`` from the Normal-Wishart posterior given rows ``x`` (n, d), prior mu_0 = 0,
    nu_0 = d, W_0 = I. Lambda by the Bartlett decomposition (no scipy in the trainer's hot loop)."""
    n, d = x.shape
    xbar = x.mean(axis=0)
    centred = x - xbar
    s = centred.T @ centred / max(n, 1)
    beta_n, nu_n = beta0 + n, d + n
    mu_n = n * xbar / beta_n
    w_inv = np.eye(d) + n * s + (beta0 * n / beta_n) * np.outer(xbar, xbar)
    w = np.linalg.inv(w_inv)
    chol = np.linalg.cholesky((w + w.T) / 2)
    a = np.tril(rng.standard_normal((d, d)), -1)
    a[np.diag_indices(d)] = np.sqrt(rng.chisquare(nu_n - np.arange(d)))
    la = chol @ a
    lam = la @ la.T
    cov = np.linalg.inv(beta_n * lam)
    mu = mu_n + np.linalg.cholesky((cov + cov.T) / 2) @ rng.standard_normal(d)
    return mu, lam


def sample_rows(
    side: RatingsSide,
    fixed: torch.Tensor,
    targets: torch.Tensor,
    mu: torch.Tensor,
    lam: torch.Tensor,
    alpha: float,
    gen: torch.Generator,
) -> torch.Tensor:
    """Every row of one side from its conditional ``N(P^-1 b, P^-1)``, ``P = Lambda + alpha F^T F``,
    ``b = alpha F^T t + Lambda mu``: a batched Cholesky per chunk of rows; a row without ratings is a
    draw from the prior."""
    d = fixed.shape[1]
    out = torch.empty(side.n_rows, d, dtype=fixed.dtype, device=fixed.device)
    prior_rhs = lam @ mu
    rows_per_chunk = max(1, GRAM_CHUNK_FLOATS // (d * d))
    for r0 in range(0, side.n_rows, rows_per_chunk):
        r1 = min(side.n_rows, r0 + rows_per_chunk)
        gram, rhs = normal_equations(side, fixed, targets, r0, r1)
        precision = lam + alpha * gram
        b = alpha * rhs + prior_rhs
        chol = torch.linalg.cholesky(precision)
        mean = torch.cholesky_solve(b.unsqueeze(-1), chol).squeeze(-1)
        z = torch.randn(r1 - r0, d, 1, generator=gen, dtype=fixed.dtype, device="cpu").to(fixed.device)
        # x = mean + L^-T z has covariance (L L^T)^-1 = P^-1
        out[r0:r1] = mean + torch.linalg.solve_triangular(chol.mT, z, upper=True).squeeze(-1)
    return out


@register
class BPMFModel(Recommender):
    """Bayesian PMF by Gibbs sampling; see the module docstring."""

    kind = "bpmf"

    def __init__(self, params: BPMFParams | Any, device: torch.device, generator: torch.Generator | None = None):
        self.params = params if isinstance(params, BPMFParams) else BPMFParams.from_settings(params)
        self.device = device
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.dtype = torch.float64  # small d x d systems: float64 keeps every sampled precision positive definite
        self.mean = 0.0
        self._clip = (-math.inf, math.inf)
        self.U: torch.Tensor | None = None  # kept samples, concatenated: (n_users, dim * kept) / sqrt(kept)
        self.V: torch.Tensor | None = None

    def fit(
        self,
        train: RatingsData,
        valid: RatingsData | None = None,
        on_epoch: Callable[[EpochMetrics], None] | None = None,
    ) -> History:
        p = self.params
        if len(train) == 0:
            raise ValueError("cannot train on an empty ratings set")
        self._clip = (train.scale.low, train.scale.high)
        dev, dt, gen = self.device, self.dtype, self.generator
        # the hyper-parameter draws (d x d, numpy) are seeded from the same generator as the rows
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=gen)))
        ratings = torch.as_tensor(train.ratings, dtype=dt, device=dev)
        self.mean = float(ratings.mean())
        z = ratings - self.mean
        users, items, by_user, by_item = rating_sides(train, dev)
        z_user, z_item = z[by_user.order], z[by_item.order]
        U = (torch.randn(train.n_users, p.dim, generator=gen, dtype=dt) * p.init_std).to(dev)
        V = (torch.randn(train.n_items, p.dim, generator=gen, dtype=dt) * p.init_std).to(dev)

        post = p.iterations - p.burn_in
        keep_at = {int(i) for i in np.linspace(0, post - 1, min(p.keep, post)).round()}
        kept_u: list[torch.Tensor] = []
        kept_v: list[torch.Tensor] = []
        has_valid = valid is not None and len(valid) > 0
        if has_valid:
            assert valid is not None
            vu = torch.as_tensor(valid.users, dtype=torch.int64, device=dev)
            vi = torch.as_tensor(valid.items, dtype=torch.int64, device=dev)
            valid_sum = torch.zeros(len(valid), dtype=dt, device=dev)
        history = History()
        for it in range(1, p.iterations + 1):
            t0 = time.perf_counter()
            mu, lam = sample_normal_wishart(U.cpu().numpy(), p.beta0, rng)
            U = sample_rows(by_user, V, z_user, _t(mu, dev), _t(lam, dev), p.alpha, gen)
            mu, lam = sample_normal_wishart(V.cpu().numpy(), p.beta0, rng)
            V = sample_rows(by_item, U, z_item, _t(mu, dev), _t(lam, dev), p.alpha, gen)
            resid = z - (U[users] * V[items]).sum(1)
            train_rmse = float(resid.pow(2).mean().sqrt())
            valid_rmse = None
            if it > p.burn_in:
                if it - p.burn_in - 1 in keep_at:
                    kept_u.append(U.float())
                    kept_v.append(V.float())
                if has_valid:
                    valid_sum += (U[vu] * V[vi]).sum(1)
                    avg = (self.mean + valid_sum / (it - p.burn_in)).clamp(*self._clip)
                    truth = torch.as_tensor(valid.ratings, dtype=dt, device=dev)
                    valid_rmse = float((avg - truth).pow(2).mean().sqrt())
            m = EpochMetrics(
                epoch=it,
                train_loss=train_rmse**2,
                train_rmse=train_rmse,
                valid_rmse=valid_rmse,
                valid_loss=valid_rmse**2 if valid_rmse is not None else None,
                lr=0.0,
                seconds=time.perf_counter() - t0,
            )
            record_epoch(history, m, on_epoch, "lower alpha (the observation precision)")
        scale = 1.0 / math.sqrt(len(kept_u))
        self.U = torch.cat(kept_u, dim=1) * scale
        self.V = torch.cat(kept_v, dim=1) * scale
        return history

    def _require(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.U is None or self.V is None:
            raise RuntimeError("model is not trained; call fit() first")
        return self.U, self.V

    @torch.no_grad()
    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        U, V = self._require()
        u = torch.as_tensor(np.asarray(users), dtype=torch.int64, device=self.device)
        i = torch.as_tensor(np.asarray(items), dtype=torch.int64, device=self.device)
        out = []
        for s in range(0, u.shape[0], 1 << 16):
            raw = (U[u[s : s + (1 << 16)]].double() * V[i[s : s + (1 << 16)]].double()).sum(1) + self.mean
            out.append(raw.clamp(*self._clip))
        if not out:
            return np.zeros(0, dtype=np.float32)
        return torch.cat(out).cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def score_items(self, users: np.ndarray) -> np.ndarray:
        U, V = self._require()
        u = torch.as_tensor(np.asarray(users), dtype=torch.int64, device=self.device)
        return (U[u] @ V.T).cpu().numpy()

    def export(self) -> ModelExport:
        U, V = self._require()
        n_users, n_items = U.shape[0], V.shape[0]
        arrays = {
            "user_factors": U.cpu().numpy().astype(np.float32),
            "item_factors": V.cpu().numpy().astype(np.float32),
            "user_bias": np.zeros(n_users, dtype=np.float32),
            "item_bias": np.zeros(n_items, dtype=np.float32),
        }
        output = {"transform": "linear", "low": self._clip[0], "high": self._clip[1]}
        hp = asdict(self.params)
        hp.update(samples_kept=U.shape[1] // self.params.dim, exported_dim=U.shape[1])
        return ModelExport(arrays=arrays, global_offset=self.mean, output=output, hyperparameters=hp)


def _t(x: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64, device=device)
