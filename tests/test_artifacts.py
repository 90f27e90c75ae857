"""The artifact contract: round trips, refusing corruption, crash-safe publishing, reference predict."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import movierec.artifacts as art
from movierec.artifacts import (
    REQUIRED_ARRAYS,
    SCHEMA_VERSION,
    ArtifactError,
    DatasetInfo,
    Dims,
    ManifestDraft,
    OutputSpec,
    ScaleSpec,
    apply_output_transform,
    cleanup_stale_tmp,
    latest_version,
    list_versions,
    load_version,
    new_version_name,
    predict,
    publish,
    set_latest,
)

REPO = Path(__file__).resolve().parents[1]


def make_model(
    seed: int = 0,
    n_users: int = 7,
    n_items: int = 11,
    dim: int = 4,
    *,
    genres: tuple[str, ...] = ("Action", "Comedy", "Drama"),
    kind: str = "mf",
    str_ids: bool = False,
    transform: str = "sigmoid",
    scale: float = 1.0,
) -> tuple[ManifestDraft, dict[str, np.ndarray]]:
    """A small but complete model; some users have no training items (empty CSR rows)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, min(5, n_items) + 1, size=n_users)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    rows = [np.sort(rng.choice(n_items, size=c, replace=False)) for c in counts]
    indices = np.concatenate(rows).astype(np.int32) if rows else np.zeros(0, np.int32)
    if str_ids:
        user_ids = np.array([f"u{i:03d}" for i in range(n_users)])
        item_ids = np.array([f"tt{i:07d}" for i in range(n_items)])
    else:
        user_ids = (np.arange(n_users, dtype=np.int64) * 3 + 1).astype(np.int64)
        item_ids = (np.arange(n_items, dtype=np.int64) * 7 + 2).astype(np.int64)
    arrays = {
        "user_factors": (rng.normal(size=(n_users, dim)) * scale).astype(np.float32),
        "item_factors": (rng.normal(size=(n_items, dim)) * scale).astype(np.float32),
        "user_bias": rng.normal(size=n_users).astype(np.float32),
        "item_bias": rng.normal(size=n_items).astype(np.float32),
        "user_ids": user_ids,
        "item_ids": item_ids,
        "rated_indptr": indptr,
        "rated_indices": indices,
        "item_titles": np.array(["Amélie (2001)"] + [f"Movie {i}" for i in range(1, n_items)]),
        "item_years": rng.integers(0, 2025, size=n_items).astype(np.int16),
        "item_genres": rng.integers(0, 2, size=(n_items, len(genres))).astype(np.uint8),
    }
    draft = ManifestDraft(
        model_kind=kind,
        dims=Dims(n_users=n_users, n_items=n_items, dim=dim),
        rating_scale=ScaleSpec(low=0.5, high=5.0, step=0.5),
        output=OutputSpec(transform=transform, low=0.5, high=5.0),
        global_offset=0.25,
        hyperparameters={"lr": 0.01, "epochs": 3, "layers": [64, 32]},
        metrics={"rmse": 0.91, "ranking": {"ndcg@10": 0.12}},
        dataset=DatasetInfo(
            source="synthetic",
            fingerprint="ab" * 32,
            n_ratings=int(indptr[-1]),
            n_users=n_users,
            n_items=n_items,
        ),
        genre_names=list(genres),
        extra={"note": "test"},
    )
    return draft, arrays


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rewrite_array(folder: Path, name: str, arr: np.ndarray, *, pickle: bool = False) -> None:
    """Replace one array file and make the manifest agree with it (so only the semantic check can fail)."""
    path = folder / f"{name}.npy"
    path.unlink()
    np.save(path, arr, allow_pickle=pickle)
    manifest_path = folder / "manifest.json"
    m = json.loads(manifest_path.read_text())
    m["arrays"][name].update(sha256=sha256(path), dtype=arr.dtype.str, shape=list(arr.shape))
    manifest_path.write_text(json.dumps(m))


def edit_manifest(folder: Path, fn: Callable[[dict], None]) -> None:
    path = folder / "manifest.json"
    m = json.loads(path.read_text())
    fn(m)
    path.write_text(json.dumps(m))


