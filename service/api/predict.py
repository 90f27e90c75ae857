"""``POST /predict``: predicted ratings for one (user, movie) pair or a bounded batch."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import Field

from service import render
from service.deps import QueryModel, current_model
from service.errors import validation_error
from service.schemas import Error, Predictions, PredictRequest

router = APIRouter(tags=["predictions"])


class PredictQuery(QueryModel):
    strict: bool = Field(False, description="404 for an unknown user or movie instead of a fallback")
    model: str | None = Field(None, description="model kind; default: MOVIEREC_PREDICT_MODEL")


@router.post(
    "/predict",
    response_model=Predictions,
    responses={404: {"model": Error}, 422: {"model": Error}, 503: {"model": Error}},
    openapi_extra=PredictQuery.openapi(),
)
async def predict(request: Request, body: PredictRequest) -> Response:
    """Ratings on the model's scale. Unknown ids get a documented fallback (see ``strategy``) or, with
    ``strict=true``, a 404 naming the id."""
    q = PredictQuery.from_request(request)  # a hot path: no dependencies, one query validation
    model = current_model(request, q.model, "predict")
    strict = q.strict
    if body.pairs is None:  # one pair: scalar lookups
        user_id, movie_id = int(body.user_id), int(body.movie_id)  # type: ignore[arg-type]
        ucode, icode = model.users.code(user_id), model.items.code(movie_id)
        if ucode is not None and icode is not None:
            rating, strategy = float(model.predict_user(ucode, np.asarray([icode]))[0]), "model"
        elif strict:
            what = f"user {user_id}" if ucode is None else f"movie {movie_id}"
            raise HTTPException(404, f"{what} not found (strict mode)")
        else:
            rating, strategy = model.fallback_rating(ucode, icode)
        return render.predictions(model, [user_id], [movie_id], [rating], [strategy])
    max_batch = request.app.state.settings.max_batch
    if len(body.pairs) > max_batch:
        raise validation_error("pairs", f"at most {max_batch} pairs per request, got {len(body.pairs)}", "body")
    user_ids = np.asarray([p.user_id for p in body.pairs], dtype=np.int64)
    movie_ids = np.asarray([p.movie_id for p in body.pairs], dtype=np.int64)
    ucodes = model.users.codes(user_ids)
    icodes = model.items.codes(movie_ids)
    known = (ucodes >= 0) & (icodes >= 0)
    if strict and not known.all():
        j = int(np.flatnonzero(~known)[0])
        what = f"user {int(user_ids[j])}" if ucodes[j] < 0 else f"movie {int(movie_ids[j])}"
        raise HTTPException(404, f"{what} not found (strict mode)")
    ratings = np.empty(len(user_ids), dtype=np.float64)
    strategies = np.full(len(user_ids), "model", dtype=object)
    if known.any():
        ratings[known] = model.predict_codes(ucodes[known], icodes[known])
    for j in np.flatnonzero(~known):
        u = int(ucodes[j]) if ucodes[j] >= 0 else None
        i = int(icodes[j]) if icodes[j] >= 0 else None
        ratings[j], strategies[j] = model.fallback_rating(u, i)
    return render.predictions(model, user_ids.tolist(), movie_ids.tolist(), ratings.tolist(), strategies.tolist())
