"""Sequence (BST-style) model: planted temporal signal, windows vs brute force, ONNX == torch, artifact and
CLI round trips, and (slow) the leave-last-one-out MAE against biased MF on ml-100k."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from movierec import artifacts
from movierec.cli import app
from movierec.sequence_runtime import SequenceScorer
from trainer.config import load_settings
from trainer.data.dataset import RatingScale, RatingsData
from trainer.data.splits import leave_last_n
from trainer.data.synth import write_movielens
from trainer.models.sequence import (
    SequenceModel,
    SequenceParams,
    encode_user_features,
    last_histories,
    sliding_windows,
    time_order,
)
from trainer.pipeline import train
from trainer.training import OptimConfig

from .shared_data import shared_movielens


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin-waits that cost 10x on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def streaky(n_users: int = 150, n_items: int = 80, per_user: int = 40, seed: int = 0, features: bool = True):
    """Each user's next rating repeats their previous one 85% of the time (else uniform): only the order of
    a user's ratings predicts it; movies and users carry no signal of their own."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), per_user)
    items = np.concatenate([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)])
    ratings = np.empty(len(users), dtype=np.float32)
    for u in range(n_users):
        r = rng.integers(1, 6)
        for k in range(per_user):
            if rng.random() > 0.85:
                r = rng.integers(1, 6)
            ratings[u * per_user + k] = r
    timestamps = 10**9 + users * 10**6 + np.tile(np.arange(per_user) * 60, n_users)
    shuffle = rng.permutation(len(users))  # file order must not matter, only timestamps
    user_features = None
    if features:
        user_features = pd.DataFrame(
            {
                "gender": rng.choice(["F", "M", ""], n_users),
                "age": rng.choice([-1, 7, 19, 33, 61], n_users),
                "occupation": rng.choice(["writer", "other", "student"], n_users),
            },
            index=pd.RangeIndex(n_users, name="user"),
        )
    return RatingsData(
        users=users[shuffle].astype(np.int32),
        items=items[shuffle].astype(np.int32),
        ratings=ratings[shuffle],
        timestamps=timestamps[shuffle].astype(np.int64),
        user_ids=np.arange(1, n_users + 1, dtype=np.int64),
        item_ids=np.arange(1, n_items + 1, dtype=np.int64),
        item_titles=np.asarray([f"Movie {i} (1990)" for i in range(n_items)]),
        item_years=np.full(n_items, 1990, dtype=np.int16),
        item_genres=np.zeros((n_items, 0), dtype=np.uint8),
        genre_names=(),
        scale=RatingScale(1.0, 5.0, 1.0),
        user_features=user_features,
        source="streaky",
    )


def params(**kw) -> SequenceParams:
    optim = OptimConfig(epochs=kw.pop("epochs", 8), lr=5e-3, patience=0, batch_size=256)
    base = {"dim": 16, "length": 5, "ff": 32, "mlp": (32,), "dropout": 0.0, "retrieval": "none"}
    return SequenceParams(**{**base, **kw}, optim=optim)


@pytest.fixture(scope="module")
def data() -> RatingsData:
    return streaky()


@pytest.fixture(scope="module")
def fitted(data):
    """A model with every input in play (features, user ids, two layers), trained briefly, and its export."""
    tr, te = leave_last_n(data, 1, seed=0)
    model = SequenceModel(
        params(layers=2, user_id=True, epochs=2), torch.device("cpu"), torch.Generator().manual_seed(0)
    )
    model.fit(tr)
    return model, model.export(), tr, te


def test_learns_the_planted_streaks(data):
    tr, te = leave_last_n(data, 1, seed=0)
    model = SequenceModel(params(), torch.device("cpu"), torch.Generator().manual_seed(0))
    history = model.fit(tr)
    mae = float(np.mean(np.abs(model.predict(te.users, te.items) - te.ratings)))
    mean_mae = float(np.mean(np.abs(tr.ratings.mean() - te.ratings)))
    # Copying the last rating is right 85% + 3% of the time: MAE ~0.2 against ~1.2 for the global mean.
    assert mae < 0.5 * mean_mae, (mae, mean_mae)
    assert history.epochs[-1].train_rmse < history.epochs[0].train_rmse


def test_sliding_windows_match_a_per_user_loop(data):
    n_hist, pad = 3, data.n_items
    w = sliding_windows(data.users, data.items, data.ratings, data.timestamps, n_hist, pad, seed=1)
    order = time_order(data.users, data.timestamps, seed=1)
    assert len(w.targets) == len(data)
    per_user: dict[int, list[int]] = {}
    for row in order.tolist():
        per_user.setdefault(int(data.users[row]), []).append(row)
    k = 0
    for rows in per_user.values():
        for pos, row in enumerate(rows):
            prev = rows[max(0, pos - n_hist) : pos]
            want_items = [pad] * (n_hist - len(prev)) + data.items[prev].tolist()
            want_ratings = [0.0] * (n_hist - len(prev)) + data.ratings[prev].tolist()
            assert w.rows[k] == row and w.targets[k] == data.items[row]
            assert w.hist_items[k].tolist() == want_items and w.hist_ratings[k].tolist() == want_ratings
            k += 1
    seq_items, seq_ratings = last_histories(
        data.users, data.items, data.ratings, data.timestamps, data.n_users, n_hist, seed=1
    )
    for u, rows in per_user.items():
        assert seq_items[u].tolist() == data.items[rows[-n_hist:]].tolist()
        assert seq_ratings[u].tolist() == data.ratings[rows[-n_hist:]].tolist()


