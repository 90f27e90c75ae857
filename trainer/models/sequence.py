"""A transformer over the user's recent ratings (Behavior Sequence Transformer style) that predicts ratings.

Example = one rating to predict, of movie ``t`` by user ``u``: the ``length - 1`` movies ``u`` rated just
before (by timestamp), each token = movie embedding + rating embedding + learned position embedding, then
the target token (movie ``t`` + a "rating unknown" embedding + the last position). Padding (a short
history) is masked. ``nn.TransformerEncoder`` runs over the tokens; the target token's output, the mean
of the history tokens' outputs and the target movie embedding are concatenated with the user's features
(ml-100k / ml-1m ship gender, age and occupation: ``RatingsData.user_features``, each an embedding; when
the data has none, a user-id embedding if ``user_id`` is on, else nothing) and an MLP predicts the rating
as ``offset + b_t + mlp(...)``. (Chen et al., "Behavior Sequence Transformer for E-commerce
Recommendation in Alibaba", 2019; Chris Hughes, "Comparing matrix factorization with transformers for
MovieLens recommendations", 2022.)

Examples are sliding windows over each user's ratings sorted by time (ties in a seeded random order), one
per rating, built with one lexsort and index arithmetic (no per-user loop). At prediction time a user's
history is their last ``length - 1`` training ratings, whatever the movie asked about.

Export (the artifact contract is plain ``.npy`` + sha256): the network as ONNX bytes in a uint8 array
``sequence_onnx``, each user's last ``length - 1`` training (movie code, rating) as ``seq_items`` (int32,
-1 = padding, left-padded, most recent last) and ``seq_ratings`` (float32), and ``user_feature_codes``
(int64, (n_users, n_features), 0 = unknown). ``movierec.sequence_runtime.SequenceScorer`` runs it with
numpy + onnxruntime. The standard factor arrays hold a biased MF fitted on the same training data
(``retrieval="mf"``, the default) so the service can retrieve candidates with FAISS and re-rank them with
this model; ``movierec.artifacts.predict`` is then that MF's prediction, not this model's. With
``retrieval="none"`` they hold zero user factors, the movie embeddings and this model's movie biases.
``score_items`` ranks the way the service would: the retrieval model's top ``rerank`` unseen movies,
ordered by this model's predicted rating, ahead of the rest in retrieval order.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from trainer import losses
from trainer.data.dataset import RatingScale, RatingsData
from trainer.models.base import ModelExport, Recommender, register
from trainer.training import (
    EarlyStopping,
    EpochMetrics,
    History,
    OptimConfig,
    make_optimizer,
    make_scheduler,
    record_epoch,
    resolve_batch_size,
)

log = logging.getLogger(__name__)

#: ml-1m's age groups (1: under 18, 18: 18-24, ..., 56: 56+); ml-100k's exact ages are bucketed the same way.
AGE_EDGES = (18, 25, 35, 45, 50, 56)
USER_FEATURES = ("gender", "age", "occupation")
ONNX_INPUTS = ("hist_items", "hist_ratings", "target_items", "user_features", "user_ids")
ONNX_OPSET = 18


@dataclass(frozen=True)
class SequenceParams:
    """Hyper-parameters of the sequence model; defaults are the tuned ones (see the module docstring)."""

    dim: int = 32  # token (movie, rating, position) embedding size = transformer width
    length: int = 16  # tokens per example: length - 1 history ratings + the target movie
    heads: int = 2
    layers: int = 1
    ff: int = 64  # transformer feed-forward width
    dropout: float = 0.3
    mlp: tuple[int, ...] = (64,)  # hidden widths of the rating MLP
    feature_dim: int = 8  # embedding size of each user feature (and of the user id)
    user_features: bool = True  # use RatingsData.user_features when the data has them
    user_id: bool = False  # add a learned user-id embedding
    retrieval: str = "mf"  # mf | none: what the artifact's factor arrays hold
    rerank: int = 100  # score_items: retrieval candidates re-ranked by this model
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-3, epochs=8, patience=0, l2=0.0))

    def __post_init__(self) -> None:
        if self.dim < 1 or self.layers < 1 or self.heads < 1 or self.ff < 1 or self.feature_dim < 1:
            raise ValueError("sequence: dim, layers, heads, ff and feature_dim must be >= 1")
        if self.dim % self.heads:
            raise ValueError(f"sequence: dim ({self.dim}) must be a multiple of heads ({self.heads})")
        if self.length < 2:
            raise ValueError(f"sequence length must be >= 2 (one history rating + the target), got {self.length}")
        if any(w < 1 for w in self.mlp):
            raise ValueError("sequence: mlp widths must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"sequence dropout must be in [0, 1), got {self.dropout}")
        if self.retrieval not in ("mf", "none"):
            raise ValueError(f"unknown sequence retrieval {self.retrieval!r}; expected 'mf' or 'none'")
        if self.rerank < 1:
            raise ValueError(f"sequence rerank must be >= 1, got {self.rerank}")

    @classmethod
    def from_settings(cls, s: Any) -> SequenceParams:
        """From :class:`trainer.config.TrainSettings` (duck-typed: config imports the models, not back)."""
        return cls(
            dim=s.dim,
            length=s.sequence_length,
            heads=s.sequence_heads,
            layers=s.sequence_layers,
            ff=s.sequence_ff,
            dropout=s.sequence_dropout,
            mlp=tuple(s.sequence_mlp),
            feature_dim=s.sequence_feature_dim,
            user_features=s.sequence_user_features,
            user_id=s.sequence_user_id,
            retrieval=s.sequence_retrieval,
            rerank=s.sequence_rerank,
            optim=OptimConfig.from_settings(s, l2=0.0, l2_bias=0.0),
        )


# ------------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------------


def encode_user_features(features: Any, n_users: int) -> tuple[np.ndarray, list[str], list[int]]:
    """(n_users, n_features) int64 codes (0 = unknown), the feature names and each one's cardinality.

    gender and occupation: codes of the sorted distinct values; age: ml-1m's groups (``AGE_EDGES``), so
    ml-100k's exact ages and ml-1m's group codes land in the same 7 buckets. ``None`` gives (n_users, 0).
    """
    if features is None or len(features) != n_users:
        return np.zeros((n_users, 0), dtype=np.int64), [], []
    cols, names, cards = [], [], []
    for name in USER_FEATURES:
        if name not in features:
            continue
        values = features[name].to_numpy()
        if name == "age":
            ages = values.astype(np.int64)
            codes = np.where(ages >= 0, np.searchsorted(np.asarray(AGE_EDGES), ages, side="right") + 1, 0)
            card = len(AGE_EDGES) + 2
        else:
            as_str = values.astype(str)
            known = (as_str != "") & (as_str != "-1")
            vocab = np.unique(as_str[known])
            codes = np.where(known, np.searchsorted(vocab, as_str) + 1, 0)
            card = len(vocab) + 1
        cols.append(codes.astype(np.int64))
        names.append(name)
        cards.append(int(card))
    return np.stack(cols, axis=1), names, cards


@dataclass(frozen=True)
class Windows:
    """One example per rating: its user, the previous ``length - 1`` ratings (padded) and the target."""

    users: np.ndarray  # (n,) int64
    hist_items: np.ndarray  # (n, length - 1) int32, ``pad`` where there is no earlier rating
    hist_ratings: np.ndarray  # (n, length - 1) float32, 0 at padding
    targets: np.ndarray  # (n,) int64
    ratings: np.ndarray  # (n,) float32
    rows: np.ndarray  # (n,) index of the rating in the input arrays


def time_order(users: np.ndarray, timestamps: np.ndarray, seed: int) -> np.ndarray:
    """Row order by (user, timestamp), ties broken in a seeded random order (as ``leave_last_n`` does)."""
    tie = np.random.default_rng(seed).permutation(len(users))
    return np.lexsort((tie, timestamps, users))


def sliding_windows(
    users: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
    timestamps: np.ndarray,
    n_history: int,
    pad: int,
    seed: int,
) -> Windows:
    """Every rating with the ``n_history`` ratings its user made just before it, fully vectorised."""
    order = time_order(users, timestamps, seed)
    u, it, r = users[order].astype(np.int64), items[order].astype(np.int64), ratings[order].astype(np.float32)
    n = len(order)
    start = np.zeros(n, dtype=np.int64)
    if n:
        new_user = np.concatenate(([True], u[1:] != u[:-1]))
        start = np.maximum.accumulate(np.where(new_user, np.arange(n), 0))
    offsets = np.arange(-n_history, 0, dtype=np.int64)
    idx = np.arange(n, dtype=np.int64)[:, None] + offsets[None, :]
    valid = idx >= start[:, None]
    safe = np.where(valid, idx, 0)
    hist_items = np.where(valid, it[safe] if n else safe, pad)
    hist_ratings = np.where(valid, r[safe] if n else 0.0, 0.0).astype(np.float32)
    return Windows(u, hist_items.astype(np.int32), hist_ratings, it, r, order)


def last_histories(
    users: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
    timestamps: np.ndarray,
    n_users: int,
    n_history: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Each user's last ``n_history`` (movie code, rating), left-padded with (-1, 0): (n_users, n_history)."""
    order = time_order(users, timestamps, seed)
    u = users[order].astype(np.int64)
    counts = np.bincount(u, minlength=n_users)
    ends = np.cumsum(counts)
    idx = ends[:, None] + np.arange(-n_history, 0)[None, :]
    valid = idx >= (ends - counts)[:, None]
    safe = np.where(valid, idx, 0)
    seq_items = np.where(valid, items[order][safe] if len(order) else 0, -1).astype(np.int32)
    seq_ratings = np.where(valid, ratings[order][safe] if len(order) else 0.0, 0.0).astype(np.float32)
    return seq_items, seq_ratings


