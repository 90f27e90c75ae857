"""Release downloads: checksum, atomic rename, cache reuse without network, offline message, resolution order.

No test touches the network: releases are pointed at ``file://`` zips built in tmp_path, and the opener is
wrapped to count (or forbid) calls.
"""

from __future__ import annotations

import hashlib
import urllib.error
import zipfile
from pathlib import Path

import pytest

from trainer.data import download
from trainer.data.dataset import DataError
from trainer.data.download import RELEASES, Release, default_cache_dir, fetch_release, resolve_data
from trainer.data.movielens import load_movielens


def build_zip(tmp_path: Path) -> Path:
    """A tiny ml-100k zip laid out as GroupLens ships it."""
    path = tmp_path / "upstream" / "ml-100k.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ml-100k/", "")
        zf.writestr("ml-100k/u.data", "1\t10\t4\t881250949\n2\t10\t3\t881250950\n")
    return path


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


REAL_OPENER = download._urlopen


class CountingOpener:
    """Wraps the real opener (file:// URLs only) and records the URLs asked for."""

    def __init__(self, fail: bool = False) -> None:
        self.urls: list[str] = []
        self.fail = fail

    def __call__(self, url: str, timeout: float):
        self.urls.append(url)
        if self.fail:
            raise urllib.error.URLError("network is unreachable")
        assert url.startswith("file://"), f"test tried to reach {url}"
        return REAL_OPENER(url, timeout)


@pytest.fixture
def upstream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, CountingOpener]:
    zip_path = build_zip(tmp_path)
    monkeypatch.setitem(
        RELEASES, "ml-100k", Release("ml-100k", "ml-100k.zip", "ml-100k", zip_path.as_uri(), md5(zip_path))
    )
    opener = CountingOpener()
    monkeypatch.setattr(download, "_urlopen", opener)
    return zip_path, opener


def test_fetch_verifies_renames_and_reuses_cache(
    tmp_path: Path, upstream: tuple[Path, CountingOpener], monkeypatch: pytest.MonkeyPatch
) -> None:
    zip_path, opener = upstream
    cache = tmp_path / "cache"
    got = fetch_release("ml-100k", cache)
    assert got == cache / "ml-100k.zip"
    assert got.read_bytes() == zip_path.read_bytes()
    assert sorted(p.name for p in cache.iterdir()) == ["ml-100k.zip"]  # no temporary file left
    assert opener.urls == [zip_path.as_uri()]
    assert load_movielens(got).users.tolist() == [0, 1]
    # Second call: verified cached copy, no network at all.
    monkeypatch.setattr(download, "_urlopen", CountingOpener(fail=True))
    assert fetch_release("ml-100k", cache) == got
    assert fetch_release("100k", cache) == got  # short name


def test_corrupt_cache_is_downloaded_again(tmp_path: Path, upstream: tuple[Path, CountingOpener]) -> None:
    zip_path, opener = upstream
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "ml-100k.zip").write_bytes(b"truncated")
    got = fetch_release("ml-100k", cache)
    assert md5(got) == md5(zip_path) and len(opener.urls) == 1


def test_checksum_mismatch_leaves_nothing(
    tmp_path: Path, upstream: tuple[Path, CountingOpener], monkeypatch: pytest.MonkeyPatch
) -> None:
    zip_path, _ = upstream
    monkeypatch.setitem(
        RELEASES, "ml-100k", Release("ml-100k", "ml-100k.zip", "ml-100k", zip_path.as_uri(), "0" * 32)
    )
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=f"is corrupt: MD5 {md5(zip_path)}, expected {'0' * 32}"):
        fetch_release("ml-100k", cache)
    assert list(cache.iterdir()) == []


