"""Store reads on the request path that must degrade, not fail, when the database is unreachable.

Recommendations and predictions are served from memory; the store only adds ratings posted since
training. When it is down, reads fall back to the model's own data (logged), and writes get a 503.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import numpy as np
from fastapi import HTTPException
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from service.store.repository import RatedMovieIds

log = logging.getLogger(__name__)
T = TypeVar("T")


async def in_session(sessions: sessionmaker[Session], fn: Callable[[Session], T]) -> T:
    """Run ``fn(session)`` in a worker thread: async routes never block the event loop on the store."""

    def call() -> T:
        with sessions() as session:
            return fn(session)

    return await run_in_threadpool(call)


def rated_movie_ids(reader: RatedMovieIds, user_id: int) -> np.ndarray | None:
    """Movies the user rated in the store (int64 ids, ascending and unique), or None when the store cannot be reached.

    Run inline on the event loop, not in a worker thread: it is one indexed point query (~20 us for a
    median user on SQLite, a round trip on PostgreSQL) and a thread hop costs more than the query itself.
    The engine's pool timeout and connect timeout bound how long an unreachable store can hold the loop.
    """
    try:
        return reader(user_id)
    except reader.errors as e:
        log.warning("store unreachable while reading user %s's ratings: %s", user_id, type(e).__name__)
        return None


def store_unavailable(e: Exception) -> HTTPException:
    log.warning("store unreachable: %s", type(e).__name__)
    return HTTPException(
        status_code=503, detail="the ratings store is unreachable; retry later", headers={"Retry-After": "5"}
    )