def test_user_feature_codes():
    features = pd.DataFrame({"gender": ["M", "F", ""], "age": [17, 18, -1], "occupation": ["b", "a", ""]})
    codes, names, cards = encode_user_features(features, 3)
    assert names == ["gender", "age", "occupation"] and cards == [3, 8, 3]
    assert codes.tolist() == [[2, 1, 2], [1, 2, 1], [0, 0, 0]]
    assert encode_user_features(None, 4)[0].shape == (4, 0)


def test_onnx_runtime_equals_torch(fitted, data):
    model, exported, tr, te = fitted
    scorer = SequenceScorer.from_arrays(exported.arrays, exported.hyperparameters, (1.0, 5.0))
    rng = np.random.default_rng(3)
    u = rng.integers(0, data.n_users, 3000)
    i = rng.integers(0, data.n_items, 3000)
    np.testing.assert_allclose(scorer.predict(u, i), model.predict(u, i), atol=1e-4)
    np.testing.assert_allclose(scorer.predict(te.users, te.items), model.predict(te.users, te.items), atol=1e-4)
    arrays = exported.arrays
    assert arrays["sequence_onnx"].dtype == np.uint8 and arrays["seq_items"].shape == (data.n_users, 4)
    assert arrays["user_feature_codes"].shape == (data.n_users, 3)
    # With retrieval "none" the factors are the movie embeddings and zero user vectors.
    assert not arrays["user_factors"].any() and arrays["item_factors"].shape == (data.n_items, 16)
    with pytest.raises(ValueError, match="item codes"):
        scorer.predict([0], [data.n_items])


def test_score_items_reranks_retrieval_candidates(fitted):
    model, _, tr, _ = fitted
    users = np.arange(5)
    scores = model.score_items(users)
    assert scores.shape == (5, tr.n_items) and np.isfinite(scores).all()
    top = np.argsort(-scores, axis=1)[:, :10]
    rated = model.predict(np.repeat(users, 10), top.ravel()).reshape(5, 10)
    assert (np.diff(rated, axis=1) <= 1e-6).all()  # the head is ordered by predicted rating
    for row, u in enumerate(users):  # and holds no movie the user already rated
        assert not set(top[row].tolist()) & set(tr.items[tr.users == u].tolist())


def test_artifact_round_trip_through_the_pipeline(tmp_path, data):
    write_movielens(data, tmp_path / "d")
    settings = load_settings(
        None,
        model="sequence",
        data=tmp_path / "d",
        split="leave-last",
        artifacts_dir=tmp_path / "art",
        epochs=2,
        dim=8,
        sequence_length=4,
        sequence_ff=16,
        sequence_mlp=(16,),
        sequence_user_id=True,
    )
    result = train(settings)
    art = artifacts.load_version(tmp_path / "art")
    assert art.path == result.version_dir and art.manifest.model_kind == "sequence"
    scorer = SequenceScorer.from_artifact(art)
    rng = np.random.default_rng(1)
    u = rng.integers(0, art.n_users, 2000)
    i = rng.integers(0, art.n_items, 2000)
    np.testing.assert_allclose(scorer.predict(u, i), result.model.predict(u, i), atol=1e-4)
    # The factor arrays are the MF retrieval model: the reference predict reproduces it.
    mf = result.model.retrieval
    assert mf is not None and mf.kind == "mf"
    np.testing.assert_allclose(artifacts.predict(art, u, i), mf.predict(u, i), atol=1e-5)
    # Histories: each user's most recent training ratings, most recent last.
    assert (art.arrays["seq_items"][:, -1] >= 0).all()
    assert art.manifest.hyperparameters["sequence"]["n_history"] == 3
    assert "test" in art.manifest.metrics and "mae" in art.manifest.metrics["test"]["model"]


def test_cli_train_sequence(tmp_path):
    d = streaky(n_users=40, per_user=12, features=False)
    write_movielens(d, tmp_path / "d")
    args = ["train", "--model", "sequence", "--data", str(tmp_path / "d"), "--split", "leave-last"]
    args += ["--out", str(tmp_path / "art"), "--epochs", "1", "--dim", "8", "--sequence-length", "3"]
    args += ["--sequence-mlp", "8", "--sequence-retrieval", "none", "--sequence-heads", "1"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    art = artifacts.load_version(tmp_path / "art")
    hp = art.manifest.hyperparameters
    assert (hp["length"], hp["mlp"], hp["retrieval"], hp["heads"]) == (3, [8], "none", 1)
    assert art.arrays["user_feature_codes"].shape == (art.n_users, 0)  # ml-latest layout: no user features
    np.testing.assert_array_less(-1e-9, SequenceScorer.from_artifact(art).predict([0, 1], [0, 1]) - 1.0)
    res = CliRunner().invoke(app, [*args, "--sequence-heads", "3"])  # 8 is not a multiple of 3
    assert res.exit_code != 0


def test_kind_defaults():
    s = load_settings(None, model="sequence")
    assert (s.dim, s.epochs, s.lr, s.patience) == (32, 8, 2e-3, 0)
    p = SequenceParams.from_settings(s)
    assert p == SequenceParams()  # the dataclass defaults are the settings' defaults


@pytest.mark.slow
def test_ml100k_leave_last_one_out_beats_mf_mae():
    """The headline: on each user's last rating, the sequence model's MAE is below biased MF's."""
    path = shared_movielens() / "ml-100k"
    maes = {}
    for kind in ("mf", "sequence"):
        settings = load_settings(None, model=kind, data=path, split="leave-last", sequence_retrieval="none")
        maes[kind] = train(settings, publish=False).metrics["test"]["model"]["mae"]
    assert maes["sequence"] < maes["mf"], maes
