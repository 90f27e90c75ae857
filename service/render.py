"""JSON bodies of the hot endpoints (recommendations, similar movies, predictions), rendered directly.

Building one pydantic model per returned movie and letting FastAPI validate and serialise the response
model cost more than the search itself (recommendations: ~45 us of models plus ~15 us of serialisation
per request of 10 movies). These functions write the same documented shapes
(:class:`service.schemas.Recommendations`, :class:`~service.schemas.SimilarMovies`,
:class:`~service.schemas.Predictions`; the routes still declare them as ``response_model`` so OpenAPI
documents them) from per-movie JSON fragments the served model renders once
(:meth:`service.model_state.LoadedModel.movie_json`), and return a ready :class:`Response`.

Field order and values are the pydantic ones: floats in their shortest round-trip form, a non-finite
float as ``null`` (pydantic's default), strings escaped by orjson. ``tests/test_service_render.py``
checks each body against the pydantic model's own serialisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import orjson
from starlette.responses import Response

from service.model_state import LoadedModel


def _numbers(values: np.ndarray) -> list[bytes]:
    """The JSON numbers of a 1-d float array: orjson's shortest round-trip form (one C call for all of
    them, ~10x faster than ``repr`` per float), ``null`` for a non-finite value as pydantic writes it.
    A JSON number never contains a comma, so the list splits exactly."""
    if not len(values):
        return []
    return orjson.dumps(values.tolist())[1:-1].split(b",")


def json_response(body: bytes, status_code: int = 200) -> Response:
    return Response(body, status_code=status_code, media_type="application/json")


def recommendations(
    model: LoadedModel,
    user_id: int,
    strategy: str,
    similarity: str,
    codes: np.ndarray,
    scores: np.ndarray,
    predicted: np.ndarray,
) -> Response:
    """A :class:`~service.schemas.Recommendations` body."""
    return recommendations_from_items(
        model, user_id, strategy, similarity, recommendation_items(model, codes, scores, predicted)
    )


def recommendation_items(
    model: LoadedModel, codes: np.ndarray, scores: np.ndarray, predicted: np.ndarray
) -> list[bytes]:
    """The rendered ``items`` entries of a recommendations body, one per movie (what the candidate
    cache keeps, see :mod:`service.candidates`)."""
    movie_json = model.movie_json
    return [
        b'%s,"score":%s,"predicted_rating":%s}' % (movie_json(c), s, p)
        for c, s, p in zip(codes.tolist(), _numbers(scores), _numbers(predicted), strict=True)
    ]


def recommendations_from_items(
    model: LoadedModel, user_id: int, strategy: str, similarity: str, items: list[bytes]
) -> Response:
    head = b'{"user_id":%d,"model_version":%s,"strategy":%s,"similarity":%s,"items":[' % (
        user_id, orjson.dumps(model.version), orjson.dumps(strategy), orjson.dumps(similarity),
    )  # fmt: skip
    return json_response(head + b",".join(items) + b"]}")


def similar_movies(
    model: LoadedModel, movie_id: int, similarity: str, codes: np.ndarray, scores: np.ndarray
) -> Response:
    """A :class:`~service.schemas.SimilarMovies` body."""
    movie_json = model.movie_json
    items = b",".join(
        [b'%s,"score":%s}' % (movie_json(c), s) for c, s in zip(codes.tolist(), _numbers(scores), strict=True)]
    )
    head = b'{"movie_id":%d,"model_version":%s,"similarity":%s,"items":[' % (
        movie_id, orjson.dumps(model.version), orjson.dumps(similarity),
    )  # fmt: skip
    return json_response(head + items + b"]}")


def predictions(
    model: LoadedModel,
    user_ids: Sequence[int],
    movie_ids: Sequence[int],
    ratings: Sequence[float],
    strategies: Sequence[str],
) -> Response:
    """A :class:`~service.schemas.Predictions` body."""
    items = [
        {"user_id": u, "movie_id": m, "rating": r, "strategy": s}
        for u, m, r, s in zip(user_ids, movie_ids, ratings, strategies, strict=True)
    ]
    return json_response(orjson.dumps({"model_version": model.version, "predictions": items}))
