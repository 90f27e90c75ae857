"""``GET /users/{user_id}/recommendations``: top-k unrated movies for a user."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Path, Request, Response
from pydantic import Field

from service import render
from service.api.store_access import in_session, rated_movie_ids
from service.candidates import Candidates
from service.deps import QueryModel, current_model, resolve_k
from service.errors import validation_error
from service.model_state import LoadedModel
from service.popularity import top_popular
from service.schemas import Error, Recommendations, Similarity

router = APIRouter(tags=["recommendations"])
_NO_CODES = np.empty(0, dtype=np.int64)


def genre_filter(model: LoadedModel, genre: str | None) -> np.ndarray | None:
    if genre is None:
        return None
    try:
        return model.genre_mask(genre)
    except KeyError:
        known = ", ".join(model.artifact.genre_names) or "(none: this catalogue has no genres)"
        raise validation_error("genre", f"unknown genre {genre!r}; known genres: {known}") from None


class RecommendationQuery(QueryModel):
    similarity: Similarity = "dot"
    exclude_rated: bool = Field(True, description="leave out movies the user already rated")
    genre: str | None = Field(None, description="only movies of this genre (exact filter)")
    fallback: Literal["none", "popular"] = Field(
        "none", description="popular: answer unknown users with popular movies"
    )
    k: int | None = Field(None, ge=1, description="number of results")
    model: str | None = Field(None, description="model kind (mf, als, gravity, softmax, sequence); default: "
                              "MOVIEREC_RECOMMEND_MODEL")  # fmt: skip


async def _store_ratings(request: Request, user_id: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The user's (movie id, rating) pairs from the store, for a fold-in; None when it is unreachable."""
    from sqlalchemy.exc import SQLAlchemyError

    from service.store import repository

    try:
        rows = await in_session(request.app.state.sessions, lambda s: repository.user_ratings(s, user_id))
    except SQLAlchemyError:
        return None
    return (np.asarray([r.movie_id for r in rows], dtype=np.int64),
            np.asarray([r.rating for r in rows], dtype=np.float64))  # fmt: skip


def _candidates(model: LoadedModel, code: int, similarity: Similarity, depth: int) -> Candidates:
    """The exact top ``depth`` movies the user did not rate in training, rendered (for the cache)."""
    art = model.artifact
    found = model.index.recommend(art.user_factors[code], depth, similarity, exclude=art.rated_items(code))
    predicted = model.predict_user(code, found.codes)
    return Candidates(
        ids=np.asarray(art.item_ids)[found.codes].astype(np.int64),
        items=render.recommendation_items(model, found.codes, found.scores, predicted),
        complete=len(found.codes) < depth,
    )


@router.get(
    "/users/{user_id}/recommendations",
    response_model=Recommendations,
    responses={404: {"model": Error}, 422: {"model": Error}, 503: {"model": Error}},
    openapi_extra=RecommendationQuery.openapi(),
)
async def recommend(request: Request, user_id: Annotated[int, Path(ge=0, le=2**63 - 1)]) -> Response:
    """Movies ranked by the model for a known user (dot: predicted rating order; cosine: embedding angle).

    A user the store knows but the model does not (ratings posted after training) gets popular movies by
    damped mean rating (``strategy=popular``); an id known to neither is a 404 unless ``fallback=popular``.
    """
    # The hot path: no dependencies, the query validated in one call, the body written directly (see
    # QueryModel and service.render); the behaviour is the declared one, checked against brute force.
    q = RecommendationQuery.from_request(request)
    model = current_model(request, q.model, "recommend")
    k = resolve_k(request, q.k)
    similarity = q.similarity
    allowed = genre_filter(model, q.genre)
    art = model.artifact
    code = model.users.code(user_id)
    # Every request reads the store: a rating posted through any worker is excluded at once.
    store_rated = rated_movie_ids(request.app.state.rated_ids, user_id)
    if code is not None and model.scorer is None and allowed is None and q.exclude_rated:
        cache = model.candidates
        if cache.usable(k):
            # The user's exact list under this model version, kept from an earlier request (or computed
            # now), less the movies the store says they have rated: see service.candidates.
            entry = cache.get(code, similarity)
            if entry is None:
                entry = _candidates(model, code, similarity, cache.depth)
                cache.put(code, similarity, entry)
            items = entry.pick(store_rated if store_rated is not None else _NO_CODES, k)
            if items is not None:
                return render.recommendations_from_items(model, user_id, "model", similarity, items)
    if store_rated is None or not len(store_rated):
        posted = _NO_CODES
    else:
        posted = model.items.codes(store_rated)
        posted = posted[posted >= 0]
    if code is not None:
        # duplicates are fine: the index only marks these codes ineligible
        exclude = np.concatenate((art.rated_items(code), posted)) if q.exclude_rated else None
        if model.scorer is not None:  # sequence: re-rank the retrieval candidates by its predicted rating
            depth = max(k, request.app.state.settings.rerank_candidates)
            pool = model.index.recommend(art.user_factors[code], depth, similarity, exclude=exclude, allowed=allowed)
            rated = model.predict_user(code, pool.codes)
            order = np.lexsort((pool.codes, -rated))[:k]
            codes, predicted = pool.codes[order], rated[order]
            return render.recommendations(model, user_id, "model", similarity, codes, predicted, predicted)
        found = model.index.recommend(art.user_factors[code], k, similarity, exclude=exclude, allowed=allowed)
        predicted = model.predict_user(code, found.codes)
        strategy: Literal["model", "popular", "fold_in"] = "model"
    elif store_rated is not None and len(store_rated) and model.kind in ("als", "softmax"):
        # a user created through the API: a closed-form / tower embedding from their ratings, no retraining
        pairs = await _store_ratings(request, user_id)
        if pairs is None:
            raise HTTPException(503, "the ratings store is unreachable; retry later", headers={"Retry-After": "5"})
        codes = model.items.codes(pairs[0])
        keep = codes >= 0
        folded = model.fold_in(codes[keep], pairs[1][keep])
        assert folded is not None
        vector, bias = folded
        found = model.index.recommend(vector, k, similarity, exclude=posted if q.exclude_rated else None,
                                      allowed=allowed)  # fmt: skip
        predicted = model.predict_vector(vector, bias, found.codes)
        strategy = "fold_in"
    else:
        if (store_rated is None or not len(store_rated)) and q.fallback != "popular":
            if store_rated is None:
                raise HTTPException(503, "user unknown to the model and the ratings store is unreachable")
            raise HTTPException(404, f"user {user_id} not found (use fallback=popular for popular movies)")
        exclude = posted if q.exclude_rated else None
        found = top_popular(model.popularity, k, exclude=exclude, allowed=allowed)
        predicted = np.asarray([model.fallback_rating(None, int(c))[0] for c in found.codes], dtype=np.float64)
        strategy = "popular"
    return render.recommendations(model, user_id, strategy, similarity, found.codes, found.scores, predicted)
