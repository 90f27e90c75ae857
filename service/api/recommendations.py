"""``GET /users/{user_id}/recommendations``: top-k unrated movies for a user."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Path, Query

from service.api.store_access import rated_movie_ids
from service.deps import EngineDep, KDep, ModelDep
from service.errors import validation_error
from service.model_state import LoadedModel
from service.popularity import top_popular
from service.schemas import Error, Recommendations, RecommendedMovie, Similarity

router = APIRouter(tags=["recommendations"])


def genre_filter(model: LoadedModel, genre: str | None) -> np.ndarray | None:
    if genre is None:
        return None
    try:
        return model.genre_mask(genre)
    except KeyError:
        known = ", ".join(model.artifact.genre_names) or "(none: this catalogue has no genres)"
        raise validation_error("genre", f"unknown genre {genre!r}; known genres: {known}") from None


@router.get(
    "/users/{user_id}/recommendations",
    response_model=Recommendations,
    responses={404: {"model": Error}, 422: {"model": Error}, 503: {"model": Error}},
)
async def recommend(
    user_id: Annotated[int, Path(ge=0, le=2**63 - 1)],
    model: ModelDep,
    engine: EngineDep,
    k: KDep,
    similarity: Similarity = "dot",
    exclude_rated: Annotated[bool, Query(description="leave out movies the user already rated")] = True,
    genre: Annotated[str | None, Query(description="only movies of this genre (exact filter)")] = None,
    fallback: Annotated[
        Literal["none", "popular"], Query(description="popular: answer unknown users with popular movies")
    ] = "none",
) -> Recommendations:
    """Movies ranked by the model for a known user (dot: predicted rating order; cosine: embedding angle).

    A user the store knows but the model does not (ratings posted after training) gets popular movies by
    damped mean rating (``strategy=popular``); an id known to neither is a 404 unless ``fallback=popular``.
    """
    allowed = genre_filter(model, genre)
    art = model.artifact
    code = model.users.code(user_id)
    store_rated = rated_movie_ids(engine, user_id)
    posted = model.items.codes(np.asarray(store_rated or [], dtype=np.int64))
    posted = posted[posted >= 0]
    if code is not None:
        exclude = np.union1d(art.rated_items(code), posted) if exclude_rated else None
        found = model.index.recommend(art.user_factors[code], k, similarity, exclude=exclude, allowed=allowed)
        predicted = model.predict_codes(np.full(len(found.codes), code), found.codes)
        strategy: Literal["model", "popular"] = "model"
    else:
        if not store_rated and fallback != "popular":
            if store_rated is None:
                raise HTTPException(503, "user unknown to the model and the ratings store is unreachable")
            raise HTTPException(404, f"user {user_id} not found (use fallback=popular for popular movies)")
        exclude = posted if exclude_rated else None
        found = top_popular(model.popularity, k, exclude=exclude, allowed=allowed)
        predicted = np.asarray([model.fallback_rating(None, int(c))[0] for c in found.codes])
        strategy = "popular"
    items = [
        RecommendedMovie(**model.movie_info(int(c)), score=float(s), predicted_rating=float(p))
        for c, s, p in zip(found.codes, found.scores, predicted, strict=True)
    ]
    return Recommendations(
        user_id=user_id, model_version=model.version, strategy=strategy, similarity=similarity, items=items
    )
