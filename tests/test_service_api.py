"""The HTTP API over real requests (httpx through the ASGI app, lifespan included) on artifacts trained in
a fixture, with every top-k list checked against a brute-force numpy reference."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from movierec import artifacts
from service.app import create_app
from service.config import ServiceSettings
from trainer.config import load_settings
from trainer.data.movielens import load_dataset
from trainer.data.synth import generate, write_movielens
from trainer.pipeline import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small MF model trained on planted data, published under an artifacts root."""
    root = tmp_path_factory.mktemp("svc")
    data_dir = root / "data"
    write_movielens(generate(120, 90, 4000, rank=4, noise=0.3, seed=5).data, data_dir)
    art_dir = root / "artifacts"
    train(load_settings(None, data=data_dir, artifacts_dir=art_dir, epochs=4, dim=8, split="none", patience=0))
    return data_dir, art_dir


#: the API key the test apps are configured with (writes need it: service/security.py), and its header
TEST_API_KEY = "test-api-key-0123456789"
KEY_HEADERS = {"X-API-Key": TEST_API_KEY}


def make_settings(art_dir: Path, db_url: str, **kw) -> ServiceSettings:
    kw.setdefault("api_key", TEST_API_KEY)
    return ServiceSettings(artifacts_dir=art_dir, database_url=db_url, reload_interval_s=0, **kw)


@pytest.fixture
def store_url(db_url, trained):
    """A migrated store holding the training data (what `movierec db load` produces), on SQLite and on
    the real PostgreSQL (``db_url`` is parametrized over both), so every API test runs on each."""
    from service.store.database import make_engine
    from service.store.migrations import upgrade
    from trainer.data.store import load_into_store

    url = db_url
    upgrade(url)
    engine = make_engine(url)
    load_into_store(load_dataset(trained[0]), engine)
    engine.dispose()
    return url


@pytest.fixture
def client(trained, store_url):
    with TestClient(create_app(make_settings(trained[1], store_url, max_k=50)), headers=KEY_HEADERS) as c:
        yield c


@pytest.fixture(scope="module")
def art(trained):
    return artifacts.load_version(trained[1])


def user_code(art, user_id):
    return int(np.flatnonzero(art.user_ids == user_id)[0])


def reference_top_k(scores: np.ndarray, k: int, exclude=(), allowed=None) -> list[int]:
    """Brute force: best score first, ties by code; excluded codes and disallowed codes never appear."""
    ok = np.ones(len(scores), dtype=bool)
    ok[np.asarray(list(exclude), dtype=np.int64)] = False
    if allowed is not None:
        ok &= allowed
    codes = np.flatnonzero(ok)
    order = np.lexsort((codes, -scores[codes]))
    return [int(c) for c in codes[order][:k]]


def user_scores(art, code: int, similarity: str) -> np.ndarray:
    u = art.user_factors[code].astype(np.float64)
    v = art.item_factors.astype(np.float64)
    if similarity == "dot":
        return v @ u + art.item_bias
    vn = np.linalg.norm(v, axis=1)
    return (v @ u) / np.maximum(vn * np.linalg.norm(u), 1e-30)


def ids_of(response) -> list[int]:
    return [item["movie_id"] for item in response.json()["items"]]