def assert_same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert set(a) == set(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert a[name].shape == b[name].shape, name
        assert np.array_equal(a[name], b[name]), name


# ------------------------------------------------------------------------------------------------ round trip


@pytest.mark.parametrize("str_ids", [False, True])
@pytest.mark.parametrize("mmap", [False, True])
def test_round_trip(tmp_path: Path, str_ids: bool, mmap: bool) -> None:
    draft, arrays = make_model(str_ids=str_ids)
    arrays["item_popularity"] = np.arange(11, dtype=np.float32)  # a model-specific extra array
    folder = publish(tmp_path, draft, arrays)

    assert folder.parent == tmp_path
    assert list_versions(tmp_path) == [folder.name]
    assert latest_version(tmp_path) == folder
    assert (tmp_path / "latest").read_text().strip() == folder.name
    for where in (tmp_path, folder):  # root (follows latest) or the version folder itself
        loaded = load_version(where, mmap=mmap)
        assert loaded.path == folder
        assert_same_arrays(dict(loaded.arrays), arrays)
        m = loaded.manifest
        assert m.draft() == draft
        assert m.schema_version == SCHEMA_VERSION
        assert m.version == folder.name
        assert m.arrays["item_popularity"].sha256 == sha256(folder / "item_popularity.npy")
        assert m.created_at.tzinfo is not None
        assert m.created_at.strftime("%Y%m%dT%H%M%S.%fZ") == folder.name.split("-")[0]
    # Arrays come back read-only: the service shares them between requests.
    with pytest.raises(ValueError):
        loaded.user_factors[0, 0] = 1.0
    assert loaded.n_users == 7 and loaded.n_items == 11 and loaded.dim == 4
    assert loaded.genre_names == ["Action", "Comedy", "Drama"]
    for u in range(7):
        expected = arrays["rated_indices"][arrays["rated_indptr"][u] : arrays["rated_indptr"][u + 1]]
        assert np.array_equal(loaded.rated_items(u), expected)


def test_manifest_json_layout(tmp_path: Path) -> None:
    draft, arrays = make_model()
    folder = publish(tmp_path, draft, arrays)
    m = json.loads((folder / "manifest.json").read_text())
    assert list(m)[:4] == ["schema_version", "version", "model_kind", "created_at"]
    assert m["created_at"].endswith("Z")
    assert set(m["arrays"]) == set(REQUIRED_ARRAYS)
    assert m["arrays"]["user_factors"] == {
        "file": "user_factors.npy",
        "dtype": "<f4",
        "shape": [7, 4],
        "sha256": sha256(folder / "user_factors.npy"),
    }
    assert m["dims"] == {"n_users": 7, "n_items": 11, "dim": 4}
    assert m["output"] == {"transform": "sigmoid", "low": 0.5, "high": 5.0}


def test_free_form_sections_become_plain_json(tmp_path: Path) -> None:
    draft, arrays = make_model()
    raw = draft.model_dump()  # frozen models: build a new one
    raw["metrics"] = {"rmse": np.float32(0.5), "undefined": float("nan"), "n": np.int64(3)}
    draft = ManifestDraft.model_validate(raw)
    assert draft.metrics == {"rmse": 0.5, "undefined": None, "n": 3}
    folder = publish(tmp_path, draft, arrays)
    assert load_version(folder).manifest.metrics == {"rmse": 0.5, "undefined": None, "n": 3}


def test_version_names_sort_by_time() -> None:
    times = [datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC), datetime(2024, 1, 2, 3, 4, 5, 7, tzinfo=UTC)]
    times += [datetime(2023, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(2031, 1, 1, tzinfo=UTC)]
    names = [new_version_name(kind, t) for t, kind in zip(times, ["zz", "a", "mf", "mf"], strict=True)]
    assert sorted(names) == [names[2], names[0], names[1], names[3]]
    assert names[0].startswith("20240102T030405.000006Z-zz-")
    with pytest.raises(ArtifactError, match="model kind"):
        new_version_name("Bad-Kind")


def test_publish_refuses_existing_version_and_bad_name(tmp_path: Path) -> None:
    draft, arrays = make_model()
    folder = publish(tmp_path, draft, arrays)
    with pytest.raises(ArtifactError, match="already exists"):
        publish(tmp_path, draft, arrays, version=folder.name)
    with pytest.raises(ArtifactError, match="version name"):
        publish(tmp_path, draft, arrays, version="v1")
    with pytest.raises(ArtifactError, match="model_kind"):
        publish(tmp_path, draft, arrays, version="20240101T000000.000000Z-als-abcdef")
    assert list_versions(tmp_path) == [folder.name]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------------------- refusal before publishing


def _bad(name: str, value: Callable[[dict[str, np.ndarray]], np.ndarray]) -> Callable[[dict], None]:
    def mutate(arrays: dict[str, np.ndarray]) -> None:
        arrays[name] = value(arrays)

    return mutate


INVALID_ARRAYS: dict[str, tuple[Callable[[dict], None], str]] = {
    "object": (_bad("item_titles", lambda a: a["item_titles"].astype(object)), "object arrays"),
    "float64 factors": (_bad("user_factors", lambda a: a["user_factors"].astype(np.float64)), "float32"),
    "big-endian": (_bad("item_bias", lambda a: a["item_bias"].astype(">f4")), "byte order"),
    "nan": (
        _bad("item_factors", lambda a: np.where(np.eye(11, 4) > 0, np.nan, a["item_factors"])),
        "non-finite",
    ),
    "inf extra": (_bad("extra_w", lambda a: np.array([np.inf], np.float32)), "non-finite"),
    "shape vs dims": (_bad("user_factors", lambda a: a["user_factors"][:, :3]), "shape"),
    "short titles": (_bad("item_titles", lambda a: a["item_titles"][:-1]), "item_titles"),
    "genres width": (_bad("item_genres", lambda a: a["item_genres"][:, :2]), "item_genres"),
    "genres not 0/1": (_bad("item_genres", lambda a: a["item_genres"] * 2), "multi-hot"),
    "dup ids": (_bad("item_ids", lambda a: np.zeros(11, np.int64)), "duplicate"),
    "float ids": (_bad("user_ids", lambda a: a["user_ids"].astype(np.float64)), "int64 or unicode"),
    "missing": (lambda a: a.pop("item_years"), "missing required array"),
    "bad name": (_bad("Bad-Name", lambda a: np.zeros(1, np.float32)), "array name"),
    "indices unsorted": (_bad("rated_indices", lambda a: a["rated_indices"][::-1].copy()), "CSR"),
}


@pytest.mark.parametrize("case", sorted(INVALID_ARRAYS))
def test_publish_validates_before_writing(tmp_path: Path, case: str) -> None:
    mutate, needle = INVALID_ARRAYS[case]
    draft, arrays = make_model(seed=3)
    assert arrays["rated_indptr"][-1] > 1
    mutate(arrays)
    with pytest.raises(ArtifactError, match=needle) as info:
        publish(tmp_path / "root", draft, arrays)
    assert "publish 2" in str(info.value)  # names the version being published
    assert not (tmp_path / "root").exists()  # nothing at all was written


# ---------------------------------------------------------------------------------------- corruption refused


def _flip_byte(folder: Path) -> None:
    path = folder / "item_factors.npy"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(folder: Path) -> None:
    path = folder / "user_bias.npy"
    path.write_bytes(path.read_bytes()[:-8])


def _set_indptr(folder: Path, fn: Callable[[np.ndarray], None]) -> None:
    indptr = np.load(folder / "rated_indptr.npy").copy()
    fn(indptr)
    rewrite_array(folder, "rated_indptr", indptr)


def _set_indices(folder: Path, fn: Callable[[np.ndarray], None]) -> None:
    indices = np.load(folder / "rated_indices.npy").copy()
    fn(indices)
    rewrite_array(folder, "rated_indices", indices)


def _swap_first_row(ind: np.ndarray) -> None:
    ind[0], ind[1] = ind[1], ind[0]


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str]] = {
    "flipped byte": (_flip_byte, "checksum mismatch for item_factors.npy"),
    "truncated": (_truncate, "checksum mismatch for user_bias.npy"),
    "deleted array": (lambda f: (f / "item_titles.npy").unlink(), "item_titles.npy is missing"),
    "deleted manifest": (lambda f: (f / "manifest.json").unlink(), "manifest.json is missing"),
    "manifest not json": (lambda f: (f / "manifest.json").write_text("{not json"), "not valid JSON"),
    "manifest not object": (lambda f: (f / "manifest.json").write_text("[1]"), "JSON object"),
    "schema 2": (lambda f: edit_manifest(f, lambda m: m.update(schema_version=2)), "schema_version 2"),
    "unknown key": (lambda f: edit_manifest(f, lambda m: m.update(colour="red")), "colour"),
    "manifest shape": (
        lambda f: edit_manifest(f, lambda m: m["arrays"]["user_factors"].update(shape=[7, 5])),
        "user_factors.npy has shape (7, 4), manifest says (7, 5)",
    ),
    "manifest dtype": (
        lambda f: edit_manifest(f, lambda m: m["arrays"]["item_years"].update(dtype="<i4")),
        "item_years.npy has dtype <i2, manifest says <i4",
    ),
    "dims": (lambda f: edit_manifest(f, lambda m: m["dims"].update(dim=5)), "'user_factors' has shape"),
    "required not listed": (lambda f: edit_manifest(f, lambda m: m["arrays"].pop("item_bias")), "item_bias"),
    "path traversal": (
        lambda f: edit_manifest(f, lambda m: m["arrays"]["item_bias"].update(file="../x.npy")),
        "must be stored as item_bias.npy",
    ),
    "version mismatch": (
        lambda f: edit_manifest(f, lambda m: m.update(version="20200101T000000.000000Z-mf-000000")),
        "folder is",
    ),
    "nan with checksum": (
        lambda f: rewrite_array(f, "item_bias", np.full(11, np.nan, np.float32)),
        "'item_bias' has 11 non-finite",
    ),
    "pickled object array": (
        lambda f: rewrite_array(f, "item_titles", np.array(["a"] * 11, dtype=object), pickle=True),
        "cannot read item_titles.npy",
    ),
    "short titles": (
        lambda f: rewrite_array(f, "item_titles", np.array(["a"] * 10)),
        "'item_titles' has shape",
    ),
    "ids length": (
        lambda f: rewrite_array(f, "user_ids", np.arange(6, dtype=np.int64)),
        "'user_ids' has shape",
    ),
    "csr start": (lambda f: _set_indptr(f, lambda p: p.__setitem__(0, 1)), "must start at 0"),
    "csr end": (lambda f: _set_indptr(f, lambda p: p.__setitem__(-1, p[-1] - 1)), "ends at"),
    "csr monotone": (lambda f: _set_indptr(f, lambda p: p.__setitem__(3, p[-1] + 5)), "non-decreasing"),
    "csr range": (lambda f: _set_indices(f, lambda i: i.__setitem__(0, 11)), "out of range"),
    "csr negative": (lambda f: _set_indices(f, lambda i: i.__setitem__(0, -1)), "out of range"),
    "csr unsorted": (lambda f: _set_indices(f, _swap_first_row), "not sorted"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_load_refuses_corruption(tmp_path: Path, case: str) -> None:
    corrupt, needle = CORRUPTIONS[case]
    draft, arrays = make_model(seed=5)
    indptr = arrays["rated_indptr"]
    assert indptr[1] - indptr[0] >= 2  # the first row has two items to swap
    folder = publish(tmp_path, draft, arrays)
    load_version(folder)
    corrupt(folder)
    for target in (folder, tmp_path):
        with pytest.raises(ArtifactError) as info:
            load_version(target)
        message = str(info.value)
        assert needle in message
        assert folder.name in message  # the message names the version folder


def test_pointer_errors(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="nothing published"):
        latest_version(tmp_path)
    with pytest.raises(ArtifactError, match="neither a version folder"):
        load_version(tmp_path)
    with pytest.raises(ArtifactError, match="no such artifact folder"):
        load_version(tmp_path / "nope")
    (tmp_path / "latest").write_text("../../etc\n")
    with pytest.raises(ArtifactError, match="not a version name"):
        load_version(tmp_path)
    (tmp_path / "latest").write_text("20240101T000000.000000Z-mf-abcdef\n")
    with pytest.raises(ArtifactError, match="does not exist"):
        latest_version(tmp_path)
    with pytest.raises(ArtifactError, match="no complete version folder"):
        set_latest(tmp_path, "20240101T000000.000000Z-mf-abcdef")


def test_set_latest_rolls_back(tmp_path: Path) -> None:
    v1 = publish(tmp_path, *make_model(seed=1))
    v2 = publish(tmp_path, *make_model(seed=2))
    assert list_versions(tmp_path) == [v1.name, v2.name]
    assert load_version(tmp_path).path == v2
    set_latest(tmp_path, v1.name)
    assert load_version(tmp_path).path == v1
    v3 = publish(tmp_path, *make_model(seed=3), make_latest=False)
    assert load_version(tmp_path).path == v1
    assert list_versions(tmp_path) == [v1.name, v2.name, v3.name]


def test_tmp_folders_are_not_versions_and_get_cleaned(tmp_path: Path) -> None:
    v1 = publish(tmp_path, *make_model())
    stale = tmp_path / f".tmp-{v1.name}-deadbeef"
    shutil.copytree(v1, stale)
    fresh = tmp_path / ".tmp-20990101T000000.000000Z-mf-abcdef-00000000"
    fresh.mkdir()
    pointer_tmp = tmp_path / ".latest.tmp-0000abcd"
    pointer_tmp.write_text("garbage")
    no_manifest = tmp_path / "20990101T000000.000000Z-mf-abcdef"
    no_manifest.mkdir()
    assert list_versions(tmp_path) == [v1.name]
    old = time.time() - 7200
    os.utime(stale, (old, old))
    os.utime(pointer_tmp, (old, old))
    removed = cleanup_stale_tmp(tmp_path, older_than_s=3600)
    assert sorted(p.name for p in removed) == sorted([stale.name, pointer_tmp.name])
    assert fresh.exists() and not stale.exists() and not pointer_tmp.exists()
    assert cleanup_stale_tmp(tmp_path / "missing") == []


# ------------------------------------------------------------------------------------------- crash safety


class Injector:
    """Counts filesystem operations and makes the k-th one fail (k=None: just count)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_at: int | None) -> None:
        self.fail_at = fail_at
        self.ops: list[str] = []
        self.failed: str | None = None
        for name in ("mkdir", "open", "write", "fsync", "rename", "replace"):
            monkeypatch.setattr(os, name, self._wrap(name, getattr(os, name)))
        real_save = np.save

        def save_partially(file: Any, arr: np.ndarray, *args: Any, **kwargs: Any) -> None:
            if self._tick("np.save"):
                file.write(b"\x93NUMPY partial")  # a torn write: some bytes land, then the failure
                raise OSError(28, "injected: no space left on device")
            real_save(file, arr, *args, **kwargs)

        monkeypatch.setattr(np, "save", save_partially)

    def _tick(self, name: str) -> bool:
        self.ops.append(name)
        if self.fail_at is not None and len(self.ops) - 1 == self.fail_at:
            self.failed = name
            return True
        return False

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if self._tick(name):
                raise OSError(5, f"injected failure in os.{name}")
            return fn(*args, **kwargs)

        return wrapper


def test_crash_at_every_step_keeps_previous_latest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    draft, arrays = make_model(seed=7)
    new_draft, new_arrays = make_model(seed=8)

    # Dry run: count the operations of one publish.
    dry_root = tmp_path / "dry"
    publish(dry_root, draft, arrays)
    with monkeypatch.context() as mp:
        counter = Injector(mp, fail_at=None)
        publish(dry_root, new_draft, new_arrays)
    ops = counter.ops
    assert {"open", "fsync", "rename", "replace", "np.save", "write", "mkdir"} <= set(ops)
    replace_at = ops.index("replace")

    raised = 0
    for k in range(len(ops)):
        root = tmp_path / f"r{k}"
        previous = publish(root, draft, arrays).name
        with monkeypatch.context() as mp:
            injector = Injector(mp, fail_at=k)
            try:
                new = publish(root, new_draft, new_arrays).name
            except ArtifactError as e:
                raised += 1
                assert "injected" in str(e)
                new = None
        assert injector.failed == ops[k], (k, injector.failed)
        # The served version is always loadable; it changes only if the pointer swap itself happened.
        served = load_version(root)
        if new is None and k <= replace_at:  # failed before the pointer swap took effect
            assert served.path.name == previous, (k, ops[k])
        versions = list_versions(root)
        assert versions[0] == previous and len(versions) <= 2, (k, versions)
        for v in versions:  # a listed version is always complete
            load_version(root / v)
        assert not [p.name for p in root.iterdir() if p.name.startswith(".")], k  # temporaries cleaned
        if new is not None:
            assert served.path.name == new
    # A failing root.mkdir(exist_ok=True) on an existing root is harmless, everything else fails.
    assert raised >= len(ops) - 2


_PUBLISH_LOOP = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {repo!r})
    from tests.test_artifacts import make_model
    from movierec.artifacts import publish
    draft, arrays = make_model(seed=1, n_users=3000, n_items=20000, dim=48)
    print("ready", flush=True)
    while True:
        publish({root!r}, draft, arrays)
    """
)


@pytest.mark.parametrize("seed", range(4))
def test_sigkill_during_publish_leaves_latest_loadable(tmp_path: Path, seed: int) -> None:
    first = publish(tmp_path, *make_model(seed=0))
    script = _PUBLISH_LOOP.format(repo=str(REPO), root=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(random.Random(seed).uniform(0.02, 0.6))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    served = load_version(tmp_path)
    versions = list_versions(tmp_path)
    assert versions[0] == first.name
    assert served.path.name in versions
    for v in versions:
        load_version(tmp_path / v)
    # Whatever the kill left behind (usually a half-written .tmp-* folder) is debris, never a version.
    cleanup_stale_tmp(tmp_path, older_than_s=-1.0)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert list_versions(tmp_path) == versions
    assert load_version(tmp_path).path == served.path
    for v in versions:  # ~5 MB each: do not leave hundreds of MB in pytest's kept temp folders
        shutil.rmtree(tmp_path / v)


# ----------------------------------------------------------------------------------------------- predict


@pytest.mark.parametrize("transform", ["sigmoid", "linear"])
def test_predict_matches_hand_formula(tmp_path: Path, transform: str) -> None:
    draft, arrays = make_model(seed=11, n_users=40, n_items=60, dim=8, transform=transform, scale=0.7)
    loaded = load_version(publish(tmp_path, draft, arrays))
    rng = np.random.default_rng(0)
    users = rng.integers(0, 40, size=500)
    items = rng.integers(0, 60, size=500)

    expected = []
    for u, i in zip(users, items, strict=True):
        raw = float(np.dot(arrays["user_factors"][u].astype(np.float64), arrays["item_factors"][i]))
        raw += float(arrays["user_bias"][u]) + float(arrays["item_bias"][i]) + 0.25
        value = 0.5 + 4.5 / (1.0 + np.exp(-raw)) if transform == "sigmoid" else raw
        expected.append(min(max(value, 0.5), 5.0))
    got = predict(loaded, users, items)
    assert got.dtype == np.float64 and got.shape == (500,)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    if transform == "linear":
        assert got.min() == 0.5 or got.max() == 5.0  # the clip is exercised

    # A float32 implementation (what torch computes) agrees to well under 1e-5.
    u32, v32 = arrays["user_factors"][users], arrays["item_factors"][items]
    raw32 = (u32 * v32).sum(1) + arrays["user_bias"][users] + arrays["item_bias"][items] + np.float32(0.25)
    if transform == "sigmoid":
        out32 = np.float32(0.5) + np.float32(4.5) / (np.float32(1) + np.exp(-raw32))
    else:
        out32 = raw32
    np.testing.assert_allclose(np.clip(out32, 0.5, 5.0), got, rtol=0, atol=1e-5)

    # Broadcasting: one user against every item.
    np.testing.assert_allclose(
        predict(loaded, 3, np.arange(60)), predict(loaded, np.full(60, 3), np.arange(60))
    )
    for bad_users, bad_items in (([-1], [0]), ([40], [0]), ([0], [60]), (np.array([0.0]), [0])):
        with pytest.raises(ValueError):
            predict(loaded, bad_users, bad_items)


def test_sigmoid_transform_is_overflow_free() -> None:
    out = OutputSpec(transform="sigmoid", low=1.0, high=5.0)
    scale = ScaleSpec(low=1.0, high=5.0, step=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = apply_output_transform(np.array([-1e6, -800.0, 0.0, 800.0, 1e6]), out, scale)
    np.testing.assert_allclose(got, [1.0, 1.0, 3.0, 5.0, 5.0])


# ------------------------------------------------------------------------------------------- torch-free


def test_import_and_load_stay_torch_and_pandas_free(tmp_path: Path) -> None:
    publish(tmp_path, *make_model())
    code = textwrap.dedent(
        f"""
        import sys
        import movierec.artifacts as a
        art = a.load_version({str(tmp_path)!r})
        a.predict(art, [0, 1], [2, 3])
        heavy = sorted(m for m in ("torch", "pandas", "trainer", "sklearn") if m in sys.modules)
        assert not heavy, heavy
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_module_imports_only_allowed_packages() -> None:
    """A static guard too: the forbidden imports must not creep in behind a function call."""
    source = Path(art.__file__).read_text()
    for banned in ("import torch", "import pandas", "from trainer", "import trainer", "sklearn"):
        assert banned not in source
