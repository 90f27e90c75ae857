"""Every model kind round-trips through the artifact format and serves the three main endpoints, side by
side in one service (``?model=NAME``), with the defaults picked by NDCG (recommendations) and RMSE
(predictions), and fold-in for users created through the API (als, softmax)."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from movierec import artifacts
from movierec.foldin import fold_in_from_artifact
from service.app import create_app
from service.config import ServiceSettings
from tests.test_service_api import KEY_HEADERS, TEST_API_KEY
from trainer.config import load_settings
from trainer.data.synth import generate, write_movielens
from trainer.pipeline import train

KINDS = ("mf", "als", "bpmf", "gravity", "softmax", "sequence")
FAST = {"mf": {"epochs": 4}, "als": {"epochs": 4}, "bpmf": {"epochs": 12, "bpmf_burn_in": 4, "bpmf_keep": 4},
        "gravity": {"epochs": 4}, "softmax": {"epochs": 8},
        "sequence": {"epochs": 1}}  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("models")
    data = base / "data"
    write_movielens(generate(150, 100, 6000, rank=4, noise=0.3, seed=11).data, data)
    art = base / "artifacts"
    for kind in KINDS:
        train(load_settings(None, data=data, artifacts_dir=art, model=kind, dim=8, patience=0, **FAST[kind]))
    return art


@pytest.fixture
def client(root, tmp_path):
    settings = ServiceSettings(artifacts_dir=root, database_url=f"sqlite:///{tmp_path / 's.db'}", reload_interval_s=0,
                               api_key=TEST_API_KEY)  # fmt: skip
    from service.store.migrations import upgrade

    upgrade(settings.database_url)
    with TestClient(create_app(settings), headers=KEY_HEADERS) as c:
        yield c


def loaded(root, kind):
    return artifacts.load_version(artifacts.latest_version(root, kind))


def test_every_kind_has_its_own_pointer_and_round_trips(root):
    assert artifacts.latest_kinds(root) == sorted(KINDS)
    for kind in KINDS:
        art = loaded(root, kind)
        assert art.manifest.model_kind == kind
        assert np.isfinite(art.user_factors).all() and np.isfinite(art.item_factors).all()


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_serves_the_three_endpoints(client, root, kind):
    art = loaded(root, kind)
    user, movie = int(art.user_ids[4]), int(art.item_ids[2])
    r = client.get(f"/users/{user}/recommendations", params={"k": 5, "model": kind})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == art.version and len(body["items"]) == 5
    ids = [i["movie_id"] for i in body["items"]]
    rated = set(art.item_ids[art.rated_items(4)].tolist())
    assert not set(ids) & rated
    if kind == "sequence":  # re-ranked by the transformer's predicted rating
        from movierec.sequence_runtime import SequenceScorer

        preds = [i["predicted_rating"] for i in body["items"]]
        assert preds == sorted(preds, reverse=True)
        codes = [art.item_ids.tolist().index(m) for m in ids]
        np.testing.assert_allclose(preds, SequenceScorer.from_artifact(art).predict([4] * 5, codes), atol=1e-5)
    else:  # the dot ranking is the brute-force u.v + b_i order
        scores = art.item_factors.astype(np.float64) @ art.user_factors[4] + art.item_bias
        scores[art.rated_items(4)] = -np.inf
        assert ids == [int(art.item_ids[c]) for c in np.lexsort((np.arange(art.n_items), -scores))[:5]]
    p = client.post("/predict", params={"model": kind}, json={"user_id": user, "movie_id": movie})
    assert p.status_code == 200, p.text
    expected = (
        __import__("movierec.sequence_runtime", fromlist=["x"]).SequenceScorer.from_artifact(art).predict([4], [2])[0]
        if kind == "sequence"
        else artifacts.predict(art, 4, 2)
    )
    assert p.json()["predictions"][0]["rating"] == pytest.approx(float(expected), abs=1e-5)
    s = client.get(f"/movies/{movie}/similar", params={"k": 4, "model": kind})
    assert s.status_code == 200 and len(s.json()["items"]) == 4
    assert movie not in [i["movie_id"] for i in s.json()["items"]]


def test_unknown_model_is_a_422_naming_the_loaded_ones(client):
    r = client.get("/users/1/recommendations", params={"model": "nope"})
    assert r.status_code == 422
    assert "nope" in r.json()["detail"] and "als" in r.json()["detail"]


def test_defaults_are_best_ndcg_for_recommendations_and_best_rmse_for_predictions(client, root):
    def metric(kind, name):
        return loaded(root, kind).manifest.metrics["test"]["model"][name]

    best_ndcg = max(KINDS, key=lambda k: metric(k, "ndcg@10"))
    best_rmse = min(KINDS, key=lambda k: metric(k, "rmse"))
    art = loaded(root, best_ndcg)
    r = client.get(f"/users/{int(art.user_ids[0])}/recommendations")
    assert r.json()["model_version"] == art.version
    p = client.post("/predict", json={"user_id": int(art.user_ids[0]), "movie_id": int(art.item_ids[0])})
    assert p.json()["model_version"] == loaded(root, best_rmse).version


def test_explicit_default_settings_win(root, tmp_path):
    settings = ServiceSettings(artifacts_dir=root, database_url=f"sqlite:///{tmp_path / 's.db'}",
                               reload_interval_s=0, recommend_model="gravity", predict_model="als")  # fmt: skip
    with TestClient(create_app(settings)) as c:
        art = loaded(root, "gravity")
        assert c.get(f"/users/{int(art.user_ids[0])}/recommendations").json()["model_version"] == art.version
        p = c.post("/predict", json={"user_id": int(art.user_ids[0]), "movie_id": int(art.item_ids[0])})
        assert p.json()["model_version"] == loaded(root, "als").version


@pytest.mark.parametrize("kind", ["als", "softmax"])
def test_a_user_created_through_the_api_is_folded_in(client, root, kind):
    art = loaded(root, kind)
    new_user = int(art.user_ids.max()) + 77
    posted = {int(art.item_ids[c]): float(r) for c, r in [(0, 5.0), (3, 4.0), (7, 1.0), (11, 4.5)]}
    for movie, rating in posted.items():
        assert client.post(f"/users/{new_user}/ratings", json={"movie_id": movie, "rating": rating}).status_code == 201
    r = client.get(f"/users/{new_user}/recommendations", params={"k": 6, "model": kind})
    assert r.status_code == 200, r.text
    assert r.json()["strategy"] == "fold_in"
    ids = [i["movie_id"] for i in r.json()["items"]]
    assert not set(ids) & set(posted)
    codes = np.asarray([art.item_ids.tolist().index(m) for m in posted])
    ratings = np.asarray(list(posted.values()))
    if kind == "als":
        vector, _ = fold_in_from_artifact(art, codes, ratings)
    else:
        from movierec import towers

        vector = towers.embed_user(art.arrays, art.manifest.hyperparameters, codes, ratings)
    scores = art.item_factors.astype(np.float64) @ np.asarray(vector, dtype=np.float64) + art.item_bias
    scores[codes] = -np.inf
    assert ids == [int(art.item_ids[c]) for c in np.lexsort((np.arange(art.n_items), -scores))[:6]]
