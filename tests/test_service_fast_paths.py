"""The service's hot-path shortcuts give exactly what the plain FastAPI / pydantic / SQLAlchemy versions
they replace give: response bodies, query validation and its OpenAPI description, id lookups, the store
read of a user's rated movies, the single-user prediction, the access-log switch."""

from __future__ import annotations

import json
import math
from typing import Annotated, Literal

import numpy as np
import pytest
from fastapi import FastAPI, Query, Request
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from movierec import artifacts
from service import render
from service.api.movies import SimilarQuery
from service.api.predict import PredictQuery
from service.api.recommendations import RecommendationQuery
from service.config import ServiceSettings
from service.deps import QueryModel
from service.errors import install as install_errors
from service.model_state import IdMap, load_model
from service.schemas import Predictions, Recommendations, Similarity, SimilarMovies
from service.server import access_log_enabled
from service.store.database import make_engine
from service.store.migrations import upgrade
from service.store.models import Movie, Rating
from service.store.repository import RatedMovieIds, upsert_rating
from tests.test_service_api import trained  # noqa: F401  (module-scoped fixture: a trained artifact)


@pytest.fixture(scope="module")
def model(trained):  # noqa: F811
    return load_model(trained[1], ServiceSettings(artifacts_dir=trained[1]))


# --------------------------------------------------------------------------------------------------------
# Response bodies: equal to the pydantic models' own serialisation
# --------------------------------------------------------------------------------------------------------


def _pydantic_json(model_cls, **fields) -> dict:
    return json.loads(model_cls(**fields).model_dump_json())


def test_recommendations_body_equals_the_pydantic_model(model):
    codes = np.array([5, 0, 17, 3], dtype=np.int64)
    scores = np.array([2.5, 1.0000001, -0.25, 1e-7], dtype=np.float32)
    predicted = np.array([4.123456789012345, 3.0, 0.5, 5.0])
    body = render.recommendations(model, 42, "model", "dot", codes, scores, predicted)
    assert body.media_type == "application/json" and body.status_code == 200
    items = [
        {**model.movie_info(int(c)), "score": float(s), "predicted_rating": float(p)}
        for c, s, p in zip(codes, scores, predicted, strict=True)
    ]
    expected = _pydantic_json(
        Recommendations, user_id=42, model_version=model.version, strategy="model", similarity="dot", items=items
    )
    assert json.loads(body.body) == expected
    Recommendations.model_validate_json(body.body)  # the documented schema, strictly
    empty = render.recommendations(model, 1, "popular", "cosine", codes[:0], scores[:0], predicted[:0])
    assert json.loads(empty.body)["items"] == []


def test_similar_and_predictions_bodies_equal_the_pydantic_models(model):
    codes, scores = np.array([2, 9], dtype=np.int64), np.array([0.75, -1.0], dtype=np.float32)
    body = render.similar_movies(model, 7, "cosine", codes, scores)
    items = [{**model.movie_info(int(c)), "score": float(s)} for c, s in zip(codes, scores, strict=True)]
    expected = _pydantic_json(SimilarMovies, movie_id=7, model_version=model.version, similarity="cosine", items=items)
    assert json.loads(body.body) == expected
    preds = render.predictions(model, [1, 2], [3, 4], [4.5, 2.0000000000000004], ["model", "global_mean"])
    expected = _pydantic_json(
        Predictions,
        model_version=model.version,
        predictions=[
            {"user_id": 1, "movie_id": 3, "rating": 4.5, "strategy": "model"},
            {"user_id": 2, "movie_id": 4, "rating": 2.0000000000000004, "strategy": "global_mean"},
        ],
    )
    assert json.loads(preds.body) == expected


def test_movie_fragments_escape_text_and_non_finite_numbers_become_null(model):
    code = 0
    info = model.movie_info(code)
    tricky = 'Amélie "quoted" \\ back\nslash \u2603'
    original = model.movie_info  # the artifact is read-only: give this movie a title that needs escaping
    try:
        object.__setattr__(model, "movie_info", lambda c: {**original(c), "title": tricky})
        model._movie_json[code] = None  # re-render with the patched title
        frag = model.movie_json(code)
        assert json.loads(frag + b"}") == {**info, "title": tricky}
    finally:
        object.__delattr__(model, "movie_info")
        model._movie_json[code] = None
    body = render.recommendations(
        model, 1, "model", "dot", np.array([1, 2]), np.array([np.nan, np.inf], np.float32), np.array([-np.inf, 3.0])
    )
    items = json.loads(body.body)["items"]
    assert [(i["score"], i["predicted_rating"]) for i in items] == [(None, None), (None, 3.0)]
    # what pydantic writes for a non-finite float
    pyd = Predictions(
        model_version="v", predictions=[{"user_id": 1, "movie_id": 2, "rating": math.nan, "strategy": "model"}]
    )
    assert json.loads(pyd.model_dump_json())["predictions"][0]["rating"] is None
    assert (
        json.loads(render.predictions(model, [1], [2], [math.nan], ["model"]).body)["predictions"][0]["rating"] is None
    )


