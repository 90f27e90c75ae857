"""Service configuration: one pydantic-settings class, ``MOVIEREC_`` environment prefix.

Validated when the app is built (``create_app``) so a bad value stops the process at start-up with a
message naming the variable, not at the first request. ``movierec serve`` flags mirror these fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///movierec.db"


class ServiceSettings(BaseSettings):
    """Everything the API process needs; each field is also a ``MOVIEREC_<FIELD>`` variable."""

    model_config = SettingsConfigDict(env_prefix="MOVIEREC_", extra="ignore")

    artifacts_dir: Path = Field(Path("artifacts"), description="artifacts root holding versions and `latest`")
    database_url: str = Field(DEFAULT_DATABASE_URL, description="SQLAlchemy URL: sqlite:///file or postgresql://")

    # HTTP
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    access_log: bool = Field(
        True, description="uvicorn's line per request; written at log_level info or debug only (see server.py)"
    )

    # request bounds
    default_k: int = Field(10, ge=1)
    max_k: int = Field(100, ge=1, le=10_000)
    max_batch: int = Field(1000, ge=1, le=100_000, description="most (user, movie) pairs in one /predict body")

    # retrieval
    index: Literal["flat", "hnsw"] = Field("flat", description="flat = exact; hnsw = approximate, for big catalogues")
    hnsw_m: int = Field(32, ge=4, le=256)
    hnsw_ef_search: int = Field(128, ge=8, le=4096)
    hnsw_ef_construction: int = Field(200, ge=8, le=4096)

    # model updates: poll the artifacts' `latest` pointer and swap in a new version without a restart
    reload_interval_s: float = Field(5.0, ge=0, description="0 disables polling")

    # models: several kinds are served side by side; `?model=NAME` picks one per request
    models: str = Field("all", description="comma-separated model kinds to load, or all")
    recommend_model: str = Field("auto", description="default kind for recommendations; auto = best NDCG@10")
    predict_model: str = Field("auto", description="default kind for predictions; auto = best RMSE")
    recommend_cache_size: int = Field(
        10_000, ge=0, le=10_000_000,
        description="users whose recommendation lists are kept per model version (LRU); 0 disables",
    )  # fmt: skip
    recommend_cache_depth: int = Field(
        32, ge=1, le=10_000, description="movies kept per cached list; requests with a larger k search afresh"
    )
    rated_cache_size: int = Field(
        10_000, ge=0, le=10_000_000,
        description="users whose rated-movie ids are kept between requests while the SQLite store is unchanged",
    )  # fmt: skip
    rerank_candidates: int = Field(100, ge=1, le=10_000, description="sequence: MF candidates it re-ranks")

    # cold start: popular movies by a damped (Bayesian) mean rating
    popularity_prior: float = Field(
        20.0, gt=0, description="pseudo-ratings at the global mean added to each movie's mean (damping)"
    )

    def model_kinds(self) -> set[str] | None:
        """The kinds to load, or None for every kind published."""
        if self.models.strip().lower() == "all":
            return None
        return {k.strip() for k in self.models.split(",") if k.strip()}

    @model_validator(mode="after")
    def _check(self) -> ServiceSettings:
        if self.default_k > self.max_k:
            raise ValueError(f"default_k ({self.default_k}) must not exceed max_k ({self.max_k})")
        return self
