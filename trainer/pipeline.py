"""The training job as plain functions: data -> split -> fit -> evaluate -> publish.

The CLI only parses flags into :class:`~trainer.config.TrainSettings` and calls :func:`train`; tests and
benchmarks call the same functions. Nothing is written until every step before publishing succeeded, and
publishing itself is atomic (see :mod:`movierec.artifacts`), so a failed run leaves no artifact.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from movierec import artifacts
from trainer.config import TrainSettings
from trainer.data.dataset import DataError, RatingsData
from trainer.data.download import resolve_data
from trainer.data.movielens import load_dataset
from trainer.data.splits import leave_last_n, ml100k_fold, random_holdout, validation_split
from trainer.evaluation import baseline_table, ranking_baselines, ranking_metrics, rating_metrics
from trainer.models.base import Recommender, model_class
from trainer.training import EpochMetrics, History

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    version_dir: Path | None
    metrics: dict[str, Any]
    history: History
    train_seconds: float
    model: Recommender


def load_data(settings: TrainSettings) -> tuple[RatingsData, Path]:
    """Resolve ``--data`` / ``MOVIEREC_DATA`` / ``--dataset`` to a path and load it, or read the store.

    With ``from_db`` the ratings come from the SQL store at ``database_url``; the path returned then only
    names the database (no split reads files except ml100k-fold, which is refused up front).
    """
    if settings.from_db:
        from service.store.database import make_engine, mask_url
        from trainer.data.store import read_from_store

        if settings.split == "ml100k-fold":
            raise DataError(
                "--split ml100k-fold reads the official u1.base/u1.test files and cannot run on --from-db; "
                "use --split random or leave-last, or train on the ml-100k files with --data PATH"
            )
        engine = make_engine(settings.database_url)
        try:
            return read_from_store(engine), Path(mask_url(engine.url))
        finally:
            engine.dispose()
    path = resolve_data(settings.dataset, settings.data, settings.cache_dir)
    return load_dataset(path), path


def split_data(data: RatingsData, path: Path, settings: TrainSettings) -> tuple[RatingsData, RatingsData | None]:
    """The train/test split the settings name; ``none`` trains on everything (no test metrics)."""
    if settings.split == "random":
        return random_holdout(data, settings.test_fraction, settings.seed)
    if settings.split == "leave-last":
        return leave_last_n(data, settings.leave_last, settings.seed)
    if settings.split == "ml100k-fold":
        fold: int | str = int(settings.fold) if settings.fold.isdigit() else settings.fold
        return ml100k_fold(path, fold, data)
    return data, None


def build_model(settings: TrainSettings) -> Recommender:
    """Instantiate the configured model kind with an explicit device and seeded generator."""
    from trainer.device import resolve_device, seed_everything

    generator = seed_everything(settings.seed)
    device = resolve_device(settings.device)
    cls = model_class(settings.model)
    if settings.model == "mf":
        return cls(settings.mf_params(), device, generator)  # type: ignore[call-arg]
    return cls(settings, device, generator)  # type: ignore[call-arg]


def evaluate_predictions(
    predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
    score_items: Callable[[np.ndarray], np.ndarray],
    seen: RatingsData,
    test: RatingsData,
    ks: tuple[int, ...] = (10, 20),
    threshold: float = 4.0,
    with_baselines: bool = True,
) -> dict[str, dict[str, float]]:
    """The metrics table: the model's rating and ranking metrics beside the baselines on the same split.

    ``seen`` is everything the model trained on (train + validation): it defines the baselines and which
    items are excluded from each user's ranking.
    """
    model_row = rating_metrics(test.ratings, predict(test.users, test.items))
    model_row.update(ranking_metrics(score_items, seen, test, ks, threshold))
    table = {"model": model_row}
    if with_baselines:
        for name, row in baseline_table(seen, test).items():
            table[name] = row
        for name, row in ranking_baselines(seen, test, ks, threshold).items():
            table.setdefault(name, {}).update(row)
    return table


def export_arrays(model: Recommender, seen: RatingsData) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Model arrays plus the dataset metadata the service needs (ids, already-rated CSR, titles...)."""
    exported = model.export()
    indptr, indices = seen.user_item_csr()
    counts = np.bincount(seen.items, minlength=seen.n_items)
    sums = np.bincount(seen.items, weights=seen.ratings.astype(np.float64), minlength=seen.n_items)
    arrays = dict(exported.arrays)
    arrays.update(
        user_ids=_id_array(seen.user_ids),
        item_ids=_id_array(seen.item_ids),
        rated_indptr=indptr.astype(np.int64),
        rated_indices=indices.astype(np.int32),
        item_titles=np.asarray(seen.item_titles).astype(str),
        item_years=np.asarray(seen.item_years, dtype=np.int16),
        item_genres=np.asarray(seen.item_genres, dtype=np.uint8),
        # Per-movie training statistics: the service's cold-start popularity (damped mean) needs them.
        item_rating_count=counts.astype(np.int64),
        item_rating_mean=np.where(counts > 0, sums / np.maximum(counts, 1), 0.0).astype(np.float32),
    )
    fields = {
        "global_offset": exported.global_offset,
        "output": exported.output,
        "hyperparameters": exported.hyperparameters,
        "extra": exported.extra,
    }
    return arrays, fields


