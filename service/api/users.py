"""``GET`` and ``POST /users/{user_id}/ratings``: a user's ratings in the store, and new ones.

A posted rating is excluded from the user's next recommendations at once (every recommendation request
reads the user's store ratings); it reaches the model's embeddings at the next training
(``movierec train --from-db``). Posting needs the service's API key (``X-API-Key``, see service.security).
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Response
from sqlalchemy.exc import SQLAlchemyError

from service.api.store_access import store_unavailable
from service.deps import ModelDep, SessionDep
from service.errors import validation_error
from service.schemas import Error, RatingIn, RatingOut, UserRatings
from service.security import ApiKeyDep
from service.store import repository
from service.store.models import Movie

router = APIRouter(prefix="/users", tags=["users"])
UserIdPath = Annotated[int, Path(ge=0, le=2**63 - 1)]


@router.get("/{user_id}/ratings", response_model=UserRatings, responses={404: {"model": Error}, 503: {"model": Error}})
def user_ratings(user_id: UserIdPath, model: ModelDep, session: SessionDep) -> UserRatings:
    try:
        rows = repository.user_ratings(session, user_id)
    except SQLAlchemyError as e:
        raise store_unavailable(e) from e
    if not rows and model.users.code(user_id) is None:
        raise HTTPException(404, f"user {user_id} not found")
    return UserRatings(
        user_id=user_id,
        ratings=[
            RatingOut(user_id=r.user_id, movie_id=r.movie_id, rating=r.rating, timestamp=r.timestamp) for r in rows
        ],
    )


@router.post(
    "/{user_id}/ratings",
    response_model=RatingOut,
    status_code=201,
    responses={
        200: {"model": RatingOut}, 401: {"model": Error}, 403: {"model": Error}, 404: {"model": Error},
        422: {"model": Error}, 503: {"model": Error},
    },
)  # fmt: skip
def add_rating(
    _: ApiKeyDep, user_id: UserIdPath, body: RatingIn, model: ModelDep, session: SessionDep, response: Response
) -> RatingOut:
    """Store a rating (201; 200 when it replaces the user's earlier rating of the movie). Needs X-API-Key
    (service.security): a write changes what the next model is trained on.

    The key is checked first (the first dependency), before the model or a store session is touched."""
    scale = model.artifact.manifest.rating_scale
    if not scale.low <= body.rating <= scale.high:
        raise validation_error("rating", f"rating must lie in [{scale.low}, {scale.high}], got {body.rating}", "body")
    code = model.items.code(body.movie_id)
    timestamp = body.timestamp if body.timestamp is not None else int(time.time())
    try:
        if session.get(Movie, body.movie_id) is None:
            if code is None:
                raise HTTPException(404, f"movie {body.movie_id} not found")
            info = model.movie_info(code)
            session.add(
                Movie(movie_id=body.movie_id, title=info["title"], year=info["year"], genres="|".join(info["genres"]))
            )
            session.flush()
        row, created = repository.upsert_rating(session, user_id, body.movie_id, body.rating, timestamp)
    except SQLAlchemyError as e:
        session.rollback()
        raise store_unavailable(e) from e
    if not created:
        response.status_code = 200
    return RatingOut(user_id=row.user_id, movie_id=row.movie_id, rating=row.rating, timestamp=row.timestamp)
