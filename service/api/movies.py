"""``GET /movies/{movie_id}`` and ``GET /movies/{movie_id}/similar``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, Response
from pydantic import Field
from sqlalchemy.exc import SQLAlchemyError

from service import render
from service.api.recommendations import genre_filter
from service.api.store_access import in_session, store_unavailable
from service.deps import ModelDep, QueryModel, SessionsDep, current_model, resolve_k
from service.schemas import Error, MovieDetail, Similarity, SimilarMovies
from service.store import repository

router = APIRouter(prefix="/movies", tags=["movies"])
MovieIdPath = Annotated[int, Path(ge=0, le=2**63 - 1)]


@router.get("/{movie_id}", response_model=MovieDetail, responses={404: {"model": Error}, 503: {"model": Error}})
async def get_movie(movie_id: MovieIdPath, model: ModelDep, sessions: SessionsDep) -> MovieDetail:
    """A movie from the model's catalogue, else from the store (a movie added after training)."""
    code = model.items.code(movie_id)
    if code is not None:
        art = model.artifact
        count = art.arrays.get("item_rating_count")
        mean = art.arrays.get("item_rating_mean")
        return MovieDetail(
            **model.movie_info(code),
            in_model=True,
            rating_count=int(count[code]) if count is not None else None,
            mean_rating=float(mean[code]) if mean is not None and count is not None and count[code] else None,
        )
    try:
        row = await in_session(sessions, lambda s: repository.get_movie(s, movie_id))
    except SQLAlchemyError as e:
        raise store_unavailable(e) from e
    if row is None:
        raise HTTPException(404, f"movie {movie_id} not found")
    return MovieDetail(
        movie_id=row.movie_id,
        title=row.title,
        year=row.year,
        genres=[g for g in row.genres.split("|") if g],
        in_model=False,
    )


class SimilarQuery(QueryModel):
    similarity: Similarity = "cosine"
    genre: str | None = None
    k: int | None = Field(None, ge=1, description="number of results")
    model: str | None = Field(None, description="model kind; default: MOVIEREC_RECOMMEND_MODEL")


@router.get(
    "/{movie_id}/similar",
    response_model=SimilarMovies,
    responses={404: {"model": Error}, 422: {"model": Error}, 503: {"model": Error}},
    openapi_extra=SimilarQuery.openapi(),
)
async def similar(request: Request, movie_id: MovieIdPath) -> Response:
    """Nearest movies by cosine or dot product of the movie embeddings; the movie itself is excluded."""
    q = SimilarQuery.from_request(request)  # a hot path: no dependencies, one query validation
    model = current_model(request, q.model, "recommend")
    k = resolve_k(request, q.k)
    code = model.items.code(movie_id)
    if code is None:
        raise HTTPException(404, f"movie {movie_id} not found in the model")
    found = model.index.similar(code, k, q.similarity, allowed=genre_filter(model, q.genre))
    return render.similar_movies(model, movie_id, q.similarity, found.codes, found.scores)