def test_unpinned_release_uses_published_md5_and_remembers_it(
    tmp_path: Path, upstream: tuple[Path, CountingOpener], monkeypatch: pytest.MonkeyPatch
) -> None:
    zip_path, opener = upstream
    (zip_path.parent / "ml-100k.zip.md5").write_text(f"MD5 (ml-100k.zip) = {md5(zip_path)}\n")
    monkeypatch.setitem(
        RELEASES, "ml-100k", Release("ml-100k", "ml-100k.zip", "ml-100k", zip_path.as_uri(), None)
    )
    cache = tmp_path / "cache"
    got = fetch_release("ml-100k", cache)
    assert opener.urls == [zip_path.as_uri() + ".md5", zip_path.as_uri()]
    assert (cache / "ml-100k.zip.md5").read_text().split()[-1] == md5(zip_path)
    monkeypatch.setattr(download, "_urlopen", CountingOpener(fail=True))
    assert fetch_release("ml-100k", cache) == got  # verified offline against the remembered checksum
    # A published checksum that does not match the zip is a corrupt download.
    (zip_path.parent / "ml-100k.zip.md5").write_text(f"{'f' * 32}  ml-100k.zip\n")
    monkeypatch.setattr(download, "_urlopen", CountingOpener())
    with pytest.raises(DataError, match="is corrupt"):
        fetch_release("ml-100k", tmp_path / "cache2")


def test_offline_message_says_how_to_use_a_local_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = (tmp_path / "nowhere" / "ml-1m.zip").as_uri()  # file:// URL that fails like a dead network
    monkeypatch.setitem(RELEASES, "ml-1m", Release("ml-1m", "ml-1m.zip", "ml-1m", missing, "0" * 32))
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        fetch_release("ml-1m", cache)
    message = str(info.value)
    assert "download of ml-1m" in message and "failed" in message
    assert "--data PATH" in message and "MOVIEREC_DATA" in message
    assert list(cache.iterdir()) == []
    monkeypatch.setattr(download, "_urlopen", CountingOpener(fail=True))
    with pytest.raises(DataError, match="network is unreachable.*--data PATH"):
        fetch_release("ml-1m", cache)


def test_unknown_release_lists_known_ones(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown dataset 'ml-7m'; known: ml-100k, ml-1m, ml-10m, ml-20m"):
        fetch_release("ml-7m", tmp_path)


def test_registry() -> None:
    assert set(RELEASES) == {"ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "ml-latest-small", "ml-latest"}
    for name, rel in RELEASES.items():
        assert rel.url == f"https://files.grouplens.org/datasets/movielens/{name}.zip"
        assert rel.md5 is None or len(rel.md5) == 32
    assert RELEASES["ml-10m"].folder == "ml-10M100K"
    assert download.release("ml-10M100K") is RELEASES["ml-10m"]
    # GroupLens-published checksums (the .md5 files beside the zips).
    assert RELEASES["ml-100k"].md5 == "0e33842e24a9c977be4e0107933c0723"
    assert RELEASES["ml-25m"].md5 == "6b51fb2759a8657d3bfcbfc42b592ada"


def test_resolve_data_order(tmp_path: Path, upstream: tuple[Path, CountingOpener], monkeypatch) -> None:
    zip_path, opener = upstream
    local = tmp_path / "local"
    local.mkdir()
    env_copy = tmp_path / "env"
    env_copy.mkdir()
    monkeypatch.setenv("MOVIEREC_DATA", str(env_copy))
    assert resolve_data("ml-100k", local, tmp_path / "c") == local  # --data wins
    assert resolve_data("ml-100k", None, tmp_path / "c") == env_copy  # then MOVIEREC_DATA
    assert opener.urls == []
    monkeypatch.delenv("MOVIEREC_DATA")
    assert resolve_data("ml-100k", None, tmp_path / "c") == tmp_path / "c" / "ml-100k.zip"  # then download
    with pytest.raises(DataError, match="no data given: pass --dataset NAME"):
        resolve_data(None, None, tmp_path / "c")
    with pytest.raises(DataError, match="--data .*missing: no such file or folder"):
        resolve_data("ml-100k", tmp_path / "missing", tmp_path / "c")
    monkeypatch.setenv("MOVIEREC_DATA", str(tmp_path / "gone"))
    with pytest.raises(DataError, match="MOVIEREC_DATA=.*gone: no such file or folder"):
        resolve_data("ml-100k", None, tmp_path / "c")


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MOVIEREC_CACHE_DIR", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x"
    monkeypatch.delenv("MOVIEREC_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "movierec"