def _id_array(ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids)
    return ids.astype(np.int64) if ids.dtype.kind in "iu" else ids.astype(str)


def train(
    settings: TrainSettings,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    publish: bool = True,
) -> TrainResult:
    """Run the whole job and publish a new artifact version (atomically) when ``publish`` is set."""
    data, path = load_data(settings)
    log.info("loaded %s: %d ratings, %d users, %d movies", data.source, len(data), data.n_users, data.n_items)
    if data.duplicates_dropped:
        log.warning("dropped %d duplicate (user, movie) ratings, keeping the latest", data.duplicates_dropped)
    seen, test = split_data(data, path, settings)
    if len(seen) == 0:
        raise DataError(f"{data.source}: the training split is empty")
    fit_on, valid = seen, None
    if settings.valid_fraction > 0 and settings.patience > 0:
        fit_on, valid = validation_split(seen, settings.valid_fraction, settings.seed + 1)

    model = build_model(settings)
    per_epoch_test: dict[int, dict[str, float]] = {}
    fit_callback = on_epoch
    if settings.track_test and test is not None and len(test):
        # Ablations plot test accuracy per epoch; the epoch loops only know the validation split, so the
        # pipeline (which holds the model and the test split) scores it after each epoch. Costs one
        # prediction pass per epoch; off by default.
        def fit_callback(m: EpochMetrics) -> None:
            row = rating_metrics(test.ratings, model.predict(test.users, test.items))
            per_epoch_test[m.epoch] = {"test_rmse": row["rmse"], "test_accuracy": row["accuracy"]}
            if on_epoch is not None:
                on_epoch(m)

    t0 = time.perf_counter()
    history = model.fit(fit_on, valid, fit_callback)
    train_seconds = time.perf_counter() - t0
    epoch_rows = history.as_dicts()
    for row in epoch_rows:
        row.update(per_epoch_test.get(int(row["epoch"] or 0), {}))

    metrics: dict[str, Any] = {
        "train_seconds": train_seconds,
        "epochs_run": len(history.epochs),
        "best_epoch": history.best_epoch,
        "history": epoch_rows,
        "split": settings.split,
        "n_train": len(fit_on),
        "n_valid": len(valid) if valid is not None else 0,
        "n_test": len(test) if test is not None else 0,
    }
    test_histogram = None
    if test is not None and len(test):
        metrics["test"] = evaluate_predictions(
            model.predict, model.score_items, seen, test, tuple(settings.ks), settings.relevance_threshold
        )
        test_histogram = _test_histogram(model, test, data)

    version_dir = None
    if publish:
        arrays, fields = export_arrays(model, seen)
        draft = artifacts.ManifestDraft(
            model_kind=model.kind,
            dims=artifacts.Dims(
                n_users=data.n_users, n_items=data.n_items, dim=int(arrays["user_factors"].shape[1])
            ),
            rating_scale=artifacts.ScaleSpec.model_validate(data.scale, from_attributes=True),
            output=artifacts.OutputSpec(**fields["output"]),
            global_offset=fields["global_offset"],
            hyperparameters={**fields["hyperparameters"], "seed": settings.seed, "split": settings.split},
            metrics=metrics,
            dataset=artifacts.DatasetInfo(
                source=data.source,
                fingerprint=data.fingerprint(),
                n_ratings=len(data),
                n_users=data.n_users,
                n_items=data.n_items,
            ),
            genre_names=list(data.genre_names),
            extra={**fields["extra"], "device": _device_name(model), "pid": os.getpid()},
        )
        version_dir = artifacts.publish(settings.artifacts_dir, draft, arrays)
        log.info("published %s", version_dir)
        _draw_report(version_dir, test_histogram)
    return TrainResult(version_dir, metrics, history, train_seconds, model)