# --------------------------------------------------------------------------------------------------------
# Query models: the same validation, errors and OpenAPI as the FastAPI signatures they replace
# --------------------------------------------------------------------------------------------------------


KClassic = Annotated[int | None, Query(ge=1, description="number of results")]


RECOMMEND_MODEL_HELP = "model kind (mf, als, gravity, softmax, sequence); default: MOVIEREC_RECOMMEND_MODEL"


def _classic_app() -> FastAPI:
    """The three routes with their parameters declared the plain FastAPI way (what the service had)."""
    app = FastAPI()
    install_errors(app)

    @app.get("/recommend")
    async def recommend(
        similarity: Similarity = "dot",
        exclude_rated: Annotated[bool, Query(description="leave out movies the user already rated")] = True,
        genre: Annotated[str | None, Query(description="only movies of this genre (exact filter)")] = None,
        fallback: Annotated[
            Literal["none", "popular"], Query(description="popular: answer unknown users with popular movies")
        ] = "none",
        k: KClassic = None,
        model: Annotated[str | None, Query(description=RECOMMEND_MODEL_HELP)] = None,
    ) -> dict:
        return {"similarity": similarity, "exclude_rated": exclude_rated, "genre": genre, "fallback": fallback,
                "k": k, "model": model}  # fmt: skip

    @app.get("/similar")
    async def similar(
        similarity: Similarity = "cosine",
        genre: str | None = None,
        k: KClassic = None,
        model: Annotated[str | None, Query(description="model kind; default: MOVIEREC_RECOMMEND_MODEL")] = None,
    ) -> dict:
        return {"similarity": similarity, "genre": genre, "k": k, "model": model}

    @app.get("/predict")
    async def predict(
        strict: Annotated[bool, Query(description="404 for an unknown user or movie instead of a fallback")] = False,
        model: Annotated[str | None, Query(description="model kind; default: MOVIEREC_PREDICT_MODEL")] = None,
    ) -> dict:
        return {"strict": strict, "model": model}

    return app


def _fast_app() -> FastAPI:
    app = FastAPI()
    install_errors(app)

    def add(path: str, cls: type[QueryModel]) -> None:
        async def route(request: Request) -> dict:
            return cls.from_request(request).model_dump()

        app.add_api_route(path, route, methods=["GET"], openapi_extra=cls.openapi())

    add("/recommend", RecommendationQuery)
    add("/similar", SimilarQuery)
    add("/predict", PredictQuery)
    return app


QUERIES = [
    {},
    {"k": "5"},
    {"k": "0"},
    {"k": "-3"},
    {"k": "ten"},
    {"k": ""},
    {"k": "1.5"},
    {"k": ["1", "3"]},
    {"similarity": "cosine"},
    {"similarity": "euclid"},
    {"similarity": ""},
    {"exclude_rated": "false"},
    {"exclude_rated": "0"},
    {"exclude_rated": "yes"},
    {"exclude_rated": "maybe"},
    {"genre": "Drama", "k": "3"},
    {"genre": ""},
    {"fallback": "popular"},
    {"fallback": "x", "k": "x"},
    {"strict": "true"},
    {"strict": "1"},
    {"strict": "nope"},
    {"unknown": "1", "k": "2"},
    {"model": "als"},
]


@pytest.mark.parametrize("path", ["/recommend", "/similar", "/predict"])
def test_query_models_validate_like_fastapi(path):
    with TestClient(_classic_app()) as classic, TestClient(_fast_app()) as fast:
        for params in QUERIES + QUERIES:  # the second pass answers valid queries from the memo
            a, b = classic.get(path, params=params), fast.get(path, params=params)
            assert (a.status_code, a.json()) == (b.status_code, b.json()), params


@pytest.mark.parametrize("path", ["/recommend", "/similar", "/predict"])
def test_query_models_document_the_same_parameters(path):
    classic = _classic_app().openapi()["paths"][path]["get"]["parameters"]
    fast = _fast_app().openapi()["paths"][path]["get"]["parameters"]
    assert fast == classic


