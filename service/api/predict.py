"""``POST /predict``: predicted ratings for one (user, movie) pair or a bounded batch."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, HTTPException, Query

from service.deps import ModelDep, SettingsDep
from service.errors import validation_error
from service.schemas import Error, Prediction, Predictions, PredictRequest

router = APIRouter(tags=["predictions"])


@router.post(
    "/predict",
    response_model=Predictions,
    responses={404: {"model": Error}, 422: {"model": Error}, 503: {"model": Error}},
)
async def predict(
    body: PredictRequest,
    model: ModelDep,
    settings: SettingsDep,
    strict: Annotated[bool, Query(description="404 for an unknown user or movie instead of a fallback")] = False,
) -> Predictions:
    """Ratings on the model's scale. Unknown ids get a documented fallback (see ``strategy``) or, with
    ``strict=true``, a 404 naming the id."""
    if body.pairs is not None:
        if len(body.pairs) > settings.max_batch:
            raise validation_error(
                "pairs", f"at most {settings.max_batch} pairs per request, got {len(body.pairs)}", "body"
            )
        user_ids = np.asarray([p.user_id for p in body.pairs], dtype=np.int64)
        movie_ids = np.asarray([p.movie_id for p in body.pairs], dtype=np.int64)
    else:
        user_ids = np.asarray([body.user_id], dtype=np.int64)
        movie_ids = np.asarray([body.movie_id], dtype=np.int64)
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
    return Predictions(
        model_version=model.version,
        predictions=[
            Prediction(user_id=int(u), movie_id=int(m), rating=float(r), strategy=s)
            for u, m, r, s in zip(user_ids, movie_ids, ratings, strategies, strict=True)
        ],
    )