# ------------------------------------------------------------------------------------------------------
# Network
# ------------------------------------------------------------------------------------------------------


class SequenceTransformer(nn.Module):
    """The network only: (history, target, user) -> rating. Inputs as in :data:`ONNX_INPUTS`."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        scale: RatingScale,
        params: SequenceParams,
        feature_cards: list[int],
        offset: float,
    ) -> None:
        super().__init__()
        p = params
        d = p.dim
        self.pad = n_items
        self.n_history = p.length - 1
        self.low, self.step = float(scale.low), float(scale.step)
        self.n_rating_codes = int(round((scale.high - scale.low) / scale.step)) + 1
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=n_items)
        nn.init.normal_(self.item_emb.weight, 0.0, 0.1)
        with torch.no_grad():
            self.item_emb.weight[n_items].zero_()
        # 0 = padding, 1..R = the rating classes, R + 1 = the target's unknown rating
        self.rating_emb = nn.Embedding(self.n_rating_codes + 2, d)
        nn.init.normal_(self.rating_emb.weight, 0.0, 0.1)
        self.pos_emb = nn.Embedding(p.length, d)
        nn.init.normal_(self.pos_emb.weight, 0.0, 0.1)
        layer = nn.TransformerEncoderLayer(d, p.heads, p.ff, p.dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, p.layers, enable_nested_tensor=False)
        self.feature_embs = nn.ModuleList(nn.Embedding(c, p.feature_dim) for c in feature_cards)
        self.user_emb = nn.Embedding(n_users, p.feature_dim) if p.user_id else None
        self.user_bias = nn.Embedding(n_users, 1) if p.user_id else None
        if self.user_bias is not None:
            nn.init.zeros_(self.user_bias.weight)
        width = 3 * d + p.feature_dim * (len(feature_cards) + (1 if p.user_id else 0))
        mlp: list[nn.Module] = []
        for w in p.mlp:
            mlp += [nn.Linear(width, w), nn.ReLU(), nn.Dropout(p.dropout)]
            width = w
        mlp.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*mlp)
        self.item_bias = nn.Embedding(n_items + 1, 1)
        nn.init.zeros_(self.item_bias.weight)
        self.offset = nn.Parameter(torch.tensor(float(offset)))

    def rating_codes(self, ratings: torch.Tensor, is_pad: torch.Tensor) -> torch.Tensor:
        codes = torch.clamp(torch.round((ratings - self.low) / self.step), 0, self.n_rating_codes - 1).long() + 1
        return torch.where(is_pad, torch.zeros_like(codes), codes)

    def forward(
        self,
        hist_items: torch.Tensor,
        hist_ratings: torch.Tensor,
        target_items: torch.Tensor,
        user_features: torch.Tensor,
        user_ids: torch.Tensor,
    ) -> torch.Tensor:
        is_pad = hist_items == self.pad
        items = torch.cat([hist_items, target_items.unsqueeze(1)], dim=1)
        codes = torch.cat(
            [self.rating_codes(hist_ratings, is_pad), torch.full_like(target_items, self.n_rating_codes + 1)[:, None]],
            dim=1,
        )
        positions = torch.arange(items.shape[1], device=items.device)
        x = self.item_emb(items) + self.rating_emb(codes) + self.pos_emb(positions)[None]
        mask = torch.cat([is_pad, torch.zeros_like(is_pad[:, :1])], dim=1)
        h = self.encoder(x, src_key_padding_mask=mask)
        keep = (~is_pad).unsqueeze(2).to(h.dtype)
        hist_mean = (h[:, :-1] * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        parts = [h[:, -1], hist_mean, self.item_emb(target_items)]
        for k, emb in enumerate(self.feature_embs):
            parts.append(emb(user_features[:, k]))
        if self.user_emb is not None:
            parts.append(self.user_emb(user_ids))
        out = self.mlp(torch.cat(parts, dim=1)).squeeze(1) + self.item_bias(target_items).squeeze(1) + self.offset
        if self.user_bias is not None:
            out = out + self.user_bias(user_ids).squeeze(1)
        return out


# ------------------------------------------------------------------------------------------------------
# Recommender
# ------------------------------------------------------------------------------------------------------


@register
class SequenceModel(Recommender):
    """Trains :class:`SequenceTransformer` on sliding windows with MSE; see the module docstring."""

    kind = "sequence"

    def __init__(self, params: Any, device: torch.device, generator: torch.Generator | None = None) -> None:
        self.params = params if isinstance(params, SequenceParams) else SequenceParams.from_settings(params)
        self.device = device
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.seed = int(self.generator.initial_seed()) % 2**32
        self.module: SequenceTransformer | None = None
        self.scale = RatingScale()
        self.seq_items = np.zeros((0, self.params.length - 1), dtype=np.int32)
        self.seq_ratings = np.zeros((0, self.params.length - 1), dtype=np.float32)
        self.user_feature_codes = np.zeros((0, 0), dtype=np.int64)
        self.feature_names: list[str] = []
        self.feature_cards: list[int] = []
        self.retrieval: Recommender | None = None
        self.seen_indptr = np.zeros(1, dtype=np.int64)
        self.seen_indices = np.zeros(0, dtype=np.int32)
        self._factors: dict[str, Any] | None = None

    # ---------------------------------------------------------------------------------------- training

    def _tensors(self, w: Windows, sel: np.ndarray) -> tuple[torch.Tensor, ...]:
        dev = self.device
        users = w.users[sel]
        return (
            torch.as_tensor(w.hist_items[sel], device=dev),
            torch.as_tensor(w.hist_ratings[sel], device=dev),
            torch.as_tensor(w.targets[sel], device=dev),
            torch.as_tensor(self.user_feature_codes[users], device=dev),
            torch.as_tensor(users, device=dev),
            torch.as_tensor(w.ratings[sel], device=dev),
        )

    def fit(
        self,
        train: RatingsData,
        valid: RatingsData | None = None,
        on_epoch: Callable[[EpochMetrics], None] | None = None,
    ) -> History:
        p, dev = self.params, self.device
        if len(train) == 0:
            raise ValueError("cannot train on an empty ratings set")
        if not train.has_timestamps:
            log.warning("%s has no timestamps: sequences follow file order", train.source or "data")
        self.scale = train.scale
        n_users, n_items = train.n_users, train.n_items
        if p.user_features:
            codes, self.feature_names, self.feature_cards = encode_user_features(train.user_features, n_users)
        else:
            codes, self.feature_names, self.feature_cards = np.zeros((n_users, 0), np.int64), [], []
        self.user_feature_codes = codes
        seen = train if valid is None or len(valid) == 0 else _concat(train, valid)
        is_valid = np.concatenate([np.zeros(len(train), bool), np.ones(len(seen) - len(train), bool)])
        # Windows over everything known (validation ratings are history too); targets split by origin.
        w = sliding_windows(seen.users, seen.items, seen.ratings, seen.timestamps, p.length - 1, n_items, self.seed)
        valid_rows = is_valid[w.rows]
        train_sel, valid_sel = np.flatnonzero(~valid_rows), np.flatnonzero(valid_rows)
        self.module = module = SequenceTransformer(
            n_users, n_items, train.scale, p, self.feature_cards, float(np.mean(train.ratings))
        ).to(dev)
        t = self._tensors(w, train_sel)
        v = self._tensors(w, valid_sel) if len(valid_sel) else None
        n = len(train_sel)
        batch = resolve_batch_size(p.optim.batch_size, n)
        opt = make_optimizer(module.parameters(), p.optim)
        sched = make_scheduler(opt, p.optim, math.ceil(n / batch))
        use_amp = p.optim.amp and dev.type == "cuda"
        log.info("sequence: %d windows of %d tokens in batches of %d on %s", n, p.length, batch, dev)

        history = History()
        stopper = EarlyStopping(p.optim.patience, lambda: copy.deepcopy(module.state_dict()))
        for epoch in range(1, p.optim.epochs + 1):
            t0 = time.perf_counter()
            module.train()
            perm = torch.randperm(n, generator=self.generator).to(dev)
            total_sse = torch.zeros((), device=dev, dtype=torch.float64)
            for s in range(0, n, batch):
                idx = perm[s : s + batch]
                with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp):
                    pred = module(t[0][idx].long(), *(x[idx] for x in t[1:5])).float()
                loss = losses.mse(pred, t[5][idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                total_sse += loss.detach().double() * len(idx)
            train_mse = float(total_sse) / n
            valid_rmse = self._rmse(v) if v is not None else None
            metrics = EpochMetrics(
                epoch=epoch,
                train_loss=train_mse,
                train_rmse=math.sqrt(train_mse),
                valid_rmse=valid_rmse,
                valid_loss=valid_rmse**2 if valid_rmse is not None else None,
                lr=float(opt.param_groups[0]["lr"]),
                seconds=time.perf_counter() - t0,
            )
            record_epoch(history, metrics, on_epoch, "lower the lr")
            if stopper.update(valid_rmse, epoch, history):
                break
        stopper.restore(history, module.load_state_dict)

        self.seq_items, self.seq_ratings = last_histories(
            seen.users, seen.items, seen.ratings, seen.timestamps, n_users, p.length - 1, self.seed
        )
        self.seen_indptr, self.seen_indices = seen.user_item_csr()
        self.retrieval = self._fit_retrieval(train, valid) if p.retrieval == "mf" else None
        self._factors = None
        return history

    def _fit_retrieval(self, train: RatingsData, valid: RatingsData | None) -> Recommender:
        """Biased MF with the trainer's MF defaults (the candidate generator the service re-ranks)."""
        from trainer.models.mf import MFModel, MFParams

        params = MFParams(optim=OptimConfig(l2=0.15, epochs=25, patience=3))
        mf = MFModel(params, self.device, torch.Generator().manual_seed(self.seed))
        mf.fit(train, valid)
        return mf

    @torch.no_grad()
    def _rmse(self, v: tuple[torch.Tensor, ...], chunk: int = 65536) -> float:
        module = self._require().eval()
        sse = 0.0
        for s in range(0, len(v[5]), chunk):
            pred = module(v[0][s : s + chunk].long(), *(x[s : s + chunk] for x in v[1:5])).float()
            pred = pred.clamp(self.scale.low, self.scale.high)
            sse += float(((pred - v[5][s : s + chunk]) ** 2).sum(dtype=torch.float64))
        return math.sqrt(sse / max(1, len(v[5])))

    # ---------------------------------------------------------------------------------------- inference

    def _require(self) -> SequenceTransformer:
        if self.module is None:
            raise RuntimeError("model is not trained; call fit() first")
        return self.module

    def model_inputs(self, users: np.ndarray, items: np.ndarray) -> dict[str, np.ndarray]:
        """The network's inputs for (user, movie) pairs: each user's stored history, features and id."""
        users = np.asarray(users, dtype=np.int64)
        pad = self._require().pad
        hist = self.seq_items[users].astype(np.int64)
        return {
            "hist_items": np.where(hist < 0, pad, hist),
            "hist_ratings": self.seq_ratings[users],
            "target_items": np.asarray(items, dtype=np.int64),
            "user_features": self.user_feature_codes[users],
            "user_ids": users,
        }

    @torch.no_grad()
    def predict(self, users: np.ndarray, items: np.ndarray, chunk: int = 65536) -> np.ndarray:
        module = self._require().eval()
        out = []
        for s in range(0, len(users), chunk):
            feeds = self.model_inputs(users[s : s + chunk], items[s : s + chunk])
            args = [torch.as_tensor(feeds[name], device=self.device) for name in ONNX_INPUTS]
            out.append(module(*args).float().cpu().numpy())
        pred = np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
        return np.clip(pred, self.scale.low, self.scale.high).astype(np.float32)

    def score_items(self, users: np.ndarray) -> np.ndarray:
        """Retrieval order, with the top ``rerank`` unseen movies re-ordered by predicted rating, first."""
        a = self._factor_arrays()
        users = np.asarray(users, dtype=np.int64)
        base = a["user_factors"][users] @ a["item_factors"].T + a["item_bias"]
        scores = np.array(base, dtype=np.float64)
        for row, u in enumerate(users):
            scores[row, self.seen_indices[self.seen_indptr[u] : self.seen_indptr[u + 1]]] = -np.inf
        k = min(self.params.rerank, scores.shape[1])
        cand = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        rows = np.repeat(np.arange(len(users)), k)
        ok = np.isfinite(scores[rows, cand.ravel()])
        rows, cols = rows[ok], cand.ravel()[ok]
        rated = self.predict(users[rows], cols)
        out = base.astype(np.float64) - (base.max() + self.scale.high + 1.0)  # every non-candidate below
        out[rows, cols] = rated
        return out

    # ---------------------------------------------------------------------------------------- export

    def _factor_arrays(self) -> dict[str, Any]:
        if self._factors is None:
            self._factors = self._build_factor_arrays()
        return dict(self._factors)

    def _build_factor_arrays(self) -> dict[str, Any]:
        if self.retrieval is not None:
            exported = self.retrieval.export()
            return {**exported.arrays, "_offset": exported.global_offset, "_output": exported.output}
        module = self._require()
        n_users = len(self.seq_items)
        with torch.no_grad():
            items = module.item_emb.weight[:-1].detach().float().cpu().numpy().copy()
            bias = module.item_bias.weight[:-1, 0].detach().float().cpu().numpy().copy()
        return {
            "user_factors": np.zeros((n_users, items.shape[1]), dtype=np.float32),
            "item_factors": items,
            "user_bias": np.zeros(n_users, dtype=np.float32),
            "item_bias": bias,
            "_offset": float(module.offset.detach()),
            "_output": {"transform": "linear", "low": self.scale.low, "high": self.scale.high},
        }

    def onnx_bytes(self) -> bytes:
        """The network as an ONNX model (dynamic batch), serialised in memory."""
        module = self._require()
        cpu = copy.deepcopy(module).cpu().eval()
        feeds = self.model_inputs(np.array([0, 0]), np.array([0, 1]))
        args = tuple(torch.as_tensor(feeds[name]) for name in ONNX_INPUTS)
        batch = torch.export.Dim("batch")
        dynamic = {name: {0: batch} for name in ONNX_INPUTS}
        # The exporter reports progress and optional-dependency notes through logging and warnings.
        onnx_log = logging.getLogger("torch.onnx")
        level = onnx_log.level
        onnx_log.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                program = torch.onnx.export(
                    cpu,
                    args,
                    input_names=list(ONNX_INPUTS),
                    output_names=["rating"],
                    dynamic_shapes=dynamic,
                    opset_version=ONNX_OPSET,
                    dynamo=True,
                    verbose=False,
                )
        finally:
            onnx_log.setLevel(level)
        buf = io.BytesIO()
        if program is None:
            raise RuntimeError("torch.onnx.export returned no program")
        buf.write(program.model_proto.SerializeToString())
        return buf.getvalue()

    def export(self) -> ModelExport:
        module = self._require()
        a = self._factor_arrays()
        offset, output = a.pop("_offset"), a.pop("_output")
        arrays = {k: np.asarray(v, dtype=np.float32) for k, v in a.items()}
        arrays["sequence_onnx"] = np.frombuffer(self.onnx_bytes(), dtype=np.uint8).copy()
        arrays["seq_items"] = self.seq_items.astype(np.int32)
        arrays["seq_ratings"] = self.seq_ratings.astype(np.float32)
        arrays["user_feature_codes"] = self.user_feature_codes.astype(np.int64)
        hp = asdict(self.params)
        hp["mlp"] = list(self.params.mlp)
        hp["sequence"] = {
            "inputs": list(ONNX_INPUTS),
            "pad_item": module.pad,
            "n_history": module.n_history,
            "user_features": self.feature_names,
            "feature_cards": self.feature_cards,
            "opset": ONNX_OPSET,
        }
        return ModelExport(
            arrays=arrays,
            global_offset=float(offset),
            output=output,
            hyperparameters=hp,
            extra={
                "predict": "movierec.sequence_runtime.SequenceScorer (ONNX in sequence_onnx)",
                "factors": "biased MF (retrieval)" if self.params.retrieval == "mf" else "movie embeddings",
            },
        )


def _concat(a: RatingsData, b: RatingsData) -> RatingsData:
    return replace(
        a,
        users=np.concatenate([a.users, b.users]),
        items=np.concatenate([a.items, b.items]),
        ratings=np.concatenate([a.ratings, b.ratings]),
        timestamps=np.concatenate([a.timestamps, b.timestamps]),
    )