def test_service_openapi_documents_every_query_parameter(trained, tmp_path):  # noqa: F811
    from service.app import create_app

    settings = ServiceSettings(artifacts_dir=trained[1], database_url=f"sqlite:///{tmp_path / 's.db'}")
    spec = create_app(settings).openapi()["paths"]
    names = {p: [x["name"] for x in op.get("parameters", [])] for p, ops in spec.items() for op in ops.values()}
    assert names["/users/{user_id}/recommendations"] == [
        "user_id", "similarity", "exclude_rated", "genre", "fallback", "k", "model",
    ]  # fmt: skip
    assert names["/movies/{movie_id}/similar"] == ["movie_id", "similarity", "genre", "k", "model"]
    assert names["/predict"] == ["strict", "model"]
    ok = spec["/users/{user_id}/recommendations"]["get"]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"] == {"$ref": "#/components/schemas/Recommendations"}
    assert spec["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PredictRequest"
    }


# --------------------------------------------------------------------------------------------------------
# Id maps, prediction
# --------------------------------------------------------------------------------------------------------


def _reference_codes(ids: np.ndarray, values) -> list[int]:
    where = {v: i for i, v in enumerate(ids.tolist())}
    return [where.get(v, -1) for v in values]


@pytest.mark.parametrize(
    "ids",
    [
        np.array([5, 3, 10, 1, 200_000], dtype=np.int64),  # compact: a lookup table
        np.array([7, 2**40, 3], dtype=np.int64),  # sparse: sorted search
        np.array([], dtype=np.int64),
        np.array(["b", "a", "zz"]),
    ],
)
def test_id_map_lookup_table_and_search_agree(ids):
    m = IdMap(ids)
    if ids.dtype.kind in "iu":
        probes = [5, 3, 10, 1, 200_000, 0, 2, -1, -200_000, 2**40, 2**62, 199_999, 200_001, 7]
        assert m.codes(np.asarray(probes, dtype=np.int64)).tolist() == _reference_codes(ids, probes)
        assert m.codes(np.asarray(probes[:5], dtype=np.uint64)).tolist() == _reference_codes(ids, probes[:5])
        assert m.codes([]).tolist() == []
        for p in probes:
            c = m.code(p)
            assert (c if c is not None else -1) == _reference_codes(ids, [p])[0]
            assert m.code(np.int64(p)) == c
    else:
        assert m.codes(np.array(["a", "q"])).tolist() == [1, -1] and m.code("zz") == 2 and m.code("x") is None


def test_single_user_prediction_equals_the_reference(model):
    art = model.artifact
    rng = np.random.default_rng(0)
    for u in rng.choice(art.n_users, 10, replace=False):
        for n in (1, 12, art.n_items):  # the scalar transform (a page) and the array one
            items = rng.choice(art.n_items, n, replace=False)
            np.testing.assert_allclose(
                model.predict_user(int(u), items), artifacts.predict(art, int(u), items), rtol=0, atol=1e-12
            )


@pytest.mark.parametrize("transform", ["sigmoid", "linear"])
def test_scalar_output_transform_equals_the_array_one(transform):
    from service.model_state import _output_transform_scalars

    scale = artifacts.ScaleSpec(low=0.5, high=5.0, step=0.5)
    output = artifacts.OutputSpec(transform=transform, low=0.0 if transform == "sigmoid" else 0.5, high=5.5)
    raw = np.concatenate([np.linspace(-50, 50, 2001), [0.0, -0.0, 1e-300, -1e-300, 800.0, -800.0, 1e308, -1e308]])
    np.testing.assert_allclose(
        _output_transform_scalars(raw.tolist(), output, scale),
        artifacts.apply_output_transform(raw, output, scale),
        rtol=0,
        atol=1e-14,
    )


# --------------------------------------------------------------------------------------------------------
# The store read of recommendations, on SQLite and PostgreSQL
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cache_size", [0, 1000])
def test_rated_movie_ids_reads_the_store_with_a_bound_parameter(db_url, cache_size):
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        reader = RatedMovieIds(engine, cache_size)
        assert "9001" not in reader.sql and ("?" in reader.sql or "%(user_id)s" in reader.sql)
        with Session(engine) as s:
            s.add_all([Movie(movie_id=m, title=f"m{m}") for m in (1, 5, 2**40, 77)])
            s.add_all([Rating(user_id=9001, movie_id=m, rating=3.0, timestamp=1) for m in (5, 2**40, 1)])
            s.add(Rating(user_id=9002, movie_id=77, rating=1.0, timestamp=1))
            s.commit()
        got = reader(9001)
        assert got.dtype == np.int64 and got.tolist() == [1, 5, 2**40]  # ascending: what pick() searches
        assert not got.flags.writeable  # a cached array is shared between requests
        assert reader(9002).tolist() == [77]
        assert reader(1234).dtype == np.int64 and reader(1234).size == 0  # nobody: empty, not an error
        with Session(engine) as s:  # a rating committed elsewhere shows up in the very next read
            upsert_rating(s, 9001, 77, 4.5, 2)
        assert sorted(reader(9001).tolist()) == [1, 5, 77, 2**40]
        many = list(range(100, 3100))
        with Session(engine) as s:
            s.add_all([Movie(movie_id=m, title="") for m in many])
            s.add_all([Rating(user_id=9003, movie_id=m, rating=2.0, timestamp=1) for m in many])
            s.commit()
        assert sorted(reader(9003).tolist()) == many
        kept = getattr(reader._local, "conn", None)  # SQLite: this thread's own connection, no open snapshot
        assert (kept is not None and not kept.in_transaction) if db_url.startswith("sqlite") else kept is None
    finally:
        reader.close()
        engine.dispose()


