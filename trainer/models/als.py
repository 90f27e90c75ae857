"""Probabilistic matrix factorisation solved by alternating least squares (kind ``als``).

The PMF objective (Salakhutdinov & Mnih 2008) on the observed ratings, in a target space ``z``::

    sum_(i,j) observed (z_ij - U_i . V_j - b_i - c_j)^2  +  lambda_u sum_i ||U_i||^2  +  lambda_v sum_j ||V_j||^2
                                                          +  lambda_bias (sum_i b_i^2 + sum_j c_j^2)

(the biases only in the ``biased`` variant; with ``weighted`` every row's penalty is multiplied by its
number of ratings, the ALS-WR scheme of Zhou et al. 2008). Fixing V makes it an independent ridge
regression per user, solved in closed form, ``U_i = (V_I^T V_I + lambda_u I)^-1 V_I^T z_i``; then the
same for every movie with U fixed; one sweep is both half-steps. The bias columns are solved together
with the factors: the user step regresses ``z - c`` on ``[V, 1]`` to get ``[U_i, b_i]``, the movie step
regresses ``z - b`` on ``[U, 1]`` to get ``[V_j, c_j]``.

Vectorised, with no Python loop over users or movies: the ratings are stored once per side as a CSR
matrix (rows = the entities being solved), every row's Gram matrix is one sparse-dense product of that
matrix with the row-wise outer products of the fixed side's vectors (upper triangle only), and all the
(k x k) systems are solved at once with a batched Cholesky. Rows and triangle entries are processed in
chunks so no dense block exceeds GRAM_CHUNK_FLOATS (ml-1m at dim 24 is one chunk). Works the same on
CPU and CUDA. The model keeps the by-user CSR of its training data after fit for :meth:`ALSModel.user_step`.

Target space: ``output="linear"`` fits the ratings themselves, ``output="sigmoid"`` fits
``logit((r - low) / (high - low))`` on the range [scale.low - 0.5, scale.high + 0.5] and maps predictions
back through the sigmoid. With ``normalise`` the targets are standardised (``z = (t - mean) / std``)
first. Either way the export folds the normalisation into the artifact's plain formula: user vectors and
both biases are multiplied by ``std``, ``global_offset`` is ``mean``. :mod:`movierec.foldin` solves the
same user step in numpy from those exported arrays and the hyper-parameters written to the manifest.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from trainer.data.dataset import RatingsData
from trainer.models.base import ModelExport, Recommender, register
from trainer.training import EarlyStopping, EpochMetrics, History, record_epoch

SIGMOID_MARGIN = 0.5  # same range as mf's sigmoid output: half a star beyond the scale on each side
GRAM_CHUNK_FLOATS = 1 << 24  # the largest dense block a half-step materialises (64 MiB in float32)


@dataclass(frozen=True)
class ALSParams:
    """Hyper-parameters of ALS; the defaults are the ones tuned on ml-100k (u1..u5, see the tests' docstring)."""

    dim: int = 24
    lambda_u: float = 0.13
    lambda_v: float = 0.13
    lambda_bias: float = 0.05
    biased: bool = True
    normalise: bool = False  # standardise the targets (z = (t - mean) / std) before fitting
    output: str = "linear"  # linear | sigmoid (fit logit((r - low) / (high - low)), predict through a sigmoid)
    weighted: bool = True  # each row's penalty times its number of ratings (ALS-WR)
    sweeps: int = 12
    patience: int = 3  # sweeps without validation improvement before stopping; 0 disables
    init_std: float = 0.1  # std of the random initial movie factors

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")
        if self.output not in ("linear", "sigmoid"):
            raise ValueError(f"unknown output {self.output!r}; expected 'linear' or 'sigmoid'")
        if min(self.lambda_u, self.lambda_v) <= 0 or self.lambda_bias < 0:
            raise ValueError("lambda_u and lambda_v must be > 0 and lambda_bias >= 0")
        if self.sweeps < 1:
            raise ValueError(f"sweeps must be >= 1, got {self.sweeps}")

    @classmethod
    def from_settings(cls, s: Any) -> ALSParams:
        """From :class:`trainer.config.TrainSettings` (duck-typed: config imports the models, not the reverse).

        The shared ``dim``, ``epochs`` (= sweeps) and ``patience`` fields apply; their ALS defaults come from
        ``trainer.config.KIND_DEFAULTS``.
        """
        return cls(
            dim=s.dim,
            lambda_u=s.als_lambda_u,
            lambda_v=s.als_lambda_v,
            lambda_bias=s.als_lambda_bias,
            biased=s.als_biased,
            normalise=s.als_normalise,
            output=s.als_output,
            weighted=s.als_weighted,
            sweeps=s.epochs,
            patience=s.patience,
            init_std=s.als_init_std,
        )


# --------------------------------------------------------------------------------------------------------
# The vectorised least-squares half-step
# --------------------------------------------------------------------------------------------------------


class RatingsSide:
    """The ratings grouped by the entity a half-step solves for, as CSR (rows = solved entities).

    ``order`` maps CSR position -> original rating row, so per-rating vectors (targets) are reordered
    with ``values[order]``; the structure never changes between sweeps, only the values do.
    """

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, n_rows: int, n_cols: int) -> None:
        device = rows.device
        key = rows.to(torch.int64) * max(n_cols, 1) + cols.to(torch.int64)
        self.order = torch.argsort(key, stable=True)
        self.rows = rows[self.order].to(torch.int64)
        self.cols = cols[self.order].to(torch.int64)
        self.counts = torch.bincount(self.rows, minlength=n_rows)
        self.crow = torch.zeros(n_rows + 1, dtype=torch.int64, device=device)
        self.crow[1:] = torch.cumsum(self.counts, 0)
        self.n_rows, self.n_cols = n_rows, n_cols
        self.ones = torch.ones(self.cols.shape[0], device=device)

    def csr(self, values: torch.Tensor, r0: int = 0, r1: int | None = None) -> torch.Tensor:
        """Rows [r0, r1) as a sparse CSR tensor holding ``values`` (already in CSR order)."""
        r1 = self.n_rows if r1 is None else r1
        a, b = int(self.crow[r0]), int(self.crow[r1])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
            return torch.sparse_csr_tensor(
                self.crow[r0 : r1 + 1] - a,
                self.cols[a:b],
                values[a:b],
                size=(r1 - r0, self.n_cols),
                check_invariants=False,  # built from sorted, bounded codes just above
            )


