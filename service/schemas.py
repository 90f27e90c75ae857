"""Request and response bodies (pydantic), kept apart from the SQL table models in ``service.store``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Similarity = Literal["dot", "cosine"]
MovieId = Annotated[int, Field(ge=0, le=2**63 - 1, description="external MovieLens movie id")]
UserId = Annotated[int, Field(ge=0, le=2**63 - 1, description="external MovieLens user id")]


class _Body(BaseModel):
    """A request body: unknown fields and type coercion are refused.

    Strict because the documented schema says ``integer`` and ``number``: in lax mode pydantic read
    ``"movie_id": true`` as movie 1 and ``"5"`` as 5, so a client bug (a boolean or a string where an id
    belongs) silently wrote a rating for the wrong movie (found by tests/test_fuzz_api.py). JSON has
    real integers, so a correct client never needs the coercion; a float field still takes an integer.
    """

    model_config = ConfigDict(extra="forbid", strict=True)


class Error(BaseModel):
    """Every error response: ``detail`` names the problem; ``errors`` lists each invalid field (422)."""

    detail: str
    errors: list[dict[str, Any]] | None = None


class Movie(BaseModel):
    movie_id: int | str
    title: str
    year: int | None
    genres: list[str]


class MovieDetail(Movie):
    in_model: bool = Field(description="whether the served model has an embedding for this movie")
    rating_count: int | None = Field(None, description="ratings in the model's training data")
    mean_rating: float | None = Field(None, description="mean training rating")


class RecommendedMovie(Movie):
    score: float = Field(description="ranking score: u.v + b_i (dot), cosine(u, v), or damped mean (popular)")
    predicted_rating: float = Field(description="the model's predicted rating on the rating scale")


class Recommendations(BaseModel):
    user_id: int
    model_version: str
    strategy: Literal["model", "popular", "fold_in"] = Field(
        description="model: the user's embedding; fold_in: an embedding computed now from the user's store "
        "ratings (als, softmax); popular: damped mean rating (user unknown to the model)"
    )
    similarity: Similarity
    items: list[RecommendedMovie]


class SimilarMovie(Movie):
    score: float


class SimilarMovies(BaseModel):
    movie_id: int
    model_version: str
    similarity: Similarity
    items: list[SimilarMovie]


class PredictPair(_Body):
    user_id: UserId
    movie_id: MovieId


class PredictRequest(_Body):
    """Either one pair (``user_id`` and ``movie_id``) or a batch (``pairs``), not both."""

    user_id: UserId | None = None
    movie_id: MovieId | None = None
    pairs: list[PredictPair] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_form(self) -> PredictRequest:
        single = self.user_id is not None or self.movie_id is not None
        if single and self.pairs is not None:
            raise ValueError("give either user_id and movie_id, or pairs, not both")
        if self.pairs is None and (self.user_id is None or self.movie_id is None):
            raise ValueError("user_id and movie_id are both required (or give a list of pairs)")
        return self


class Prediction(BaseModel):
    user_id: int
    movie_id: int
    rating: float
    strategy: Literal["model", "movie_bias", "user_bias", "global_mean"] = Field(
        description="model: both known; movie_bias / user_bias: offset plus the known side's bias; "
        "global_mean: neither known"
    )


class Predictions(BaseModel):
    model_version: str
    predictions: list[Prediction]


class RatingIn(_Body):
    movie_id: MovieId
    rating: float = Field(allow_inf_nan=False, description="on the model's rating scale")
    timestamp: int | None = Field(None, ge=0, le=2**62, description="seconds since the epoch; default now")


class RatingOut(BaseModel):
    user_id: int
    movie_id: int
    rating: float
    timestamp: int


class UserRatings(BaseModel):
    user_id: int
    ratings: list[RatingOut]


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    ready: bool
    model_version: str | None
    store: Literal["ok", "unreachable"]


class ModelInfo(BaseModel):
    version: str
    model_kind: str
    trained_at: datetime
    loaded_at: datetime
    dims: dict[str, int]
    rating_scale: dict[str, float]
    dataset: dict[str, Any]
    hyperparameters: dict[str, Any]
    metrics: dict[str, Any]
    last_reload_error: str | None = None
