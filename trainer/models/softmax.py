"""Softmax retrieval over the user's history: a bag of rated movies -> MLP tower -> user embedding.

The user is the movies they rated: the (optionally rating-weighted) average of their input embeddings
(genre and year embeddings folded into each movie's input vector), through the tower (``hidden`` ReLU
layers, then a linear layer) to a ``dim``-sized user embedding ``u``. The default tower is that final
linear layer alone: on ml-100k and ml-latest-small a 128-512 wide hidden layer (with dropout or weight
decay) ranked no better and overfits sooner. Every movie ``i`` scores ``u . v_i + b_i`` (``v`` the output movie
embeddings, ``b`` a learned popularity logit) and a softmax over the catalogue is trained with
cross-entropy to put the user's other movies on top (Covington et al., "Deep Neural Networks for YouTube
Recommendations", 2016; Google's recommendation-systems course "softmax model").

Training example = one user: each epoch, each user's training ratings are split at random into an input
bag (``input_fraction`` of them) and target movies; the input movies are removed from that user's softmax,
so the model is trained to rank exactly what evaluation ranks, the unseen movies. Full softmax by default
(a (users x movies) logits matrix per batch is small up to ml-1m/ml-10m catalogues); ``sampled > 0``
switches to a sampled softmax with the log-Q correction for large catalogues.

Rating prediction: the model ranks, it does not rate. After training, an affine map
``rating = c + b_u + a * logit`` (one slope ``a > 0``, a ridge-regularised bias per user, an intercept) is
fitted by least squares on the training ratings, with every logit computed out of bag (two random halves
of each history, each scored from the other) so it sees scores as the held-out movies get them. The map
folds into the artifact contract: ``user_factors = a * u``, ``item_bias = a * b_i``, ``user_bias = b_u``,
``global_offset = c``, linear output. The served ranking ``u'.v + item_bias`` is then ``a`` times the
logit, the same order the model was trained and evaluated on, and ``movierec.artifacts.predict`` is the
rating prediction.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainer import losses
from trainer.data.dataset import RatingScale, RatingsData
from trainer.models.base import ModelExport, Recommender, register
from trainer.models.mf import N_YEAR_BUCKETS, year_buckets
from trainer.training import (
    EarlyStopping,
    EpochMetrics,
    History,
    OptimConfig,
    make_optimizer,
    make_scheduler,
    record_epoch,
)

log = logging.getLogger(__name__)

WEIGHTINGS = ("mean", "rating")
TARGET_WEIGHTINGS = ("target", "user")


@dataclass(frozen=True)
class SoftmaxParams:
    """Hyper-parameters of the softmax model; defaults are the tuned ones (see the README's table)."""

    dim: int = 64  # user / output movie embedding size
    hidden: tuple[int, ...] = ()  # widths of the hidden ReLU layers; () = one linear layer (tuned best)
    input_dim: int = 0  # input movie embedding size; 0 = dim
    tied: bool = False  # use the output movie embeddings as input embeddings (input_dim must be dim)
    side_features: tuple[str, ...] = ()  # "genre" and/or "year" added to each input movie vector
    weighting: str = "mean"  # mean | rating: plain or rating-weighted average of the bag
    input_fraction: float = 0.5  # share of a user's ratings in the input bag each epoch (rest: targets)
    target_weighting: str = "target"  # target: every target counts once | user: every user counts once
    temperature: float = 1.0  # logits = u.v / temperature + b
    dropout: float = 0.0  # on the bag vector and after each hidden layer
    sampled: int = 0  # 0 = full softmax; > 0 = that many shared negatives per batch, log-Q corrected
    sample_alpha: float = 1.0  # negatives drawn with probability ~ count ** alpha
    calibration_reg: float = 5.0  # ridge on the per-user bias of the rating map
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(epochs=100, patience=0, l2=0.0))

    def __post_init__(self) -> None:
        if self.dim < 1 or self.input_dim < 0 or any(h < 1 for h in self.hidden):
            raise ValueError("softmax: dim and hidden widths must be >= 1, input_dim >= 0")
        if self.tied and self.input_dim not in (0, self.dim):
            raise ValueError(f"softmax: tied embeddings need input_dim = dim ({self.dim}), got {self.input_dim}")
        bad = set(self.side_features) - {"genre", "year"}
        if bad:
            raise ValueError(f"unknown side feature(s) {sorted(bad)}; expected 'genre' and/or 'year'")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"unknown softmax weighting {self.weighting!r}; expected one of {WEIGHTINGS}")
        if self.target_weighting not in TARGET_WEIGHTINGS:
            raise ValueError(f"unknown target weighting {self.target_weighting!r}; expected {TARGET_WEIGHTINGS}")
        if not 0.0 < self.input_fraction < 1.0:
            raise ValueError(f"softmax input_fraction must be in (0, 1), got {self.input_fraction}")
        if not self.temperature > 0:
            raise ValueError(f"softmax temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"softmax dropout must be in [0, 1), got {self.dropout}")
        if self.sampled < 0:
            raise ValueError(f"softmax sampled must be >= 0, got {self.sampled}")

    @property
    def in_dim(self) -> int:
        return self.dim if self.tied or self.input_dim == 0 else self.input_dim

    @classmethod
    def from_settings(cls, s: Any) -> SoftmaxParams:
        """From :class:`trainer.config.TrainSettings` (duck-typed: config imports the models, not back)."""
        return cls(
            dim=s.dim,
            hidden=tuple(s.softmax_hidden),
            input_dim=s.softmax_input_dim,
            tied=s.softmax_tied,
            side_features=tuple(s.side_features),
            weighting=s.softmax_weighting,
            input_fraction=s.softmax_input_fraction,
            target_weighting=s.softmax_target_weighting,
            temperature=s.softmax_temperature,
            dropout=s.softmax_dropout,
            sampled=s.softmax_sampled,
            sample_alpha=s.softmax_sample_alpha,
            calibration_reg=s.softmax_calibration_reg,
            optim=OptimConfig.from_settings(s, l2=0.0, l2_bias=0.0),
        )


class SoftmaxTower(nn.Module):
    """The network only: input movie table, the MLP tower, output movie embeddings and logit biases."""

    def __init__(
        self,
        n_items: int,
        params: SoftmaxParams,
        item_genres: np.ndarray | None = None,
        item_years: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        p = params
        self.temperature = p.temperature
        self.out_emb = nn.Embedding(n_items, p.dim)
        nn.init.normal_(self.out_emb.weight, 0.0, 1.0 / math.sqrt(p.dim))
        self.out_bias = nn.Parameter(torch.zeros(n_items))
        self.in_emb: nn.Embedding | None = None
        if not p.tied:
            self.in_emb = nn.Embedding(n_items, p.in_dim)
            nn.init.normal_(self.in_emb.weight, 0.0, 1.0 / math.sqrt(p.in_dim))
        self.genre_emb: nn.Parameter | None = None
        self.year_emb: nn.Embedding | None = None
        if item_genres is not None and item_genres.shape[1]:
            g = torch.as_tensor(np.asarray(item_genres, dtype=np.float32))
            self.register_buffer("item_genre_weights", g / g.sum(dim=1, keepdim=True).clamp(min=1.0))
            self.genre_emb = nn.Parameter(torch.zeros(g.shape[1], p.in_dim))
        if item_years is not None:
            self.register_buffer("item_year_bucket", torch.as_tensor(year_buckets(item_years)))
            self.year_emb = nn.Embedding(N_YEAR_BUCKETS + 1, p.in_dim)
            nn.init.zeros_(self.year_emb.weight)
        widths = [p.in_dim, *p.hidden, p.dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.dropout = nn.Dropout(p.dropout)

    def input_table(self) -> torch.Tensor:
        """(n_items, in_dim): each movie's input vector, its side-feature embeddings included."""
        t = self.in_emb.weight if self.in_emb is not None else self.out_emb.weight
        if self.genre_emb is not None:
            t = t + self.item_genre_weights @ self.genre_emb
        if self.year_emb is not None:
            t = t + self.year_emb(self.item_year_bucket)
        return t

    def user_vectors(self, items: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Bags given as flat ``items`` + ``offsets`` with per-item ``weights`` summing to 1 per bag."""
        x = F.embedding_bag(items, self.input_table(), offsets, mode="sum", per_sample_weights=weights)
        for k, layer in enumerate(self.layers):
            x = layer(self.dropout(x))
            if k < len(self.layers) - 1:
                x = torch.relu(x)
        return x / self.temperature

    def logits(self, user_vecs: torch.Tensor) -> torch.Tensor:
        return user_vecs @ self.out_emb.weight.T + self.out_bias

    @torch.no_grad()
    def tower_arrays(self) -> dict[str, np.ndarray]:
        """The tower as plain float32 arrays (what :func:`movierec.towers.embed_user` computes with)."""
        out: dict[str, np.ndarray] = {}
        for k, layer in enumerate(self.layers):
            out[f"tower_w{k}"] = layer.weight.detach().float().cpu().numpy().copy()
            out[f"tower_b{k}"] = layer.bias.detach().float().cpu().numpy().copy()
        return out


def _flat_range(starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Concatenation of ``arange(starts[k], starts[k] + lengths[k])`` over k, without a Python loop."""
    total = int(lengths.sum())
    if total == 0:
        return starts.new_zeros(0)
    first = torch.cumsum(lengths, 0) - lengths
    return torch.repeat_interleave(starts - first, lengths) + torch.arange(total, device=starts.device)


def _bag_weights(ratings: torch.Tensor, rows: torch.Tensor, n_rows: int, weighting: str) -> torch.Tensor:
    """Per-item weights summing to 1 within each bag: uniform, or proportional to the rating."""
    w = ratings.float() if weighting == "rating" else torch.ones_like(ratings, dtype=torch.float32)
    total = torch.zeros(n_rows, device=w.device).index_add_(0, rows, w)
    return w / total[rows].clamp(min=1e-12)


@dataclass
class _UserHistory:
    """Users' ratings grouped by user (CSR) on the device."""

    starts: torch.Tensor
    counts: torch.Tensor
    items: torch.Tensor
    ratings: torch.Tensor

    @classmethod
    def build(
        cls, users: np.ndarray, items: np.ndarray, ratings: np.ndarray, n_users: int, device: torch.device
    ) -> _UserHistory:
        order = np.lexsort((items, users))
        counts = np.bincount(users, minlength=n_users).astype(np.int64)
        return cls(
            torch.as_tensor(np.cumsum(counts) - counts, device=device),
            torch.as_tensor(counts, device=device),
            torch.as_tensor(items[order], dtype=torch.long, device=device),
            torch.as_tensor(ratings[order], dtype=torch.float32, device=device),
        )


class RankingHistory(History):
    """History of a ranking objective: no rating RMSE per epoch, recorded as null rather than NaN."""

    def as_dicts(self) -> list[dict[str, float | int | None]]:
        rows = super().as_dicts()
        for row in rows:
            if isinstance(row.get("train_rmse"), float) and math.isnan(row["train_rmse"]):  # type: ignore[arg-type]
                row["train_rmse"] = None
        return rows


@register
class SoftmaxModel(Recommender):
    """Trains :class:`SoftmaxTower` user by user; see the module docstring for the rating map."""

    kind = "softmax"

    def __init__(self, params: Any, device: torch.device, generator: torch.Generator | None = None) -> None:
        self.params = params if isinstance(params, SoftmaxParams) else SoftmaxParams.from_settings(params)
        self.device = device
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.module: SoftmaxTower | None = None
        self.scale = RatingScale()
        self.user_vecs: np.ndarray | None = None  # raw tower output from each user's full training history
        self.slope = 1.0
        self.user_bias = np.zeros(0, dtype=np.float32)
        self.offset = 0.0

    # ---------------------------------------------------------------------------------------- training

    def fit(
        self,
        train: RatingsData,
        valid: RatingsData | None = None,
        on_epoch: Callable[[EpochMetrics], None] | None = None,
    ) -> History:
        p, dev = self.params, self.device
        if len(train) == 0:
            raise ValueError("cannot train on an empty ratings set")
        self.scale = train.scale
        n_users, n_items = train.n_users, train.n_items
        module = SoftmaxTower(
            n_items,
            p,
            item_genres=train.item_genres if "genre" in p.side_features else None,
            item_years=train.item_years if "year" in p.side_features else None,
        ).to(dev)
        self.module = module

        order = np.lexsort((train.items, train.users))
        users = torch.as_tensor(train.users[order], dtype=torch.long, device=dev)
        items = torch.as_tensor(train.items[order], dtype=torch.long, device=dev)
        ratings = torch.as_tensor(train.ratings[order], dtype=torch.float32, device=dev)
        counts = torch.bincount(users, minlength=n_users)
        starts = torch.cumsum(counts, 0) - counts
        n_in = torch.clamp(torch.round(counts.float() * p.input_fraction).long(), min=1)
        n_in = torch.minimum(n_in, counts - 1)
        examples = torch.nonzero(counts >= 2).squeeze(1)
        if len(examples) == 0:
            raise ValueError("softmax needs at least one user with two or more training ratings")
        batch = resolve_user_batch(p.optim.batch_size, len(examples))
        steps = math.ceil(len(examples) / batch)
        opt = make_optimizer(module.parameters(), p.optim)
        sched = make_scheduler(opt, p.optim, steps)
        use_amp = p.optim.amp and dev.type == "cuda"
        log_q = None
        if p.sampled:
            pop = torch.bincount(items, minlength=n_items).float().clamp(min=1.0) ** p.sample_alpha
            q = pop / pop.sum()
            q_cpu = q.cpu()
            log_q = torch.log(q * p.sampled)
        valid_set = self._valid_set(train, valid)
        log.info("softmax: %d users in batches of %d on %s", len(examples), batch, dev)

        history = RankingHistory()
        stopper = EarlyStopping(p.optim.patience, lambda: copy.deepcopy(module.state_dict()))
        for epoch in range(1, p.optim.epochs + 1):
            t0 = time.perf_counter()
            module.train()
            # A fresh random input/target split of every user's ratings: sort each user's block by a key.
            key = torch.rand(len(items), generator=self.generator).to(dev)
            within = torch.argsort(key)
            within = within[torch.argsort(users[within], stable=True)]
            ep_items, ep_ratings = items[within], ratings[within]
            perm = examples[torch.randperm(len(examples), generator=self.generator).to(dev)]
            total, n_seen = 0.0, 0
            for s in range(0, len(perm), batch):
                b = perm[s : s + batch]
                rows = torch.arange(len(b), device=dev)
                ni, nt = n_in[b], counts[b] - n_in[b]
                in_pos = _flat_range(starts[b], ni)
                tgt_pos = _flat_range(starts[b] + ni, nt)
                in_rows = torch.repeat_interleave(rows, ni)
                tgt_rows = torch.repeat_interleave(rows, nt)
                in_items, tgt_items = ep_items[in_pos], ep_items[tgt_pos]
                w = _bag_weights(ep_ratings[in_pos], in_rows, len(b), p.weighting)
                tw = (1.0 / nt.float())[tgt_rows] if p.target_weighting == "user" else None
                with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp):
                    u = module.user_vectors(in_items, torch.cumsum(ni, 0) - ni, w)
                    if log_q is None:
                        loss = losses.softmax_cross_entropy(
                            module.logits(u), tgt_rows, tgt_items, in_rows, in_items, tw
                        )
                    else:
                        neg = torch.multinomial(q_cpu, p.sampled, replacement=True, generator=self.generator).to(dev)
                        v = module.out_emb.weight
                        pos_logits = (u[tgt_rows] * v[tgt_items]).sum(1) + module.out_bias[tgt_items]
                        neg_logits = u @ v[neg].T + module.out_bias[neg]
                        # A row's own targets and inputs are not negatives for it (accidental hits).
                        own = torch.cat([tgt_rows, in_rows]) * n_items + torch.cat([tgt_items, in_items])
                        hits = torch.isin(rows[:, None] * n_items + neg[None, :], own)
                        loss = losses.sampled_softmax_cross_entropy(
                            tgt_rows, pos_logits, log_q[tgt_items], neg_logits, log_q[neg], hits, tw
                        )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                total += float(loss.detach()) * len(b)
                n_seen += len(b)
            train_loss = total / max(1, n_seen)
            valid_loss = self._valid_loss(valid_set) if valid_set is not None else None
            metrics = EpochMetrics(
                epoch=epoch,
                train_loss=train_loss,
                train_rmse=float("nan"),  # a ranking objective: no rating error during training
                valid_rmse=None,
                valid_loss=valid_loss,
                lr=float(opt.param_groups[0]["lr"]),
                seconds=time.perf_counter() - t0,
            )
            record_epoch(history, metrics, on_epoch, "lower the lr")
            if stopper.update(valid_loss, epoch, history):
                break
        stopper.restore(history, module.load_state_dict)

        # Serving state: every user embedded from all they rated (train + validation), then the rating map.
        seen = train if valid is None or len(valid) == 0 else _concat(train, valid)
        hist = _UserHistory.build(seen.users, seen.items, seen.ratings, n_users, dev)
        self.user_vecs = self._embed(hist, torch.arange(n_users, device=dev))
        self._calibrate(seen)
        return history

    def _valid_set(self, train: RatingsData, valid: RatingsData | None) -> tuple[Any, ...] | None:
        """Validation users' input bags (their whole training history) and their validation targets."""
        if valid is None or len(valid) == 0:
            return None
        hist = _UserHistory.build(train.users, train.items, train.ratings, train.n_users, self.device)
        users = torch.as_tensor(valid.users, dtype=torch.long, device=self.device)
        vusers, rows = torch.unique(users, return_inverse=True)
        items = torch.as_tensor(valid.items, dtype=torch.long, device=self.device)
        return hist, vusers, rows, items

    @torch.no_grad()
    def _valid_loss(self, valid_set: tuple[Any, ...], chunk: int = 1024) -> float:
        hist, vusers, rows, items = valid_set
        module = self._require().eval()
        total = 0.0
        for s in range(0, len(vusers), chunk):
            sel = (rows >= s) & (rows < s + chunk)
            b = vusers[s : s + chunk]
            in_pos = _flat_range(hist.starts[b], hist.counts[b])
            in_rows = torch.repeat_interleave(torch.arange(len(b), device=self.device), hist.counts[b])
            u = self._embed_rows(hist, b)
            loss = losses.softmax_cross_entropy(
                module.logits(u), rows[sel] - s, items[sel], in_rows, hist.items[in_pos]
            )
            total += float(loss) * int(sel.sum())
        return total / len(items)

    # ---------------------------------------------------------------------------------------- embedding

    def _embed_rows(self, hist: _UserHistory, b: torch.Tensor) -> torch.Tensor:
        module = self._require()
        n = hist.counts[b]
        pos = _flat_range(hist.starts[b], n)
        rows = torch.repeat_interleave(torch.arange(len(b), device=self.device), n)
        w = _bag_weights(hist.ratings[pos], rows, len(b), self.params.weighting)
        return module.user_vectors(hist.items[pos], torch.cumsum(n, 0) - n, w).float()

    @torch.no_grad()
    def _embed(self, hist: _UserHistory, users: torch.Tensor, chunk: int = 4096) -> np.ndarray:
        self._require().eval()
        parts = [self._embed_rows(hist, users[s : s + chunk]).cpu().numpy() for s in range(0, len(users), chunk)]
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, self.params.dim), np.float32)

    def embed_histories(self, indptr: np.ndarray, items: np.ndarray, ratings: np.ndarray) -> np.ndarray:
        """Raw tower output (before the rating map's slope) for bags given as CSR; for tests and tools."""
        counts = np.diff(np.asarray(indptr, dtype=np.int64))
        users = np.repeat(np.arange(len(counts)), counts)
        hist = _UserHistory.build(users, np.asarray(items), np.asarray(ratings), len(counts), self.device)
        return self._embed(hist, torch.arange(len(counts), device=self.device))

    def _calibrate(self, seen: RatingsData, n_iter: int = 20) -> None:
        """Fit rating = c + b_u + a * logit on out-of-bag logits (two random halves of each history)."""
        dev, n_users = self.device, seen.n_users
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator)))
        half = rng.random(len(seen)) < 0.5
        logit = np.zeros(len(seen), dtype=np.float64)
        module = self._require()
        v = module.out_emb.weight.detach().float().cpu().numpy()
        bias = module.out_bias.detach().float().cpu().numpy()
        for part in (half, ~half):
            inp = seen.subset(part)
            hist = _UserHistory.build(inp.users, inp.items, inp.ratings, n_users, dev)
            u = self._embed(hist, torch.arange(n_users, device=dev))
            tgt = ~part
            logit[tgt] = np.einsum("ij,ij->i", u[seen.users[tgt]], v[seen.items[tgt]]) + bias[seen.items[tgt]]
        r = seen.ratings.astype(np.float64)
        users = seen.users.astype(np.intp)
        n_u = np.bincount(users, minlength=n_users)
        reg = self.params.calibration_reg
        s_mean = float(logit.mean())
        x = logit - s_mean  # centred: a and c decouple
        a, c, bu = 0.0, float(r.mean()), np.zeros(n_users)
        for _ in range(n_iter):
            resid = r - c - bu[users]
            a = max(float(np.dot(resid - resid.mean(), x) / max(np.dot(x, x), 1e-12)), 1e-3)
            c = float(np.mean(r - bu[users] - a * x))
            bu = np.bincount(users, weights=r - c - a * x, minlength=n_users) / (reg + n_u)
        self.slope = a
        self.offset = c - a * s_mean
        self.user_bias = bu.astype(np.float32)
        log.info("softmax rating map: slope %.4f, offset %.4f", self.slope, self.offset)

    # ---------------------------------------------------------------------------------------- inference

    def _require(self) -> SoftmaxTower:
        if self.module is None:
            raise RuntimeError("model is not trained; call fit() first")
        return self.module

    def _arrays(self) -> dict[str, np.ndarray]:
        module = self._require()
        if self.user_vecs is None:
            raise RuntimeError("model is not trained; call fit() first")
        v = module.out_emb.weight.detach().float().cpu().numpy()
        b = module.out_bias.detach().float().cpu().numpy()
        return {
            "user_factors": (self.user_vecs * np.float32(self.slope)).astype(np.float32),
            "item_factors": v.astype(np.float32),
            "user_bias": self.user_bias.astype(np.float32),
            "item_bias": (b * np.float32(self.slope)).astype(np.float32),
        }

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        a = self._arrays()
        u, i = np.asarray(users, dtype=np.intp), np.asarray(items, dtype=np.intp)
        raw = (
            np.einsum("ij,ij->i", a["user_factors"][u].astype(np.float64), a["item_factors"][i].astype(np.float64))
            + a["user_bias"][u]
            + a["item_bias"][i]
            + self.offset
        )
        return np.clip(raw, self.scale.low, self.scale.high).astype(np.float32)

    def score_items(self, users: np.ndarray) -> np.ndarray:
        """The softmax logits (before the softmax): the model's ranking and, times the slope, the served one."""
        module = self._require()
        if self.user_vecs is None:
            raise RuntimeError("model is not trained; call fit() first")
        with torch.no_grad():
            u = torch.as_tensor(self.user_vecs[np.asarray(users, dtype=np.intp)], device=self.device)
            return module.logits(u).float().cpu().numpy()

    def export(self) -> ModelExport:
        module = self._require()
        arrays = self._arrays()
        arrays.update(module.tower_arrays())
        has_input = module.in_emb is not None or module.genre_emb is not None or module.year_emb is not None
        if has_input:
            with torch.no_grad():
                arrays["tower_input"] = module.input_table().detach().float().cpu().numpy().copy()
        hp = asdict(self.params)
        hp["hidden"] = list(self.params.hidden)
        hp["side_features"] = list(self.params.side_features)
        hp["tower"] = {
            "layers": len(module.layers),
            "activation": "relu",
            "temperature": self.params.temperature,
            "weighting": self.params.weighting,
            "slope": self.slope,
            "input": "tower_input" if has_input else "item_factors",
        }
        return ModelExport(
            arrays=arrays,
            global_offset=float(self.offset),
            output={"transform": "linear", "low": self.scale.low, "high": self.scale.high},
            hyperparameters=hp,
            extra={
                "rating_map": "rating = global_offset + user_bias + slope * (u.v + b); see trainer.models.softmax",
                "embed_user": "movierec.towers.embed_user",
            },
        )


def resolve_user_batch(batch_size: int, n_users: int) -> int:
    """Users per step: an explicit size wins; auto is ~32 steps per epoch, between 64 and 1024 users."""
    if batch_size > 0:
        return batch_size
    target = max(1, n_users // 32)
    return int(min(max(1 << max(0, round(math.log2(target))), 64), 1024))


def _concat(a: RatingsData, b: RatingsData) -> RatingsData:
    from dataclasses import replace

    return replace(
        a,
        users=np.concatenate([a.users, b.users]),
        items=np.concatenate([a.items, b.items]),
        ratings=np.concatenate([a.ratings, b.ratings]),
        timestamps=np.concatenate([a.timestamps, b.timestamps]),
    )