def codes_to_ids(art, codes) -> list[int]:
    return [int(art.item_ids[c]) for c in codes]


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
@pytest.mark.parametrize("exclude_rated", [True, False])
def test_recommendations_equal_brute_force(client, art, similarity, exclude_rated):
    for user_id in art.user_ids[:15]:
        code = user_code(art, int(user_id))
        r = client.get(
            f"/users/{int(user_id)}/recommendations",
            params={"k": 10, "similarity": similarity, "exclude_rated": str(exclude_rated).lower()},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["strategy"] == "model" and body["model_version"] == art.version
        exclude = art.rated_items(code) if exclude_rated else ()
        expected = codes_to_ids(art, reference_top_k(user_scores(art, code, similarity), 10, exclude))
        assert ids_of(r) == expected
        if exclude_rated:
            assert not set(ids_of(r)) & set(codes_to_ids(art, art.rated_items(code)))
        scores = [i["score"] for i in body["items"]]
        assert scores == sorted(scores, reverse=True)
        if similarity == "dot":  # ranking by score is ranking by the full predicted rating
            preds = [i["predicted_rating"] for i in body["items"]]
            ref = artifacts.predict(art, code, [art.item_ids.tolist().index(m) for m in ids_of(r)])
            np.testing.assert_allclose(preds, ref, atol=1e-6)
            assert preds == sorted(preds, reverse=True)


def test_genre_filter_is_exact(client, art):
    genre = art.genre_names[int(np.argmax(art.item_genres.sum(axis=0)))]
    mask = art.item_genres[:, art.genre_names.index(genre)].astype(bool)
    user_id = int(art.user_ids[3])
    code = user_code(art, user_id)
    r = client.get(f"/users/{user_id}/recommendations", params={"k": 8, "genre": genre})
    assert r.status_code == 200, r.text
    assert all(genre in item["genres"] for item in r.json()["items"])
    expected = reference_top_k(user_scores(art, code, "dot"), 8, art.rated_items(code), mask)
    assert ids_of(r) == codes_to_ids(art, expected)
    bad = client.get(f"/users/{user_id}/recommendations", params={"genre": "NoSuchGenre"})
    assert bad.status_code == 422 and "genre" in bad.json()["detail"]


def test_k_results_whenever_k_unrated_movies_exist(client, art):
    # the user with the most ratings: ask for every unrated movie, and one more
    code = int(np.argmax(np.diff(art.arrays["rated_indptr"])))
    unrated = art.n_items - len(art.rated_items(code))
    r = client.get(f"/users/{int(art.user_ids[code])}/recommendations", params={"k": min(unrated, 50)})
    assert len(ids_of(r)) == min(unrated, 50)


def test_posted_rating_disappears_from_next_recommendations(client, art):
    user_id = int(art.user_ids[7])
    first = ids_of(client.get(f"/users/{user_id}/recommendations", params={"k": 5}))
    posted = client.post(f"/users/{user_id}/ratings", json={"movie_id": first[0], "rating": 4.5})
    assert posted.status_code == 201, posted.text
    assert posted.json()["movie_id"] == first[0]
    after = ids_of(client.get(f"/users/{user_id}/recommendations", params={"k": 5}))
    assert first[0] not in after
    assert after[:4] == first[1:]  # the rest of the list moves up unchanged
    again = client.post(f"/users/{user_id}/ratings", json={"movie_id": first[0], "rating": 2.0})
    assert again.status_code == 200 and again.json()["rating"] == 2.0
    ratings = client.get(f"/users/{user_id}/ratings").json()["ratings"]
    assert {"movie_id": first[0], "rating": 2.0} in [{k: r[k] for k in ("movie_id", "rating")} for r in ratings]


def test_cold_start_user_gets_damped_popular_movies(client, art):
    new_user = int(art.user_ids.max()) + 1000
    assert client.get(f"/users/{new_user}/recommendations").status_code == 404
    r = client.get(f"/users/{new_user}/recommendations", params={"fallback": "popular", "k": 5})
    assert r.status_code == 200 and r.json()["strategy"] == "popular"
    count = art.arrays["item_rating_count"].astype(np.float64)
    mean = art.arrays["item_rating_mean"].astype(np.float64)
    prior = ServiceSettings().popularity_prior
    g = (count * mean).sum() / count.sum()
    damped = (count * mean + prior * g) / (count + prior)
    assert ids_of(r) == codes_to_ids(art, reference_top_k(damped, 5))
    top = ids_of(r)[0]
    assert client.post(f"/users/{new_user}/ratings", json={"movie_id": top, "rating": 5}).status_code == 201
    r2 = client.get(f"/users/{new_user}/recommendations", params={"k": 5})  # known to the store now
    assert r2.status_code == 200 and r2.json()["strategy"] == "popular"
    assert ids_of(r2) == codes_to_ids(art, reference_top_k(damped, 5, exclude=[art.item_ids.tolist().index(top)]))


def test_predict_single_batch_fallbacks_and_strict(client, art):
    u, m = int(art.user_ids[2]), int(art.item_ids[4])
    r = client.post("/predict", json={"user_id": u, "movie_id": m})
    assert r.status_code == 200, r.text
    p = r.json()["predictions"][0]
    assert p["strategy"] == "model"
    assert p["rating"] == pytest.approx(float(artifacts.predict(art, 2, 4)), abs=1e-6)
    unknown_user, unknown_movie = int(art.user_ids.max()) + 1, int(art.item_ids.max()) + 1
    pairs = [
        {"user_id": u, "movie_id": m},
        {"user_id": unknown_user, "movie_id": m},
        {"user_id": u, "movie_id": unknown_movie},
        {"user_id": unknown_user, "movie_id": unknown_movie},
    ]
    r = client.post("/predict", json={"pairs": pairs})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["strategy"] for p in preds] == ["model", "movie_bias", "user_bias", "global_mean"]
    scale = art.manifest.rating_scale
    assert all(scale.low <= p["rating"] <= scale.high for p in preds)
    off = art.manifest.global_offset
    ref = artifacts.apply_output_transform(np.array([art.item_bias[4] + off]), art.manifest.output, scale)[0]
    assert preds[1]["rating"] == pytest.approx(float(ref), abs=1e-6)
    strict = client.post("/predict", params={"strict": "true"}, json={"user_id": unknown_user, "movie_id": m})
    assert strict.status_code == 404 and str(unknown_user) in strict.json()["detail"]


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_similar_movies_equal_brute_force(client, art, similarity):
    v = art.item_factors.astype(np.float64)
    for code in range(0, 40, 7):
        scores = v @ v[code]
        if similarity == "cosine":
            n = np.linalg.norm(v, axis=1)
            scores = scores / np.maximum(n * n[code], 1e-30)
        r = client.get(f"/movies/{int(art.item_ids[code])}/similar", params={"k": 6, "similarity": similarity})
        assert r.status_code == 200, r.text
        assert ids_of(r) == codes_to_ids(art, reference_top_k(scores, 6, exclude=[code]))
        assert int(art.item_ids[code]) not in ids_of(r)