@pytest.mark.parametrize("cache_size", [0, 3])
def test_rated_movie_ids_from_threads_then_closed(tmp_path, cache_size):
    """SQLite: one kept connection per reading thread, each seeing every commit, all closed by close()."""
    from concurrent.futures import ThreadPoolExecutor

    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    engine = make_engine(url)
    reader = RatedMovieIds(engine, cache_size)
    try:
        with Session(engine) as s:
            s.add_all([Movie(movie_id=m, title="") for m in range(1, 41)])
            s.commit()
        with ThreadPoolExecutor(4) as pool:
            for m in range(1, 41):
                with Session(engine) as s:
                    upsert_rating(s, 5, m, 3.0, 1)
                got = list(pool.map(lambda _: sorted(reader(5).tolist()), range(8)))
                assert got == [list(range(1, m + 1))] * 8  # every thread sees the commit just made
        assert 1 <= len(reader._kept) <= 4 and engine.pool.checkedout() == 0
        reader.close()
        assert reader._kept == []
        assert sorted(reader(5).tolist()) == list(range(1, 41))  # and reads again after close()
    finally:
        reader.close()
        engine.dispose()


def test_rated_movie_ids_cache_sees_commits_from_another_process(tmp_path):
    """The cached read (SQLite) is never stale: a rating committed by another process (another API
    worker, a `db load`) empties the cache through PRAGMA data_version before the next read."""
    import subprocess
    import sys

    db = tmp_path / "store.db"
    url = f"sqlite:///{db}"
    upgrade(url)
    engine = make_engine(url)
    reader = RatedMovieIds(engine, cache_size=10)
    try:
        with Session(engine) as s:
            s.add_all([Movie(movie_id=m, title="") for m in range(1, 30)])
            s.add_all([Rating(user_id=u, movie_id=u + 1, rating=3.0, timestamp=1) for u in range(20)])
            s.commit()
        assert reader(4).tolist() == [5]
        assert reader(4) is reader(4)  # unchanged store: served from the cache
        for m in (9, 2):
            code = (
                "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                f"c.execute('INSERT INTO ratings (user_id, movie_id, rating, timestamp) VALUES (4, {m}, 5.0, 2)'); "
                "c.commit()"
            )
            subprocess.run([sys.executable, "-c", code, str(db)], check=True)
        assert reader(4).tolist() == [2, 5, 9]
        for u in range(20):  # more users than the cache holds: the evicted ones are read again, correctly
            assert reader(u).tolist() == ([2, 5, 9] if u == 4 else [u + 1])
    finally:
        reader.close()
        engine.dispose()


def test_rated_movie_ids_replaces_a_failed_connection(tmp_path):
    url = f"sqlite:///{tmp_path / 'late.db'}"
    engine = make_engine(url)
    reader = RatedMovieIds(engine)
    try:
        with pytest.raises(reader.errors):
            reader(1)  # no schema yet
        assert reader._kept == []
        upgrade(url)
        assert reader(1).size == 0
    finally:
        reader.close()
        engine.dispose()


def test_rated_movie_ids_failure_is_reported_not_raised(tmp_path):
    from service.api.store_access import rated_movie_ids

    for url in (
        f"sqlite:///{tmp_path / 'nothing.db'}",  # no schema: the table does not exist
        "postgresql://postgres@127.0.0.1:1/nothing",  # nothing listens there: the connection is refused
    ):
        engine = make_engine(url)
        reader = RatedMovieIds(engine)
        try:
            assert rated_movie_ids(reader, 1) is None
        finally:
            reader.close()
            engine.dispose()


# --------------------------------------------------------------------------------------------------------
# Access log
# --------------------------------------------------------------------------------------------------------


def test_access_log_only_where_it_can_be_written():
    on = ServiceSettings(log_level="info")
    assert access_log_enabled(on) and access_log_enabled(ServiceSettings(log_level="debug"))
    assert not access_log_enabled(ServiceSettings(log_level="info", access_log=False))
    for level in ("warning", "error", "critical"):
        assert not access_log_enabled(ServiceSettings(log_level=level))  # INFO lines were dropped anyway