def rating_sides(
    train: RatingsData, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, RatingsSide, RatingsSide]:
    """The training ratings' user and movie codes on ``device`` and their CSR layouts by user and by movie:
    what the alternating solvers (``als`` here, ``bpmf``) iterate over, one side per half-step."""
    users = torch.as_tensor(train.users, dtype=torch.int64, device=device)
    items = torch.as_tensor(train.items, dtype=torch.int64, device=device)
    return (
        users,
        items,
        RatingsSide(users, items, train.n_users, train.n_items),
        RatingsSide(items, users, train.n_items, train.n_users),
    )


def normal_equations(
    side: RatingsSide, feats: torch.Tensor, targets: torch.Tensor, r0: int = 0, r1: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """For rows [r0, r1) of ``side``: the Gram matrices ``F_I^T F_I`` and the vectors ``F_I^T t_I``.

    ``feats``: (n_cols, k) vectors of the fixed side; ``targets``: one per rating, in CSR order. Returns
    (r1 - r0, k, k) and (r1 - r0, k). The Gram matrices are the sparse (rows x cols) rating indicator times
    the upper triangles of the fixed vectors' outer products, (cols x k(k+1)/2); that dense operand is
    built a block of triangle entries at a time so it never exceeds GRAM_CHUNK_FLOATS.
    """
    r1 = side.n_rows if r1 is None else r1
    k = feats.shape[1]
    a, b = torch.triu_indices(k, k, device=feats.device)
    indicator = side.csr(side.ones.to(feats.dtype), r0, r1)
    gram = torch.empty(r1 - r0, k, k, dtype=feats.dtype, device=feats.device)
    step = max(1, GRAM_CHUNK_FLOATS // max(side.n_cols, 1))
    for c0 in range(0, a.numel(), step):
        ia, ib = a[c0 : c0 + step], b[c0 : c0 + step]
        tri = indicator @ (feats[:, ia] * feats[:, ib])
        gram[:, ia, ib] = tri
        gram[:, ib, ia] = tri
    rhs = side.csr(targets, r0, r1) @ feats
    return gram, rhs


def solve_rows(gram: torch.Tensor, rhs: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """Solve every ``(gram_r + diag(reg_r)) x_r = rhs_r`` at once (batched Cholesky); reg: (n, k)."""
    system = gram.clone()
    system.diagonal(dim1=1, dim2=2).add_(reg)
    chol, info = torch.linalg.cholesky_ex(system)
    if bool((info != 0).any()):
        # Not positive definite in floating point (huge counts, tiny lambda): LU copes where it can.
        return torch.linalg.solve(system, rhs)
    return torch.cholesky_solve(rhs.unsqueeze(-1), chol).squeeze(-1)


@dataclass
class HalfStep:
    """One half-step's solution: the rows' vectors, their biases (biased variant) and the fit's squared error."""

    vectors: torch.Tensor
    bias: torch.Tensor | None
    sse: float  # sum over the side's ratings of (target - prediction)^2 after the update, in z units


def als_half_step(
    side: RatingsSide,
    fixed: torch.Tensor,
    fixed_bias: torch.Tensor | None,
    z: torch.Tensor,
    lam: float,
    lambda_bias: float,
    weighted: bool,
) -> HalfStep:
    """The closed-form ridge solution for every row of ``side`` against the ``fixed`` side's vectors.

    ``z``: normalised targets per rating in CSR order. With ``fixed_bias`` (the biased variant) the fixed
    side's bias is subtracted from the targets and a constant-1 feature is appended, whose coefficient is
    the solved row's own bias (penalised by ``lambda_bias``). The squared error of the new fit comes from
    the same normal equations (``y.y - 2 w.F^T y + w^T G w`` per row), so no per-rating pass is needed.
    """
    d = fixed.shape[1]
    if fixed_bias is not None:
        feats = torch.cat([fixed, torch.ones_like(fixed[:, :1])], dim=1)
        targets = z - fixed_bias[side.cols]
        diag = torch.tensor([lam] * d + [lambda_bias], dtype=fixed.dtype, device=fixed.device)
    else:
        feats, targets = fixed, z
        diag = torch.full((d,), lam, dtype=fixed.dtype, device=fixed.device)
    scale = side.counts.clamp(min=1).to(fixed.dtype) if weighted else torch.ones_like(side.counts, dtype=fixed.dtype)
    reg = scale[:, None] * diag[None, :]
    reg[side.counts == 0] = 1.0  # no ratings: gram and rhs are 0, so the solution is 0 whatever lambda is
    k = feats.shape[1]
    sol = torch.empty(side.n_rows, k, dtype=fixed.dtype, device=fixed.device)
    fit_term = torch.zeros((), dtype=torch.float64, device=fixed.device)  # sum of w^T G w - 2 w.rhs
    rows_per_chunk = max(1, GRAM_CHUNK_FLOATS // (k * k))
    for r0 in range(0, side.n_rows, rows_per_chunk):
        r1 = min(side.n_rows, r0 + rows_per_chunk)
        gram, rhs = normal_equations(side, feats, targets, r0, r1)
        w = solve_rows(gram, rhs, reg[r0:r1])
        sol[r0:r1] = w
        per_row = torch.einsum("ri,rij,rj->r", w, gram, w) - 2 * (w * rhs).sum(1)
        fit_term += per_row.sum(dtype=torch.float64)
    sse = float(targets.pow(2).sum(dtype=torch.float64) + fit_term)
    if fixed_bias is not None:
        return HalfStep(sol[:, :d].contiguous(), sol[:, d].contiguous(), sse)
    return HalfStep(sol, None, sse)


# --------------------------------------------------------------------------------------------------------
# Target space
# --------------------------------------------------------------------------------------------------------


def to_target(ratings: torch.Tensor, output: str, low: float, high: float) -> torch.Tensor:
    """Rating -> the space least squares works in: itself (linear) or the logit of its place in [low, high]."""
    if output == "linear":
        return ratings
    p = ((ratings - low) / (high - low)).clamp(1e-6, 1 - 1e-6)
    return torch.log(p) - torch.log1p(-p)


@register
class ALSModel(Recommender):
    """PMF by alternating least squares; see the module docstring."""

    kind = "als"

    def __init__(self, params: ALSParams | Any, device: torch.device, generator: torch.Generator | None = None):
        self.params = params if isinstance(params, ALSParams) else ALSParams.from_settings(params)
        self.device = device
        self.generator = generator
        self.dtype = torch.float32
        self.U: torch.Tensor | None = None
        self.V: torch.Tensor | None = None
        self.bu: torch.Tensor | None = None
        self.bi: torch.Tensor | None = None
        self.mean = 0.0  # normalisation of the targets: z = (t - mean) / std
        self.std = 1.0
        self.low, self.high = 0.5, 5.0  # sigmoid range (output="sigmoid")
        self._clip = (-math.inf, math.inf)
        self._train_side: tuple[RatingsSide, torch.Tensor] | None = None

    # -- training -----------------------------------------------------------------------------------------

    def _targets(self, ratings: np.ndarray) -> torch.Tensor:
        r = torch.as_tensor(ratings, dtype=torch.float64, device=self.device)
        return to_target(r, self.params.output, self.low, self.high)

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
        self.low, self.high = train.scale.low - SIGMOID_MARGIN, train.scale.high + SIGMOID_MARGIN
        t = self._targets(train.ratings)
        if p.normalise:
            self.mean = float(t.mean())
            self.std = float(t.std(correction=0)) or 1.0
        else:
            self.mean, self.std = 0.0, 1.0
        z64 = (t - self.mean) / self.std
        z_all = z64.to(self.dtype)
        users, items, by_user, by_item = rating_sides(train, self.device)
        z_user, z_item = z_all[by_user.order], z_all[by_item.order]
        self._train_side = (by_user, z64[by_user.order])

        gen = self.generator if self.generator is not None else torch.Generator().manual_seed(0)
        self.V = (torch.randn(train.n_items, p.dim, generator=gen, dtype=torch.float64) * p.init_std).to(
            self.device, self.dtype
        )
        self.U = torch.zeros(train.n_users, p.dim, dtype=self.dtype, device=self.device)
        zeros = torch.zeros
        self.bu = zeros(train.n_users, dtype=self.dtype, device=self.device) if p.biased else None
        self.bi = zeros(train.n_items, dtype=self.dtype, device=self.device) if p.biased else None

        history = History()
        # every half-step makes new tensors, so the snapshot is just the references
        stopper = EarlyStopping(p.patience, lambda: (self.U, self.V, self.bu, self.bi))
        n = len(train)
        for sweep in range(1, p.sweeps + 1):
            t0 = time.perf_counter()
            step = als_half_step(by_user, self.V, self.bi, z_user, p.lambda_u, p.lambda_bias, p.weighted)
            self.U, self.bu = step.vectors, step.bias
            step = als_half_step(by_item, self.U, self.bu, z_item, p.lambda_v, p.lambda_bias, p.weighted)
            self.V, self.bi = step.vectors, step.bias
            objective = max(step.sse, 0.0) + self._penalty(by_user, by_item)
            if p.output == "linear":  # rating = mean + std * z, so the (unclipped) error is std times z's
                train_rmse = self.std * math.sqrt(max(step.sse, 0.0) / n)
            else:
                train_rmse = _rmse(self._to_rating(self._raw_z(users, items)), train.ratings)
            valid_rmse = None
            if valid is not None and len(valid):
                valid_rmse = _rmse(self.predict(valid.users, valid.items), valid.ratings)
            m = EpochMetrics(
                epoch=sweep,
                train_loss=objective / n,
                train_rmse=train_rmse,
                valid_rmse=valid_rmse,
                valid_loss=valid_rmse**2 if valid_rmse is not None else None,
                lr=0.0,
                seconds=time.perf_counter() - t0,
            )
            record_epoch(history, m, on_epoch, "raise the lambdas")
            if stopper.update(valid_rmse, sweep, history):
                break

        def load(state: tuple[torch.Tensor, ...]) -> None:
            self.U, self.V, self.bu, self.bi = state

        stopper.restore(history, load)
        return history

    def _penalty(self, by_user: RatingsSide, by_item: RatingsSide) -> float:
        """The prior terms of the objective (z space), with the same per-row weights as the solves."""
        p = self.params
        assert self.U is not None and self.V is not None
        wu = by_user.counts.to(torch.float64) if p.weighted else torch.ones(by_user.n_rows, dtype=torch.float64)
        wi = by_item.counts.to(torch.float64) if p.weighted else torch.ones(by_item.n_rows, dtype=torch.float64)
        wu, wi = wu.to(self.device), wi.to(self.device)
        total = (
            p.lambda_u * (wu * self.U.double().pow(2).sum(1)).sum()
            + p.lambda_v * (wi * self.V.double().pow(2).sum(1)).sum()
        )
        if self.bu is not None and self.bi is not None:
            total = total + p.lambda_bias * ((wu * self.bu.double() ** 2).sum() + (wi * self.bi.double() ** 2).sum())
        return float(total)

    # -- prediction ---------------------------------------------------------------------------------------

    def _require(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.U is None or self.V is None:
            raise RuntimeError("model is not trained; call fit() first")
        return self.U, self.V

    def _raw_z(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Prediction in the normalised target space, float64, in chunks."""
        U, V = self._require()
        out = []
        for s in range(0, users.shape[0], 1 << 18):
            u, i = users[s : s + (1 << 18)], items[s : s + (1 << 18)]
            z = (U[u].double() * V[i].double()).sum(1)
            if self.bu is not None and self.bi is not None:
                z = z + self.bu[u].double() + self.bi[i].double()
            out.append(z)
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64, device=self.device)

    def _to_rating(self, z: torch.Tensor) -> np.ndarray:
        raw = self.mean + self.std * z
        if self.params.output == "sigmoid":
            raw = self.low + (self.high - self.low) * torch.sigmoid(raw)
        return raw.clamp(*self._clip).cpu().numpy()

    @torch.no_grad()
    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        u = torch.as_tensor(np.asarray(users), dtype=torch.int64, device=self.device)
        i = torch.as_tensor(np.asarray(items), dtype=torch.int64, device=self.device)
        return self._to_rating(self._raw_z(u, i)).astype(np.float32)

    @torch.no_grad()
    def score_items(self, users: np.ndarray) -> np.ndarray:
        """std * (u.V + c): the raw score up to per-user constants, so its order is the rating's order."""
        U, V = self._require()
        u = torch.as_tensor(np.asarray(users), dtype=torch.int64, device=self.device)
        scores = U[u] @ V.T
        if self.bi is not None:
            scores = scores + self.bi
        return (self.std * scores).float().cpu().numpy()

    @torch.no_grad()
    def user_step(
        self, users: np.ndarray | None = None, dtype: torch.dtype = torch.float64
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ALS user half-step against the current movie factors, in the exported (folded) scale.

        What one more user update would give (all users, or the ``users`` codes); used to check
        :func:`movierec.foldin.fold_in`, which must agree. Returns (user vectors, user biases).
        """
        U, V = self._require()
        assert self._train_side is not None, "user_step needs the training data of fit()"
        side, z = self._train_side
        bi = self.bi.to(dtype) if self.bi is not None else None
        p = self.params
        step = als_half_step(side, V.to(dtype), bi, z.to(dtype), p.lambda_u, p.lambda_bias, p.weighted)
        vec = (step.vectors * self.std).cpu().numpy()
        bias_np = (step.bias * self.std).cpu().numpy() if step.bias is not None else np.zeros(len(vec))
        if users is not None:
            return vec[users], bias_np[users]
        return vec, bias_np

    # -- export -------------------------------------------------------------------------------------------

    def export(self) -> ModelExport:
        U, V = self._require()
        s = self.std
        n_users, n_items = U.shape[0], V.shape[0]
        arrays = {
            "user_factors": (U.double() * s).float().cpu().numpy(),
            "item_factors": V.float().cpu().numpy(),
            "user_bias": (self.bu.double() * s).float().cpu().numpy()
            if self.bu is not None
            else np.zeros(n_users, dtype=np.float32),
            "item_bias": (self.bi.double() * s).float().cpu().numpy()
            if self.bi is not None
            else np.zeros(n_items, dtype=np.float32),
        }
        if self.params.output == "sigmoid":
            output = {"transform": "sigmoid", "low": self.low, "high": self.high}
        else:
            output = {"transform": "linear", "low": self._clip[0], "high": self._clip[1]}
        hp = asdict(self.params)
        hp.update(norm_mean=self.mean, norm_std=self.std)
        return ModelExport(arrays=arrays, global_offset=float(self.mean), output=output, hyperparameters=hp)


def _rmse(pred: np.ndarray, ratings: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred, dtype=np.float64) - ratings) ** 2)))
