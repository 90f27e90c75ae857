"""The epoch loop shared by the gradient-trained models.

Ratings live on the device as three tensors; an epoch is one permutation and a sequence of large index
slices of it, so there is no per-rating Python and no DataLoader. The loop returns per-epoch metrics and
leaves the best weights (by validation RMSE) in the model when early stopping is on.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from trainer import losses

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptimConfig:
    optimizer: str = "adamw"  # adam | adamw | sgd
    lr: float = 5e-3
    weight_decay: float = 0.0  # decoupled (AdamW) / coupled (Adam, SGD) decay on every parameter
    l2: float = 0.05  # batch L2 on the embedding rows a batch touched
    l2_bias: float = 0.0  # batch L2 on the bias entries a batch touched
    schedule: str = "onecycle"  # onecycle | constant
    epochs: int = 20
    batch_size: int = 0  # 0 = auto: see resolve_batch_size
    patience: int = 3  # early stopping: epochs without validation improvement; 0 disables
    momentum: float = 0.9  # SGD only
    amp: bool = False  # bfloat16 autocast on CUDA

    @classmethod
    def from_settings(cls, s: Any, **overrides: Any) -> OptimConfig:
        """The optimisation fields of :class:`trainer.config.TrainSettings` (duck-typed: config imports the
        models, not back); ``overrides`` replace fields a kind sets itself (e.g. ``l2=0.0``)."""
        fields = dict(optimizer=s.optimizer, lr=s.lr, weight_decay=s.weight_decay, l2=s.l2, l2_bias=s.l2_bias,
                      schedule=s.schedule, epochs=s.epochs, batch_size=s.batch_size, patience=s.patience,
                      amp=s.amp)  # fmt: skip
        return cls(**{**fields, **overrides})


@dataclass
class EpochMetrics:
    epoch: int
    train_loss: float
    train_rmse: float
    valid_rmse: float | None
    valid_loss: float | None
    lr: float
    seconds: float


@dataclass
class History:
    epochs: list[EpochMetrics] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False

    def as_dicts(self) -> list[dict[str, float | int | None]]:
        return [vars(e).copy() for e in self.epochs]


def record_epoch(
    history: History, metrics: EpochMetrics, on_epoch: Callable[[EpochMetrics], None] | None, what: str
) -> None:
    """Append an epoch's metrics, report them, and stop on a non-finite training loss (``what`` says how)."""
    history.epochs.append(metrics)
    if on_epoch is not None:
        on_epoch(metrics)
    if not math.isfinite(metrics.train_loss):
        raise FloatingPointError(f"training diverged at epoch {metrics.epoch} (loss {metrics.train_loss}); {what}")


@dataclass
class EarlyStopping:
    """Best-epoch bookkeeping shared by every model's epoch loop.

    ``snapshot`` captures the state to restore (a state_dict copy, or tensors an ALS sweep replaced);
    ``update`` is called once per epoch with the validation value (lower is better) and says whether to
    stop; ``restore`` puts the best state back at the end (or, with no validation, names the last epoch).
    """

    patience: int
    snapshot: Callable[[], Any]
    best: float = math.inf
    since_best: int = 0
    best_state: Any = None

    def update(self, value: float | None, epoch: int, history: History) -> bool:
        if value is None or self.patience <= 0:
            return False
        if value < self.best - 1e-6:
            self.best, self.since_best, history.best_epoch = value, 0, epoch
            self.best_state = self.snapshot()
            return False
        self.since_best += 1
        if self.since_best < self.patience:
            return False
        history.stopped_early = True
        log.info("early stop at epoch %d; best epoch %s", epoch, history.best_epoch)
        return True

    def restore(self, history: History, load: Callable[[Any], None]) -> None:
        if self.best_state is not None:
            load(self.best_state)
        elif history.epochs:
            history.best_epoch = history.epochs[-1].epoch


@dataclass(frozen=True)
class RatingTensors:
    """(users, items, ratings) on the training device."""

    users: torch.Tensor
    items: torch.Tensor
    ratings: torch.Tensor

    @classmethod
    def from_arrays(cls, users, items, ratings, device: torch.device) -> RatingTensors:  # type: ignore[no-untyped-def]
        return cls(
            torch.as_tensor(users, dtype=torch.long, device=device),
            torch.as_tensor(items, dtype=torch.long, device=device),
            torch.as_tensor(ratings, dtype=torch.float32, device=device),
        )

    def __len__(self) -> int:
        return int(self.ratings.shape[0])


def make_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:  # type: ignore[no-untyped-def]
    name = cfg.optimizer.lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; expected adam, adamw or sgd")


