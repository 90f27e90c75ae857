"""Service configuration: one pydantic-settings class, ``MOVIEREC_`` environment prefix.

Validated when the app is built (``create_app``) so a bad value stops the process at start-up with a
message naming the variable, not at the first request. ``movierec serve`` flags mirror these fields.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///movierec.db"
_ORIGIN = re.compile(r"^https?://[^/\s?#]+$")  # what a browser sends in Origin: scheme://host[:port], no path


class ServiceSettings(BaseSettings):
    """Everything the API process needs; each field is also a ``MOVIEREC_<FIELD>`` variable."""

    # hide_input_in_errors: a start-up error (say default_k > max_k) would otherwise print every input,
    # the API key included, into the traceback and the logs
    model_config = SettingsConfigDict(env_prefix="MOVIEREC_", extra="ignore", hide_input_in_errors=True)

    artifacts_dir: Path = Field(Path("artifacts"), description="artifacts root holding versions and `latest`")
    database_url: str = Field(DEFAULT_DATABASE_URL, description="SQLAlchemy URL: sqlite:///file or postgresql://")

    # HTTP
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64)
    event_loop: Literal["asyncio", "uvloop"] = Field(
        "asyncio",
        description="asyncio: fair under overload; uvloop: ~15% more requests/s, but at 256 connections on 2 "
        "cores some connections waited seconds (bench/bench_load.py)",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    access_log: bool = Field(
        True, description="uvicorn's line per request; written at log_level info or debug only (see server.py)"
    )

    # access control (service/security.py). Writes and /admin always need the key: with none configured
    # they are closed (403), so a deployment that forgot to set one cannot be written to by anybody.
    api_key: SecretStr | None = Field(
        None, description="secret clients send in X-API-Key for writes and /admin; unset or empty: those are refused"
    )
    require_key_for_reads: bool = Field(
        False, description="every route but /health, /ready and /metrics needs X-API-Key (needs api_key)"
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="browser origins allowed cross-origin (comma-separated or a JSON list; * = any); empty: CORS off",
    )
    max_body_bytes: int = Field(
        1_000_000, ge=1, le=2**31, description="largest request body accepted; larger ones get 413 unread"
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

    @field_validator("api_key", mode="before")
    @classmethod
    def _blank_key_is_none(cls, value: Any) -> Any:
        """``MOVIEREC_API_KEY=`` (compose passes an unset variable as empty) means no key, not the empty key
        (which every request without the header would otherwise match)."""
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        if isinstance(raw, str) and raw != raw.strip():
            raise ValueError("the API key must not start or end with whitespace (HTTP strips it from headers)")
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _parse_origins(cls, value: Any) -> Any:
        """A comma-separated list from the environment (a JSON list works too)."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [o.strip() for o in text.split(",") if o.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        """Browsers send ``Origin`` as ``scheme://host[:port]``; an entry with a path or trailing slash would
        silently never match, so it is refused at start-up instead."""
        bad = [o for o in value if o != "*" and not _ORIGIN.match(o)]
        if bad:
            raise ValueError(f"CORS origins must look like https://host[:port] (no path, no trailing /): {bad}")
        return value

    @model_validator(mode="after")
    def _check(self) -> ServiceSettings:
        if self.default_k > self.max_k:
            raise ValueError(f"default_k ({self.default_k}) must not exceed max_k ({self.max_k})")
        if self.require_key_for_reads and self.api_key is None:
            raise ValueError("require_key_for_reads needs an API key: set MOVIEREC_API_KEY")
        return self