def test_movie_details(client, art):
    r = client.get(f"/movies/{int(art.item_ids[0])}")
    assert r.status_code == 200
    body = r.json()
    assert body["title"] == str(art.item_titles[0]) and body["in_model"] is True
    assert body["rating_count"] == int(art.arrays["item_rating_count"][0])
    assert client.get(f"/movies/{int(art.item_ids.max()) + 5}").status_code == 404


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "status", "names"),
    [
        ("get", "/users/{u}/recommendations", {"params": {"k": 0}}, 422, "k"),
        ("get", "/users/{u}/recommendations", {"params": {"k": -3}}, 422, "k"),
        ("get", "/users/{u}/recommendations", {"params": {"k": 51}}, 422, "k"),
        ("get", "/users/{u}/recommendations", {"params": {"k": "ten"}}, 422, "k"),
        ("get", "/users/{u}/recommendations", {"params": {"similarity": "euclid"}}, 422, "similarity"),
        ("get", "/users/abc/recommendations", {}, 422, "user_id"),
        ("get", "/users/-5/recommendations", {}, 422, "user_id"),
        ("get", "/users/999999999/recommendations", {}, 404, "999999999"),
        ("get", "/movies/{m}/similar", {"params": {"similarity": "nope"}}, 422, "similarity"),
        ("get", "/movies/999999999/similar", {}, 404, "999999999"),
        ("get", "/movies/999999999", {}, 404, "999999999"),
        ("post", "/predict", {"json": {"user_id": 1}}, 422, "movie_id"),
        ("post", "/predict", {"json": {"user_id": "x", "movie_id": 1}}, 422, "user_id"),
        ("post", "/predict", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, ""),
        ("post", "/predict", {"json": {"pairs": [{"user_id": 1, "movie_id": 1}] * 1001}}, 422, "pairs"),
        ("post", "/predict", {"json": {"user_id": 1, "movie_id": 1, "pairs": [{"user_id": 1, "movie_id": 1}]}}, 422,
         "either"),
        ("post", "/users/{u}/ratings", {"json": {"movie_id": "{m}", "rating": 9}}, 422, "rating"),
        ("post", "/users/{u}/ratings", {"json": {"movie_id": "{m}", "rating": -1}}, 422, "rating"),
        ("post", "/users/{u}/ratings", {"json": {"movie_id": 999999999, "rating": 3}}, 404, "999999999"),
        ("post", "/users/{u}/ratings", {"json": {"movie_id": "{m}"}}, 422, "rating"),
    ],
)  # fmt: skip
def test_errors_are_json_and_name_the_problem(client, art, method, url, kwargs, status, names):
    u, m = int(art.user_ids[0]), int(art.item_ids[0])
    url = url.format(u=u, m=m)
    if "json" in kwargs and isinstance(kwargs["json"], dict) and kwargs["json"].get("movie_id") == "{m}":
        kwargs = {**kwargs, "json": {**kwargs["json"], "movie_id": m}}
    r = getattr(client, method)(url, **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert isinstance(body["detail"], str) and body["detail"]
    assert names in body["detail"]


def test_nan_rating_is_refused(client, art):
    u, m = int(art.user_ids[0]), int(art.item_ids[0])
    r = client.post(f"/users/{u}/ratings", content=b'{"movie_id": %d, "rating": NaN}' % m,
                    headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 422


def test_operations_endpoints(client, art):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True, "model_version": art.version, "store": "ok"}
    info = client.get("/model").json()
    assert info["version"] == art.version and info["model_kind"] == "mf"
    assert info["dims"]["n_items"] == art.n_items
    client.get(f"/users/{int(art.user_ids[0])}/recommendations")
    metrics = client.get("/metrics").text
    assert 'movierec_requests_total{method="GET",route="/users/{user_id}/recommendations",status="200"}' in metrics
    assert f'movierec_model_info{{kind="mf",version="{art.version}"}} 1.0' in metrics
    assert "movierec_request_seconds_bucket" in metrics
    schema = client.get("/openapi.json").json()
    for path in ("/users/{user_id}/recommendations", "/predict", "/movies/{movie_id}/similar"):
        assert path in schema["paths"]


def test_no_model_is_503_and_health_still_ok(tmp_path, store_url):
    with TestClient(create_app(make_settings(tmp_path / "empty", store_url))) as c:
        assert c.get("/health").status_code == 200
        r = c.get("/users/1/recommendations")
        assert r.status_code == 503 and "no model loaded" in r.json()["detail"]
        assert c.post("/predict", json={"user_id": 1, "movie_id": 1}).status_code == 503
        assert c.get("/ready").status_code == 503


def test_new_version_is_picked_up_without_restart(tmp_path, trained, store_url):
    root = tmp_path / "art"
    shutil.copytree(trained[1], root)
    old = artifacts.load_version(root)
    settings = ServiceSettings(artifacts_dir=root, database_url=store_url, reload_interval_s=0.2)
    with TestClient(create_app(settings)) as c:
        assert c.get("/model").json()["version"] == old.version
        new = artifacts.publish(root, old.manifest.draft(), dict(old.arrays))
        deadline = time.time() + 10
        while c.get("/model").json()["version"] != new.name and time.time() < deadline:
            time.sleep(0.1)
        assert c.get("/model").json()["version"] == new.name
        # a corrupt newer version is refused and the good one keeps serving
        # corrupted before any pointer names it (publishing into the served root first would race the
        # 0.2 s poll, which could load the version before the corruption), then moved in and pointed at
        side = tmp_path / "side"
        bad = artifacts.publish(side, old.manifest.draft(), dict(old.arrays))
        (bad / "item_factors.npy").write_bytes(b"garbage")
        shutil.move(str(bad), str(root / bad.name))
        artifacts.set_latest(root, bad.name, "mf")
        artifacts.set_latest(root, bad.name)
        deadline = time.time() + 10
        while c.get("/model").json()["last_reload_error"] is None and time.time() < deadline:
            time.sleep(0.1)
        info = c.get("/model").json()
        assert info["version"] == new.name and "checksum" in info["last_reload_error"]
        assert c.get(f"/users/{int(old.user_ids[0])}/recommendations").status_code == 200


def test_service_never_imports_torch_or_pandas():
    import subprocess
    import sys

    code = (
        "import sys; from service.app import create_app; from service.config import ServiceSettings; "
        "create_app(ServiceSettings()); "
        "bad = [m for m in ('torch', 'pandas', 'trainer') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