def make_scheduler(opt: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int):  # type: ignore[no-untyped-def]
    if cfg.schedule == "constant":
        return None
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, epochs=cfg.epochs, steps_per_epoch=max(1, steps_per_epoch)
        )
    raise ValueError(f"unknown schedule {cfg.schedule!r}; expected onecycle or constant")


AUTO_BATCH_MIN = 1024
AUTO_BATCH_MAX = 65536
AUTO_STEPS_PER_EPOCH = 256


def resolve_batch_size(batch_size: int, n: int) -> int:
    """The batch size an epoch uses; ``0`` picks one from the data size.

    Why auto: per-step cost on a CPU is dominated by fixed overhead (kernel dispatch, the dense optimizer
    step over whole embedding tables), not by the batch, so a fixed small batch that suits ml-100k makes
    ml-25m take hours per epoch. Auto keeps 1024 (the tuned value) up to ~256k ratings and beyond that
    grows the batch, as a power of two, so an epoch is about 256 steps, capped at 65,536 rows.
    """
    if batch_size > 0:
        return batch_size
    target = max(1, n // AUTO_STEPS_PER_EPOCH)
    size = 1 << max(0, round(math.log2(target)))
    return int(min(max(size, AUTO_BATCH_MIN), AUTO_BATCH_MAX))


@torch.no_grad()
def evaluate_rmse(model: nn.Module, data: RatingTensors, batch_size: int = 65536) -> float:
    """RMSE of model(users, items) over a whole tensor set, in batches to bound memory."""
    model.eval()
    sse = torch.zeros((), dtype=torch.float64, device=data.ratings.device)
    for start in range(0, len(data), batch_size):
        sl = slice(start, start + batch_size)
        pred = model(data.users[sl], data.items[sl]).float()
        sse += ((pred - data.ratings[sl]) ** 2).sum(dtype=torch.float64)
    return math.sqrt(float(sse) / max(1, len(data)))


def fit(
    model: nn.Module,
    train: RatingTensors,
    cfg: OptimConfig,
    valid: RatingTensors | None = None,
    generator: torch.Generator | None = None,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
) -> History:
    """Train ``model`` (which must expose ``raw`` and ``transform``) and return per-epoch metrics.

    Loss = MSE + l2 * batch-L2(embedding rows) + l2_bias * batch-L2(bias entries), plus
    ``model.regularizer()`` once per step when the model has one (a term over whole parameter tables rather
    than the batch, e.g. the gravity model's). With a validation set and ``patience > 0`` the best epoch's
    weights are restored at the end.
    """
    device = train.ratings.device
    n = len(train)
    if n == 0:
        raise ValueError("cannot train on an empty ratings set")
    batch_size = resolve_batch_size(cfg.batch_size, n)
    log.info("training on %d ratings in batches of %d on %s", n, batch_size, device)
    steps = math.ceil(n / batch_size)
    opt = make_optimizer(model.parameters(), cfg)
    sched = make_scheduler(opt, cfg, steps)
    use_amp = cfg.amp and device.type == "cuda"
    history = History()
    stopper = EarlyStopping(cfg.patience, lambda: copy.deepcopy(model.state_dict()))
    regularizer = getattr(model, "regularizer", None)

    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=generator).to(device)
        total_loss = torch.zeros((), device=device, dtype=torch.float64)
        total_sse = torch.zeros((), device=device, dtype=torch.float64)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            users, items, target = train.users[idx], train.items[idx], train.ratings[idx]
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                raw, touched = model.raw(users, items)
                pred = model.transform(raw).float()
            err = losses.mse(pred, target)
            loss = err
            if cfg.l2:
                loss = loss + cfg.l2 * losses.batch_l2(touched["user"], touched["item"])
            if cfg.l2_bias and "user_bias" in touched:
                loss = loss + cfg.l2_bias * losses.batch_l2(touched["user_bias"], touched["item_bias"])
            if regularizer is not None:
                loss = loss + regularizer()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            k = idx.shape[0]
            total_loss += loss.detach().double() * k
            total_sse += err.detach().double() * k
        train_loss = float(total_loss) / n
        train_rmse = math.sqrt(float(total_sse) / n)
        valid_rmse = evaluate_rmse(model, valid) if valid is not None and len(valid) else None
        metrics = EpochMetrics(
            epoch=epoch,
            train_loss=train_loss,
            train_rmse=train_rmse,
            valid_rmse=valid_rmse,
            valid_loss=valid_rmse**2 if valid_rmse is not None else None,
            lr=float(opt.param_groups[0]["lr"]),
            seconds=time.perf_counter() - t0,
        )
        record_epoch(history, metrics, on_epoch, "lower the lr")
        if stopper.update(valid_rmse, epoch, history):
            break
    stopper.restore(history, model.load_state_dict)
    return history
