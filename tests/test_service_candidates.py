"""The per-user recommendation lists the service reuses (service/candidates.py) stay exact: every answer
equals the brute-force reference while ratings are posted through the API or written into the store by
another connection, when the kept list runs short, and with the cache on or off."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from service.app import create_app
from service.candidates import Candidates, CandidateCache
from service.store.database import make_engine
from service.store.repository import upsert_rating
from tests.test_service_api import (  # noqa: F401  (fixtures)
    KEY_HEADERS,
    art,
    codes_to_ids,
    ids_of,
    make_settings,
    reference_top_k,
    store_url,
    trained,
    user_code,
    user_scores,
)

DEPTH = 12


def expected_ids(art, user_id: int, k: int, similarity: str, posted: list[int]) -> list[int]:
    code = user_code(art, user_id)
    item_codes = art.item_ids.tolist()
    exclude = list(art.rated_items(code)) + [item_codes.index(m) for m in posted]
    return codes_to_ids(art, reference_top_k(user_scores(art, code, similarity), k, exclude))


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_lists_stay_exact_as_ratings_are_posted(trained, store_url, art, similarity):  # noqa: F811
    settings = make_settings(trained[1], store_url, recommend_cache_depth=DEPTH)
    user_id = int(art.user_ids[11])
    posted: list[int] = []
    with TestClient(create_app(settings), headers=KEY_HEADERS) as c:
        model = c.app.state.holder.current
        for step in range(6):  # after 3 posts the kept 12 hold fewer than 10 unrated: the full search answers
            r = c.get(f"/users/{user_id}/recommendations", params={"k": 10, "similarity": similarity})
            assert r.status_code == 200, r.text
            got = ids_of(r)
            assert got == expected_ids(art, user_id, 10, similarity, posted), f"step {step}"
            assert not set(got) & set(posted)
            assert model.candidates.get(user_code(art, user_id), similarity) is not None
            target = got[step % len(got)]
            assert c.post(f"/users/{user_id}/ratings", json={"movie_id": target, "rating": 4.0}).status_code == 201
            posted.append(target)


def test_a_rating_written_by_another_connection_counts_at_once(trained, store_url, art):  # noqa: F811
    """Another API worker (or process) writes to the store: this worker's next answer excludes it."""
    user_id = int(art.user_ids[5])
    engine = make_engine(store_url)
    try:
        with TestClient(create_app(make_settings(trained[1], store_url, recommend_cache_depth=DEPTH))) as c:
            first = ids_of(c.get(f"/users/{user_id}/recommendations", params={"k": 5}))
            assert ids_of(c.get(f"/users/{user_id}/recommendations", params={"k": 5})) == first
            with Session(engine) as s:
                upsert_rating(s, user_id, first[1], 3.5, 10)
            after = ids_of(c.get(f"/users/{user_id}/recommendations", params={"k": 5}))
            assert after == expected_ids(art, user_id, 5, "dot", [first[1]])
            assert first[1] not in after
    finally:
        engine.dispose()


def test_cache_on_and_off_answer_the_same(trained, store_url, art):  # noqa: F811
    on = make_settings(trained[1], store_url, recommend_cache_depth=DEPTH)
    off = make_settings(trained[1], store_url, recommend_cache_size=0, rated_cache_size=0)
    answers = []
    for settings in (on, off):
        got = []
        with TestClient(create_app(settings)) as c:
            for user_id in art.user_ids[:25].tolist():
                for k in (1, 7, DEPTH, DEPTH + 8):  # the last: deeper than the kept lists, a search every time
                    for similarity in ("dot", "cosine"):
                        for _ in range(2):  # the second request is a cache hit when the cache is on
                            r = c.get(f"/users/{user_id}/recommendations", params={"k": k, "similarity": similarity})
                            assert r.status_code == 200, r.text
                            got.append(r.json())
            cached = len(c.app.state.holder.current.candidates)
        answers.append((got, cached))
    (with_cache, n_on), (without, n_off) = answers
    assert with_cache == without
    assert n_on == 25 * 2 and n_off == 0


def test_pick_removes_rated_and_reports_short_lists():
    ids = np.array([40, 10, 30, 20], dtype=np.int64)
    items = [b"a", b"b", b"c", b"d"]
    full = Candidates(ids=ids, items=items, complete=False)
    assert full.pick(np.empty(0, dtype=np.int64), 3) == [b"a", b"b", b"c"]
    assert full.pick(np.array([5, 10, 99]), 3) == [b"a", b"c", b"d"]
    assert full.pick(np.array([10, 30]), 3) is None  # 2 left of a partial list: the caller must search
    assert full.pick(np.empty(0, dtype=np.int64), 5) is None
    complete = Candidates(ids=ids, items=items, complete=True)
    assert complete.pick(np.array([10, 30]), 3) == [b"a", b"d"]  # every eligible movie is here: exact
    cache = CandidateCache(2, depth=4)
    assert cache.usable(4) and not cache.usable(5) and not CandidateCache(0, 4).usable(1)
    for u in range(3):
        cache.put(u, "dot", full)
    assert len(cache) == 2 and cache.get(0, "dot") is None and cache.get(2, "dot") is full
