"""Trainer configuration: one pydantic-settings class, ``MOVIEREC_`` environment prefix.

Precedence, highest first: CLI flags, environment variables, the ``--config`` file (TOML or YAML), the
defaults here. Everything is validated before any data is read, so a typo fails in milliseconds rather than
after a download.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from service.config import DEFAULT_DATABASE_URL
from trainer.models.mf import MFParams
from trainer.training import OptimConfig


class ConfigError(ValueError):
    """A configuration file or value that cannot be used; the message names the file or field."""


# Defaults of shared fields that differ by model kind; an explicit value (flag, env, file) always wins.
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    # softmax: 100 epochs of fresh input/target splits, fixed (no early stopping, so no validation hold-out)
    "softmax": {"epochs": 100, "patience": 0},
    # sequence: a 32-wide transformer, 8 epochs at lr 2e-3 (onecycle), fixed (it overfits soon after)
    "sequence": {"dim": 32, "epochs": 8, "lr": 2e-3, "patience": 0},
    # als: epochs are ALS sweeps; 24 dims is where ml-100k's RMSE stops improving (and ALS cost grows as dim^2)
    "als": {"dim": 24, "epochs": 12},
    # bpmf: epochs are Gibbs iterations (burn-in included); no early stopping (the average needs them all)
    "bpmf": {"dim": 10, "epochs": 150, "patience": 0},
}


class TrainSettings(BaseSettings):
    """Everything `movierec train` needs; each field is also a CLI flag and a MOVIEREC_<FIELD> variable."""

    model_config = SettingsConfigDict(env_prefix="MOVIEREC_", extra="forbid", validate_assignment=True)

    # data
    data: Path | None = Field(None, description="MovieLens folder or zip, or a ratings CSV")
    dataset: str | None = Field(None, description="MovieLens release to download, e.g. ml-latest-small")
    cache_dir: Path = Field(Path.home() / ".cache" / "movierec", description="download cache")
    split: Literal["random", "leave-last", "ml100k-fold", "none"] = "random"
    test_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    leave_last: int = Field(1, ge=1, description="ratings per user held out by the temporal split")
    fold: str = Field("1", pattern=r"^[1-5ab]$", description="ml-100k official fold: 1..5, a or b")
    valid_fraction: float = Field(0.05, ge=0.0, lt=1.0, description="share of train kept for early stopping")
    from_db: bool = Field(False, description="train on the SQL store (database_url) instead of files")
    database_url: str = Field(DEFAULT_DATABASE_URL, description="store URL: sqlite:///PATH or postgresql://")

    # run
    model: str = "mf"
    seed: int = 42
    device: str = "auto"
    artifacts_dir: Path = Path("artifacts")
    ks: tuple[int, ...] = (10, 20)
    relevance_threshold: float = 4.0
    track_test: bool = Field(
        False, description="score the test split after every epoch (test RMSE and half-star accuracy per epoch)"
    )

    # biased MF
    dim: int = Field(64, ge=1, le=4096)
    biases: bool = True
    offset: bool = True
    output: Literal["sigmoid", "linear"] = "sigmoid"
    sigmoid_low: float | None = None
    sigmoid_high: float | None = None
    init: Literal["uniform", "normal"] = "uniform"
    init_scale: float = Field(0.05, gt=0.0)
    side_features: tuple[Literal["genre", "year"], ...] = ()

    # optimisation
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = Field(5e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    l2: float = Field(0.15, ge=0.0)
    l2_bias: float = Field(0.0, ge=0.0)
    schedule: Literal["onecycle", "constant"] = "onecycle"
    epochs: int = Field(25, ge=1)
    batch_size: int = Field(0, ge=0, description="0 = auto: 1024 up to ~256k ratings, then ~256 steps/epoch")
    patience: int = Field(3, ge=0)
    amp: bool = False

    # softmax (trainer.models.softmax) -------------------------------------------------------------------
    softmax_hidden: tuple[int, ...] = Field((), description="softmax tower hidden ReLU widths; () = linear")
    softmax_input_dim: int = Field(0, ge=0, description="softmax input movie embedding size; 0 = dim")
    softmax_tied: bool = Field(False, description="softmax: output movie embeddings double as input embeddings")
    softmax_weighting: Literal["mean", "rating"] = "mean"
    softmax_input_fraction: float = Field(0.5, gt=0.0, lt=1.0, description="share of a user's ratings as input")
    softmax_target_weighting: Literal["target", "user"] = "target"
    softmax_temperature: float = Field(1.0, gt=0.0)
    softmax_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    softmax_sampled: int = Field(0, ge=0, description="0 = full softmax, else sampled negatives per batch")
    softmax_sample_alpha: float = Field(1.0, ge=0.0, description="negatives ~ popularity ** alpha (log-Q)")
    softmax_calibration_reg: float = Field(5.0, ge=0.0, description="ridge on the rating map's user bias")

    @model_validator(mode="before")
    @classmethod
    def _kind_defaults(cls, data: Any) -> Any:
        """Shared fields (epochs, patience...) a kind tunes differently: its default unless given explicitly."""
        if isinstance(data, dict):
            kind = data.get("model", "mf")
            data = {**KIND_DEFAULTS.get(str(kind), {}), **data}
        return data

    # end softmax -----------------------------------------------------------------------------------------

    # sequence (trainer.models.sequence; dim is the shared field) ----------------------------------------
    sequence_length: int = Field(16, ge=2, le=512, description="sequence tokens: length - 1 history + target")
    sequence_heads: int = Field(2, ge=1, description="sequence: attention heads (dim must be a multiple)")
    sequence_layers: int = Field(1, ge=1, description="sequence: transformer encoder layers")
    sequence_ff: int = Field(64, ge=1, description="sequence: transformer feed-forward width")
    sequence_dropout: float = Field(0.3, ge=0.0, lt=1.0)
    sequence_mlp: tuple[int, ...] = Field((64,), description="sequence: hidden widths of the rating MLP")
    sequence_feature_dim: int = Field(8, ge=1, description="sequence: size of each user-feature embedding")
    sequence_user_features: bool = Field(True, description="sequence: use the data's user features if any")
    sequence_user_id: bool = Field(False, description="sequence: add a learned user-id embedding")
    sequence_retrieval: Literal["mf", "none"] = Field("mf", description="sequence: what the factor arrays hold")
    sequence_rerank: int = Field(100, ge=1, description="sequence: retrieval candidates re-ranked per user")
    # end sequence ----------------------------------------------------------------------------------------

    # als (trainer.models.als; dim, epochs = sweeps and patience are the shared fields) -------------------
    als_lambda_u: float = Field(0.13, gt=0.0, description="ALS prior weight on user vectors")
    als_lambda_v: float = Field(0.13, gt=0.0, description="ALS prior weight on movie vectors")
    als_lambda_bias: float = Field(0.05, ge=0.0, description="ALS prior weight on the biases")
    als_biased: bool = Field(True, description="ALS: solve user and movie biases with the factors")
    als_normalise: bool = Field(False, description="ALS: standardise the targets before fitting")
    als_output: Literal["linear", "sigmoid"] = Field("linear", description="ALS target space / output map")
    als_weighted: bool = Field(True, description="ALS: penalty times each row's rating count (ALS-WR)")
    als_init_std: float = Field(0.1, gt=0.0, description="ALS: std of the random initial movie factors")
    # end als ---------------------------------------------------------------------------------------------
    # bpmf (trainer.models.bpmf; dim and epochs = Gibbs iterations are the shared fields) -------------------
    bpmf_burn_in: int = Field(20, ge=0, description="BPMF: iterations discarded before averaging")
    bpmf_keep: int = Field(32, ge=1, le=1024, description="BPMF: samples kept (export width = dim x keep)")
    bpmf_alpha: float = Field(1.5, gt=0.0, description="BPMF: observation precision (1 / noise variance)")
    # end bpmf --------------------------------------------------------------------------------------------

    # gravity (trainer.models.gravity; every mf field applies too) --------------------------------------
    gravity_lambda_r: float = Field(0.0, ge=0.0, description="gravity: weight of the whole-table row L2")
    gravity_lambda_g: float = Field(1.0, ge=0.0, description="gravity: weight of the mean squared score")
    # end gravity -----------------------------------------------------------------------------------------

    @model_validator(mode="after")
    def _check(self) -> TrainSettings:
        if self.sigmoid_low is not None and self.sigmoid_high is not None and self.sigmoid_high <= self.sigmoid_low:
            raise ValueError(f"sigmoid_high ({self.sigmoid_high}) must exceed sigmoid_low ({self.sigmoid_low})")
        if any(k < 1 for k in self.ks):
            raise ValueError(f"ks must be positive, got {self.ks}")
        return self

    def mf_params(self) -> MFParams:
        return MFParams(
            dim=self.dim,
            biases=self.biases,
            offset=self.offset,
            output=self.output,
            sigmoid_low=self.sigmoid_low,
            sigmoid_high=self.sigmoid_high,
            init=self.init,
            init_scale=self.init_scale,
            side_features=tuple(self.side_features),
            optim=OptimConfig.from_settings(self),
        )


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML or YAML config; keys are settings fields (dashes allowed), optionally under [train]."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            values: Any = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file {path}: unsupported extension (use .toml, .yaml or .yml)")
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"config file {path}: {exc}") from exc
    except Exception as exc:  # yaml.YAMLError and friends
        raise ConfigError(f"config file {path}: {exc}") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path}: expected a table of settings at the top level")
    if "train" in values and isinstance(values["train"], dict):
        values = values["train"]
    return {str(k).replace("-", "_"): v for k, v in values.items()}


def load_settings(config: Path | None = None, **overrides: Any) -> TrainSettings:
    """Build settings with CLI ``overrides`` (None values ignored) > env > config file > defaults."""
    file_values = read_config_file(config) if config is not None else {}
    cli = {k: v for k, v in overrides.items() if v is not None}

    class _Settings(TrainSettings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, InitSettingsSource(settings_cls, init_kwargs=file_values))

    try:
        built = _Settings(**cli)
    except ValidationError as exc:
        where = f" (config file {config})" if config is not None else ""
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid settings{where}: {problems}") from exc
    return TrainSettings.model_construct(**built.model_dump())
