"""``movierec up``: from nothing to serving in one command (load data, train if needed, serve).

Each step is idempotent, so running it again reuses what is there: the store load adds nothing twice and
an artifacts root that already has a ``latest`` version is served as it is (retrain with
``movierec train``; the running API picks the new version up by itself).
"""

from __future__ import annotations

import logging
from pathlib import Path

from service.config import ServiceSettings

log = logging.getLogger(__name__)

SYNTHETIC_SHAPE = "ml-100k"
DEFAULT_DATASET = "ml-latest-small"


def synthetic_data(cache_dir: Path) -> Path:
    """A planted-structure dataset shaped like ml-100k, generated once into the cache folder."""
    from trainer.data.synth import generate, parse_shape, write_movielens

    out = cache_dir / f"synthetic-{SYNTHETIC_SHAPE}"
    if not (out / "ratings.csv").is_file():
        n_users, n_items, n_ratings = parse_shape(SYNTHETIC_SHAPE)
        write_movielens(generate(n_users, n_items, n_ratings, seed=0).data, out)
    return out


def up(
    service: ServiceSettings,
    data: Path | None = None,
    dataset: str | None = None,
    synthetic: bool = False,
    cache_dir: Path | None = None,
) -> None:
    from movierec import artifacts
    from service.server import serve
    from service.store.database import make_engine
    from service.store.migrations import upgrade
    from trainer.config import load_settings
    from trainer.data.dataset import DataError
    from trainer.data.download import DATA_ENV, resolve_data
    from trainer.data.movielens import load_dataset
    from trainer.data.store import load_into_store
    from trainer.pipeline import train

    settings = load_settings(None, data=data, dataset=dataset, cache_dir=cache_dir,
                             artifacts_dir=service.artifacts_dir, database_url=service.database_url)  # fmt: skip
    if synthetic:
        path = synthetic_data(settings.cache_dir)
    else:
        import os

        named = dataset or (None if data is not None or os.environ.get(DATA_ENV) else DEFAULT_DATASET)
        try:
            path = resolve_data(named, data, settings.cache_dir)
        except DataError as e:
            raise DataError(f"{e}; or run `movierec up --synthetic` on generated data") from e
    ratings = load_dataset(path)
    upgrade(service.database_url)
    engine = make_engine(service.database_url)
    try:
        report = load_into_store(ratings, engine)
    finally:
        engine.dispose()
    log.info("store: %s", report)
    if not artifacts.list_versions(service.artifacts_dir):
        log.info("no model under %s: training the default model on %s", service.artifacts_dir, path)
        train(settings.model_copy(update={"data": path, "dataset": None}))
    else:
        log.info("serving the existing model under %s", service.artifacts_dir)
    serve(service)