def _test_histogram(model: Recommender, test: RatingsData, data: RatingsData) -> dict[str, Any] | None:
    """Histograms of predicted and true test ratings for the report: the one report input the artifact
    lacks (it holds no test split). None, with a warning, when they cannot be computed: a report is a
    convenience and must never fail a training run."""
    from movierec.report import rating_histogram

    try:
        scale = data.scale
        return rating_histogram(test.ratings, model.predict(test.users, test.items), scale.low, scale.high, scale.step)
    except Exception as e:  # any failure here only costs one report section
        log.warning("could not compute the test rating histograms for the report: %s", e)
        return None


def _draw_report(version_dir: Path, test_histogram: dict[str, Any] | None) -> None:
    """Write the training report of a just-published version (``ROOT/reports/<version>/``, see
    movierec.report_files). After the publish, and any failure only logged: the model is already
    served-ready and a plotting problem must not fail the run (``movierec report`` redraws it)."""
    from movierec.report import save_test_predictions, write_report

    try:
        if test_histogram is not None:
            save_test_predictions(version_dir, test_histogram)
        log.info("training report: %s", write_report(version_dir))
    except Exception as e:  # matplotlib missing, a drawing bug, a full disk: never a failed training run
        log.warning(
            "could not draw the training report of %s: %s (retry: movierec report %s)", version_dir.name, e, version_dir
        )


def _device_name(model: Recommender) -> str:
    device = getattr(model, "device", None)
    if device is None:
        return "cpu"
    from trainer.device import describe

    return describe(device)


def evaluate_artifact(artifact_dir: Path, settings: TrainSettings) -> dict[str, Any]:
    """Re-score a saved model on a split of a dataset, with numpy alone (the artifact's reference predict).

    Ratings of users or movies the artifact does not know are counted and left out: a saved model cannot
    score them, and a silent fallback would blur the comparison with the metrics recorded at training.
    """
    art = artifacts.load_version(artifact_dir)
    data, path = load_data(settings)
    seen, test = split_data(data, path, settings)
    if test is None or len(test) == 0:
        raise DataError("evaluate needs a split with a test set (use --split random, leave-last or ml100k-fold)")
    user_map = _code_map(data.user_ids, art.user_ids)
    item_map = _code_map(data.item_ids, art.item_ids)
    u = user_map[test.users]
    i = item_map[test.items]
    known = (u >= 0) & (i >= 0)
    preds = artifacts.predict(art, u[known], i[known])
    result: dict[str, Any] = {
        "version": art.version,
        "same_data": art.manifest.dataset.fingerprint == data.fingerprint(),
        "n_test": int(len(test)),
        "n_scored": int(known.sum()),
        "n_unknown": int((~known).sum()),
        "model": rating_metrics(test.ratings[known], preds),
    }
    if result["same_data"]:
        # Same data, same codes: the ranking protocol of training applies as is.
        def score_items(users: np.ndarray) -> np.ndarray:
            return art.user_factors[users] @ art.item_factors.T + art.item_bias

        result["model"].update(
            ranking_metrics(score_items, seen, test, tuple(settings.ks), settings.relevance_threshold)
        )
    return result


def _code_map(ids: np.ndarray, artifact_ids: np.ndarray) -> np.ndarray:
    """For each dataset code, the artifact's code of the same external id, or -1."""
    lookup = {str(v): k for k, v in enumerate(np.asarray(artifact_ids).tolist())}
    return np.array([lookup.get(str(v), -1) for v in np.asarray(ids).tolist()], dtype=np.int64)

