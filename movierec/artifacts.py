"""The artifact format: the one contract between the trainer (writes) and the service (reads).

Layout under an artifacts root::

    ROOT/
      latest                                   plain text file: the name of the served version
      20240501T123456.123456Z-mf-1a2b3c/       one immutable folder per published version
        manifest.json
        user_factors.npy  item_factors.npy  ...  (plain .npy, never pickled)
      .tmp-<version>-<random>/                 a publish in progress (or a crashed one): never a version

Why this shape:

* The service must not need torch or pandas (small image, fast start), so this module imports only the
  stdlib, numpy and pydantic, and the arrays are plain ``.npy`` files read with ``allow_pickle=False``:
  loading an artifact can never execute code, and object arrays are refused on both sides.
* Versions are folders named so that a plain string sort is a time sort, and they are never modified
  after publication; "which one is served" is a separate one-line ``latest`` file. Publishing writes a
  hidden temporary folder, fsyncs it, renames it into place, and only then swaps ``latest`` with
  ``os.replace``. Each step is atomic, so a crash (or SIGKILL) at any point leaves the previous
  ``latest`` valid; a plain file instead of a symlink works on every volume type (SMB, some CSI drivers).
* Everything the loader checks is also checked before publishing, so a broken model is refused in the
  trainer, where the error is actionable, not at 3 a.m. in the service.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import secrets
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = [
    "SCHEMA_VERSION",
    "REQUIRED_ARRAYS",
    "LATEST_POINTER",
    "ArtifactError",
    "Dims",
    "ScaleSpec",
    "OutputSpec",
    "DatasetInfo",
    "ArraySpec",
    "ManifestDraft",
    "Manifest",
    "ModelArtifact",
    "new_version_name",
    "publish",
    "set_latest",
    "latest_version",
    "latest_kinds",
    "pointer_name",
    "list_versions",
    "load_version",
    "cleanup_stale_tmp",
    "validate_arrays",
    "apply_output_transform",
    "predict",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
"""Bumped on any change an older reader could misinterpret; readers refuse versions they do not know."""

REQUIRED_ARRAYS: tuple[str, ...] = (
    "user_factors",
    "item_factors",
    "user_bias",
    "item_bias",
    "user_ids",
    "item_ids",
    "rated_indptr",
    "rated_indices",
    "item_titles",
    "item_years",
    "item_genres",
)

LATEST_POINTER = "latest"
MANIFEST_FILE = "manifest.json"
_TMP_PREFIX = ".tmp-"
_LATEST_TMP_PREFIX = ".latest.tmp"

_KIND_PATTERN = r"[a-z0-9][a-z0-9_]*"
_VERSION_RE = re.compile(rf"^(\d{{8}}T\d{{6}}\.\d{{6}}Z)-({_KIND_PATTERN})-([0-9a-f]{{6}})$")
_ARRAY_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_VERSION_TIME_FORMAT = "%Y%m%dT%H%M%S.%fZ"
# Dtype kinds allowed in any array: bool, signed/unsigned int, float, unicode. Never "O" (object: needs
# pickle), "V" (structured), "S" (bytes: ambiguous encoding) or datetimes.
_ALLOWED_KINDS = frozenset("biufU")
_HASH_CHUNK = 1 << 20


class ArtifactError(Exception):
    """An artifact folder or root cannot be published, found or loaded.

    Messages always name the version folder (or root) and the specific problem, so the service can log
    them as is and an operator knows which folder to look at.
    """


# --------------------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    """Unknown keys are errors: a typo in a manifest must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _require_finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return value


class Dims(_Strict):
    """Model dimensions; every standard array's shape is checked against these."""

    n_users: int = Field(ge=1)
    n_items: int = Field(ge=1)
    dim: int = Field(ge=0)


class ScaleSpec(_Strict):
    """The rating scale; served predictions are always clipped to ``[low, high]``.

    Mirrors ``trainer.data.dataset.RatingScale`` (not imported: this module must stay torch/pandas-free);
    build it with ``ScaleSpec.model_validate(scale, from_attributes=True)``.
    """

    low: float
    high: float
    step: float = Field(gt=0)

    @model_validator(mode="after")
    def _check(self) -> ScaleSpec:
        _require_finite(self.low, "rating_scale.low")
        _require_finite(self.high, "rating_scale.high")
        _require_finite(self.step, "rating_scale.step")
        if not self.low < self.high:
            raise ValueError(f"rating_scale.low ({self.low}) must be below high ({self.high})")
        return self


class OutputSpec(_Strict):
    """How the raw score becomes a rating.

    ``sigmoid``: ``low + (high - low) * sigmoid(raw)``; ``linear``: ``raw`` (``low``/``high`` are then
    unused; set them to the rating scale). Either way the result is clipped to the rating scale.
    """

    transform: Literal["sigmoid", "linear"]
    low: float
    high: float

    @model_validator(mode="after")
    def _check(self) -> OutputSpec:
        _require_finite(self.low, "output.low")
        _require_finite(self.high, "output.high")
        if not self.low < self.high:
            raise ValueError(f"output.low ({self.low}) must be below high ({self.high})")
        return self


class DatasetInfo(_Strict):
    """Which data the model was trained on: lets anyone tell two artifacts' training data apart."""

    source: str
    fingerprint: str
    n_ratings: int = Field(ge=0)
    n_users: int = Field(ge=0)
    n_items: int = Field(ge=0)


class ArraySpec(_Strict):
    """One ``.npy`` file of a version; dtype is numpy's ``dtype.str`` (e.g. ``"<f4"``, ``"<U42"``)."""

    file: str
    dtype: str
    shape: tuple[int, ...]
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


def _json_safe(value: Any, path: str) -> Any:
    """Return ``value`` as plain JSON data: numpy scalars unwrapped, non-finite floats as None.

    Why None rather than an error: JSON has no NaN, and an undefined metric (e.g. a ranking metric with no
    rankable user) must not make a finished multi-hour training run fail to publish. Doing it at
    validation time keeps the in-memory manifest identical to what a loader reads back.
    """
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            logger.warning("manifest value %s is %r; stored as null (JSON has no NaN/inf)", path, value)
            return None
        return value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{path}: keys must be strings, got {key!r}")
            out[key] = _json_safe(item, f"{path}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [_json_safe(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise ValueError(f"{path}: {type(value).__name__} is not JSON data (use numbers, strings, lists, dicts)")


class ManifestDraft(_Strict):
    """Everything the model author provides; :func:`publish` adds version, created_at and arrays.

    Kept separate from :class:`Manifest` so that a caller cannot hand in checksums or a version name that
    do not match what is actually written.
    """

    model_kind: str = Field(pattern=rf"^{_KIND_PATTERN}$")
    dims: Dims
    rating_scale: ScaleSpec
    output: OutputSpec
    global_offset: float
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    dataset: DatasetInfo
    genre_names: list[str] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("global_offset")
    @classmethod
    def _finite_offset(cls, v: float) -> float:
        return _require_finite(v, "global_offset")

    @field_validator("hyperparameters", "metrics", "extra", mode="before")
    @classmethod
    def _plain_json(cls, v: Any, info: ValidationInfo) -> Any:
        return _json_safe(v, info.field_name or "") if isinstance(v, Mapping) else v


class Manifest(ManifestDraft):
    """The full ``manifest.json`` of a published version."""

    schema_version: int = SCHEMA_VERSION
    version: str
    created_at: datetime
    arrays: dict[str, ArraySpec]

    @field_validator("created_at")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("created_at must carry a timezone (UTC)")
        return v.astimezone(UTC)

    @model_validator(mode="after")
    def _check_version(self) -> Manifest:
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(f"unknown schema_version {self.schema_version} (this code reads {SCHEMA_VERSION})")
        m = _VERSION_RE.match(self.version)
        if m is None:
            raise ValueError(f"version {self.version!r} is not YYYYMMDDTHHMMSS.ffffffZ-<kind>-<6 hex>")
        if m.group(2) != self.model_kind:
            raise ValueError(f"version {self.version!r} does not name model_kind {self.model_kind!r}")
        return self

    def draft(self) -> ManifestDraft:
        """The author-provided part, e.g. to republish the same model under a new version."""
        return ManifestDraft.model_validate(self.model_dump(include=set(ManifestDraft.model_fields)))

    def to_json(self) -> str:
        """Strict JSON (no NaN), identity keys first so ``head manifest.json`` says what this is."""
        data = self.model_dump(mode="json")
        first = ("schema_version", "version", "model_kind", "created_at")
        ordered = {k: data[k] for k in first} | {k: v for k, v in data.items() if k not in first}
        return json.dumps(ordered, indent=2, allow_nan=False) + "\n"


# --------------------------------------------------------------------------------------------------------
# Array validation (shared by publish and load)
# --------------------------------------------------------------------------------------------------------


def _expect_dtype(where: str, name: str, arr: np.ndarray, ok: bool, wanted: str) -> None:
    if not ok:
        raise ArtifactError(f"{where}: array {name!r} has dtype {arr.dtype.str}, expected {wanted}")


def _expect_shape(where: str, name: str, arr: np.ndarray, shape: tuple[int, ...]) -> None:
    if arr.shape != shape:
        raise ArtifactError(f"{where}: array {name!r} has shape {arr.shape}, expected {shape}")


def validate_arrays(where: str, draft: ManifestDraft, arrays: Mapping[str, np.ndarray]) -> None:
    """Check arrays against the manifest's dims and the format's rules; raise :class:`ArtifactError`.

    ``where`` prefixes every message (the version folder when loading, the version being published when
    writing). Checks: required arrays present, allowed dtypes only (never object), exact dtypes and
    shapes of the standard arrays, every float array finite, the CSR of rated items consistent
    (``indptr[0] == 0``, non-decreasing, ``indptr[-1] == nnz``, indices in range and strictly increasing
    within each user), unique ids, and a 0/1 genre matrix.
    """
    missing = [n for n in REQUIRED_ARRAYS if n not in arrays]
    if missing:
        raise ArtifactError(f"{where}: missing required array(s) {', '.join(missing)}")
    for name, arr in arrays.items():
        if not _ARRAY_NAME_RE.match(name):
            raise ArtifactError(f"{where}: array name {name!r} must match {_ARRAY_NAME_RE.pattern}")
        if not isinstance(arr, np.ndarray):
            raise ArtifactError(f"{where}: array {name!r} is a {type(arr).__name__}, not a numpy array")
        if arr.dtype.kind not in _ALLOWED_KINDS or arr.dtype.fields is not None:
            hint = " (object arrays are never allowed; convert strings with .astype(str))"
            raise ArtifactError(
                f"{where}: array {name!r} has dtype {arr.dtype}; only bool/int/float/unicode are allowed"
                + (hint if arr.dtype.kind == "O" else "")
            )
        if not arr.dtype.isnative:
            raise ArtifactError(f"{where}: array {name!r} has non-native byte order {arr.dtype.str}")

    d = draft.dims
    f32 = np.dtype(np.float32)
    for name, shape in (
        ("user_factors", (d.n_users, d.dim)),
        ("item_factors", (d.n_items, d.dim)),
        ("user_bias", (d.n_users,)),
        ("item_bias", (d.n_items,)),
    ):
        _expect_dtype(where, name, arrays[name], arrays[name].dtype == f32, "float32")
        _expect_shape(where, name, arrays[name], shape)
    for name, n in (("user_ids", d.n_users), ("item_ids", d.n_items)):
        arr = arrays[name]
        _expect_dtype(where, name, arr, arr.dtype == np.int64 or arr.dtype.kind == "U", "int64 or unicode")
        _expect_shape(where, name, arr, (n,))
        if len(np.unique(arr)) != n:
            raise ArtifactError(f"{where}: array {name!r} has duplicate ids")
    titles, years = arrays["item_titles"], arrays["item_years"]
    _expect_dtype(where, "item_titles", titles, titles.dtype.kind == "U", "unicode")
    _expect_shape(where, "item_titles", titles, (d.n_items,))
    _expect_dtype(where, "item_years", years, years.dtype == np.int16, "int16")
    _expect_shape(where, "item_years", years, (d.n_items,))
    genres = arrays["item_genres"]
    _expect_dtype(where, "item_genres", genres, genres.dtype == np.uint8, "uint8")
    _expect_shape(where, "item_genres", genres, (d.n_items, len(draft.genre_names)))
    if genres.size and int(genres.max()) > 1:
        found = int(genres.max())
        raise ArtifactError(f"{where}: array 'item_genres' must be 0/1 (multi-hot), found {found}")

    indptr, indices = arrays["rated_indptr"], arrays["rated_indices"]
    _expect_dtype(where, "rated_indptr", indptr, indptr.dtype == np.int64, "int64")
    _expect_shape(where, "rated_indptr", indptr, (d.n_users + 1,))
    _expect_dtype(where, "rated_indices", indices, indices.dtype == np.int32, "int32")
    if indices.ndim != 1:
        raise ArtifactError(f"{where}: array 'rated_indices' must be 1-D, has shape {indices.shape}")
    _check_csr(where, np.asarray(indptr), np.asarray(indices), d.n_items)

    for name, arr in arrays.items():
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            bad = int(np.count_nonzero(~np.isfinite(arr)))
            raise ArtifactError(f"{where}: array {name!r} has {bad} non-finite value(s) (NaN/inf)")


def _check_csr(where: str, indptr: np.ndarray, indices: np.ndarray, n_items: int) -> None:
    nnz = len(indices)
    if indptr[0] != 0:
        raise ArtifactError(f"{where}: CSR rated_indptr must start at 0, starts at {int(indptr[0])}")
    if np.any(np.diff(indptr) < 0):
        raise ArtifactError(f"{where}: CSR rated_indptr is not non-decreasing")
    if indptr[-1] != nnz:
        end = int(indptr[-1])
        raise ArtifactError(f"{where}: CSR rated_indptr ends at {end}, but rated_indices has {nnz}")
    if nnz == 0:
        return
    if int(indices.min()) < 0 or int(indices.max()) >= n_items:
        raise ArtifactError(f"{where}: CSR rated_indices out of range [0, {n_items})")
    # Strictly increasing inside each row; the comparison across a row boundary is exempt.
    rising = indices[1:] > indices[:-1]
    row_start = np.zeros(nnz, dtype=bool)
    starts = indptr[:-1][(indptr[:-1] > 0) & (indptr[:-1] < nnz)]
    row_start[starts] = True
    if not np.all(rising | row_start[1:]):
        raise ArtifactError(f"{where}: CSR rated_indices are not sorted/unique within each user")


# --------------------------------------------------------------------------------------------------------
# Publishing
# --------------------------------------------------------------------------------------------------------


def new_version_name(model_kind: str, now: datetime | None = None) -> str:
    """``YYYYMMDDTHHMMSS.ffffffZ-<kind>-<6 hex>``: fixed-width UTC time first so names sort by time.

    The random suffix keeps two publishes within one microsecond (or on two machines) distinct.
    """
    if not re.fullmatch(_KIND_PATTERN, model_kind):
        raise ArtifactError(f"model kind {model_kind!r} must match {_KIND_PATTERN}")
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime(_VERSION_TIME_FORMAT)
    return f"{stamp}-{model_kind}-{secrets.token_hex(3)}"


def _fsync_dir(path: Path) -> None:
    """Make a rename/create inside ``path`` durable; a no-op where directories cannot be opened."""
    if os.name == "nt":  # pragma: no cover - Windows cannot fsync a directory handle
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_bytes_durably(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_array_durably(path: Path, arr: np.ndarray) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
    with os.fdopen(fd, "wb") as f:
        np.save(f, arr, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def publish(
    root: str | os.PathLike[str],
    draft: ManifestDraft,
    arrays: Mapping[str, np.ndarray],
    *,
    version: str | None = None,
    now: datetime | None = None,
    make_latest: bool = True,
) -> Path:
    """Validate, write and atomically publish a new version; return its folder.

    Steps: validate everything in memory (same checks as :func:`load_version`); write each array and the
    manifest into ``ROOT/.tmp-<version>-<random>/`` with fsync; fsync the folder; ``os.rename`` it to
    ``ROOT/<version>``; fsync ROOT; then (if ``make_latest``) :func:`set_latest`. A crash before the
    rename leaves only a hidden ``.tmp-*`` folder (removed by a later publish once an hour old, see
    :func:`cleanup_stale_tmp`); a crash after it leaves a complete version that simply is not ``latest``
    yet. An exception removes the temporary folder and
    is re-raised as :class:`ArtifactError` (the OS error chained).

    ``version`` defaults to :func:`new_version_name`; ``created_at`` is ``now`` (default: the time in the
    version name, so the two always agree).
    """
    root = Path(root)
    if version is None:
        version = new_version_name(draft.model_kind, now)
    match = _VERSION_RE.match(version)
    if match is None:
        raise ArtifactError(f"publish: version name {version!r} is not YYYYMMDDTHHMMSS.ffffffZ-<kind>-<6 hex>")
    if now is None:
        now = datetime.strptime(match.group(1), _VERSION_TIME_FORMAT).replace(tzinfo=UTC)
    where = f"publish {version}"
    validate_arrays(where, draft, arrays)
    arrays = dict(arrays)
    # Validate the manifest (minus checksums) before touching the disk, with placeholder specs.
    specs = {
        name: ArraySpec(file=f"{name}.npy", dtype=arr.dtype.str, shape=arr.shape, sha256="0" * 64)
        for name, arr in arrays.items()
    }
    try:
        Manifest(**dict(draft), version=version, created_at=now, arrays=specs)
    except ValidationError as e:
        raise ArtifactError(f"{where}: invalid manifest: {_summarise(e)}") from e

    final = root / version
    tmp = root / f"{_TMP_PREFIX}{version}-{secrets.token_hex(4)}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if final.exists():
            raise ArtifactError(f"{where}: {final} already exists")
        _cleanup_before_publish(root)
        os.mkdir(tmp)
        for name, arr in arrays.items():
            path = tmp / specs[name].file
            _write_array_durably(path, arr)
            # Hash what is on disk, not what we meant to write: the checksum then vouches for the file.
            specs[name] = specs[name].model_copy(update={"sha256": _sha256_file(path)})
        manifest = Manifest(**dict(draft), version=version, created_at=now, arrays=specs)
        _write_bytes_durably(tmp / MANIFEST_FILE, manifest.to_json().encode())
        _fsync_dir(tmp)
        os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, ArtifactError) or not isinstance(e, Exception):
            raise
        raise ArtifactError(f"{where}: writing {tmp} failed: {e}") from e
    logger.info("published artifact version %s (%d arrays) under %s", version, len(arrays), root)
    if make_latest:
        set_latest(root, version, kind=draft.model_kind)  # the kind's pointer first, then the global one
        set_latest(root, version)
    return final


def _cleanup_before_publish(root: Path) -> None:
    """Remove what crashed publishes left (see :func:`cleanup_stale_tmp`; only entries over an hour old,
    so a publish running now elsewhere keeps its folder). Without this every killed trainer leaves a
    ``.tmp-*`` folder of a whole model's size behind for good. Best effort: never fails a publish."""
    try:
        cleanup_stale_tmp(root)
    except OSError as e:
        logger.warning("could not remove stale temporary folders under %s: %s", root, e)


def pointer_name(kind: str | None = None) -> str:
    """``latest`` (the newest version of any kind) or ``latest-<kind>`` (the newest of one kind).

    Why both: the service serves several model kinds side by side (``?model=als``); each kind's pointer
    says which version of that kind is current, while ``latest`` keeps meaning "what was published last".
    """
    if kind is None:
        return LATEST_POINTER
    if not re.fullmatch(_KIND_PATTERN, kind):
        raise ArtifactError(f"{kind!r} is not a model kind name")
    return f"{LATEST_POINTER}-{kind}"


def set_latest(root: str | os.PathLike[str], version: str, kind: str | None = None) -> None:
    """Atomically point ``ROOT/latest`` (or ``ROOT/latest-<kind>``) at ``version`` (publishing, or rolling
    back to an older one).

    Writes ``ROOT/.latest.tmp-<random>`` (a unique name, so concurrent publishers never write into the
    same temporary file), fsyncs it, ``os.replace``s it onto ``ROOT/latest`` and fsyncs ROOT. Readers see
    either the old or the new name, never a partial one.
    """
    root = Path(root)
    if not _VERSION_RE.match(version):
        raise ArtifactError(f"{root}: {version!r} is not a version name")
    if not (root / version / MANIFEST_FILE).is_file():
        raise ArtifactError(f"{root}: cannot point latest at {version}: no complete version folder")
    tmp = root / f"{_LATEST_TMP_PREFIX}-{secrets.token_hex(4)}"
    try:
        _write_bytes_durably(tmp, f"{version}\n".encode())
        os.replace(tmp, root / pointer_name(kind))
        _fsync_dir(root)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ArtifactError(f"{root}: switching latest to {version} failed: {e}") from e
    logger.info("%s -> %s under %s", pointer_name(kind), version, root)


def cleanup_stale_tmp(root: str | os.PathLike[str], older_than_s: float = 3600.0) -> list[Path]:
    """Remove ``.tmp-*`` folders and ``.latest.tmp*`` files left by crashed publishes; return them.

    Only entries older than ``older_than_s`` (by mtime) go, so a publish running right now in another
    process is not pulled out from under it.
    """
    root = Path(root)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    cutoff = time.time() - older_than_s
    for entry in root.iterdir():
        if not (entry.name.startswith(_TMP_PREFIX) or entry.name.startswith(_LATEST_TMP_PREFIX)):
            continue
        try:
            if entry.lstat().st_mtime > cutoff:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:
            continue
        removed.append(entry)
        logger.info("removed stale temporary %s", entry)
    return removed


# --------------------------------------------------------------------------------------------------------
# Finding and loading
# --------------------------------------------------------------------------------------------------------


def list_versions(root: str | os.PathLike[str]) -> list[str]:
    """Names of complete versions under ``root``, oldest first; temporary folders never appear."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(e.name for e in root.iterdir() if _VERSION_RE.match(e.name) and (e / MANIFEST_FILE).is_file())


def latest_kinds(root: str | os.PathLike[str]) -> list[str]:
    """Model kinds with a ``latest-<kind>`` pointer under ``root``, sorted."""
    root = Path(root)
    if not root.is_dir():
        return []
    prefix = f"{LATEST_POINTER}-"
    return sorted(
        e.name[len(prefix) :]
        for e in root.iterdir()
        if e.name.startswith(prefix) and re.fullmatch(_KIND_PATTERN, e.name[len(prefix) :])
    )


def latest_version(root: str | os.PathLike[str], kind: str | None = None) -> Path:
    """The folder ``ROOT/latest`` (or ``ROOT/latest-<kind>``) points at; :class:`ArtifactError` when
    nothing is published."""
    root = Path(root)
    pointer_file = pointer_name(kind)
    pointer = root / pointer_file
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ArtifactError(f"{root}: no '{pointer_file}' pointer (nothing published here yet?)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{root}: cannot read the '{pointer_file}' pointer: {e}") from e
    if not _VERSION_RE.match(name):
        raise ArtifactError(f"{root}: '{pointer_file}' pointer holds {name[:80]!r}, not a version name")
    folder = root / name
    if not folder.is_dir():
        raise ArtifactError(f"{root}: '{pointer_file}' points at {name}, which does not exist")
    return folder


@dataclass(frozen=True, eq=False)
class ModelArtifact:
    """A loaded, fully validated version: manifest plus read-only arrays.

    ``eq=False``: comparing arrays element-wise is never what ``==`` on two artifacts should mean; compare
    ``version`` instead.
    """

    path: Path
    manifest: Manifest
    arrays: Mapping[str, np.ndarray]

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def n_users(self) -> int:
        return self.manifest.dims.n_users

    @property
    def n_items(self) -> int:
        return self.manifest.dims.n_items

    @property
    def dim(self) -> int:
        return self.manifest.dims.dim

    @property
    def user_factors(self) -> np.ndarray:
        return self.arrays["user_factors"]

    @property
    def item_factors(self) -> np.ndarray:
        return self.arrays["item_factors"]

    @property
    def user_bias(self) -> np.ndarray:
        return self.arrays["user_bias"]

    @property
    def item_bias(self) -> np.ndarray:
        return self.arrays["item_bias"]

    @property
    def user_ids(self) -> np.ndarray:
        return self.arrays["user_ids"]

    @property
    def item_ids(self) -> np.ndarray:
        return self.arrays["item_ids"]

    @property
    def item_titles(self) -> np.ndarray:
        return self.arrays["item_titles"]

    @property
    def item_years(self) -> np.ndarray:
        return self.arrays["item_years"]

    @property
    def item_genres(self) -> np.ndarray:
        return self.arrays["item_genres"]

    @property
    def genre_names(self) -> list[str]:
        return self.manifest.genre_names

    def rated_items(self, user_code: int) -> np.ndarray:
        """Item codes the user rated in training (sorted): what a recommender must not suggest again."""
        indptr = self.arrays["rated_indptr"]
        return self.arrays["rated_indices"][int(indptr[user_code]) : int(indptr[user_code + 1])]


def _summarise(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def _load_npy(where: str, path: Path, mmap: bool) -> np.ndarray:
    try:
        if mmap:
            try:
                return np.load(path, mmap_mode="r", allow_pickle=False)
            except ValueError:
                pass  # older numpy cannot memory-map zero-size arrays; fall back to reading
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ArtifactError(f"{where}: cannot read {path.name}: {e}") from e
    if not isinstance(arr, np.ndarray):
        raise ArtifactError(f"{where}: {path.name} is not a single .npy array")
    arr.flags.writeable = False
    return arr


def load_version(path: str | os.PathLike[str], *, mmap: bool = False) -> ModelArtifact:
    """Load and fully validate a version folder, or the ``latest`` version of an artifacts root.

    Every array's sha256 is verified before it is parsed (also with ``mmap=True``, which memory-maps the
    arrays read-only instead of reading them: less resident memory for big catalogues, at the cost of a
    full read for hashing at load time). Raises :class:`ArtifactError` naming the folder and the problem.
    """
    path = Path(path)
    if not (path / MANIFEST_FILE).is_file():
        if (path / LATEST_POINTER).exists():
            path = latest_version(path)
        elif not path.is_dir():
            raise ArtifactError(f"{path}: no such artifact folder")
        elif _VERSION_RE.match(path.name):
            raise ArtifactError(f"{path}: {MANIFEST_FILE} is missing")
        else:
            raise ArtifactError(
                f"{path}: neither a version folder (no {MANIFEST_FILE}) nor an artifacts root "
                f"(no '{LATEST_POINTER}' pointer)"
            )
    where = str(path)
    manifest_path = path / MANIFEST_FILE
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{where}: {MANIFEST_FILE} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{where}: {MANIFEST_FILE} is not valid JSON: {e}") from e
    if not isinstance(raw, dict):
        raise ArtifactError(f"{where}: {MANIFEST_FILE} must hold a JSON object")
    schema = raw.get("schema_version")
    if schema != SCHEMA_VERSION:
        raise ArtifactError(f"{where}: unknown manifest schema_version {schema!r} (this code reads {SCHEMA_VERSION})")
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as e:
        raise ArtifactError(f"{where}: invalid {MANIFEST_FILE}: {_summarise(e)}") from e
    if manifest.version != path.name:
        raise ArtifactError(f"{where}: manifest names version {manifest.version!r}, folder is {path.name!r}")
    missing = [n for n in REQUIRED_ARRAYS if n not in manifest.arrays]
    if missing:
        raise ArtifactError(f"{where}: {MANIFEST_FILE} lists no required array(s) {', '.join(missing)}")

    arrays: dict[str, np.ndarray] = {}
    for name, spec in manifest.arrays.items():
        if not _ARRAY_NAME_RE.match(name) or spec.file != f"{name}.npy":
            raise ArtifactError(f"{where}: array {name!r} must be stored as {name}.npy, not {spec.file!r}")
        file = path / spec.file
        try:
            digest = _sha256_file(file)
        except FileNotFoundError:
            raise ArtifactError(f"{where}: array file {spec.file} is missing") from None
        except OSError as e:
            raise ArtifactError(f"{where}: cannot read {spec.file}: {e}") from e
        if digest != spec.sha256:
            raise ArtifactError(
                f"{where}: checksum mismatch for {spec.file} (file is corrupt or truncated: "
                f"sha256 {digest[:12]}..., manifest says {spec.sha256[:12]}...)"
            )
        arr = _load_npy(where, file, mmap)
        if arr.dtype.str != spec.dtype:
            raise ArtifactError(f"{where}: {spec.file} has dtype {arr.dtype.str}, manifest says {spec.dtype}")
        if arr.shape != spec.shape:
            raise ArtifactError(f"{where}: {spec.file} has shape {arr.shape}, manifest says {spec.shape}")
        arrays[name] = arr
    validate_arrays(where, manifest, arrays)
    logger.info(
        "loaded artifact %s (%d users, %d items)",
        manifest.version,
        manifest.dims.n_users,
        manifest.dims.n_items,
    )
    return ModelArtifact(path=path, manifest=manifest, arrays=MappingProxyType(arrays))


# --------------------------------------------------------------------------------------------------------
# Reference prediction
# --------------------------------------------------------------------------------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Overflow-free logistic function (exp of a non-positive number only)."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def apply_output_transform(raw: np.ndarray, output: OutputSpec, scale: ScaleSpec) -> np.ndarray:
    """Raw score -> served rating: the output transform, then a clip to the rating scale (float64)."""
    raw = np.asarray(raw, dtype=np.float64)
    if output.transform == "sigmoid":
        out = output.low + (output.high - output.low) * _sigmoid(raw)
    else:
        out = raw
    return np.clip(out, scale.low, scale.high)


def _codes(values: np.ndarray | int | list[int], n: int, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{what} codes must be integers, got dtype {arr.dtype}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= n):
        raise ValueError(f"{what} codes must lie in [0, {n})")  # negative codes would silently wrap
    return arr.astype(np.intp, copy=False)


def predict(
    artifact: ModelArtifact,
    user_codes: np.ndarray | int | list[int],
    item_codes: np.ndarray | int | list[int],
) -> np.ndarray:
    """Reference rating prediction, the definition every implementation (torch, service) must match.

    ``raw = sum(U[u] * V[i]) + bu[u] + bi[i] + global_offset``, then :func:`apply_output_transform`
    (sigmoid: ``low + (high - low) * sigmoid(raw)``; linear: ``raw``), then clip to the rating scale.

    Precision: all arithmetic is float64 on the float32 stored parameters, and the result is float64.
    A float32 implementation of the same formula (the trainer's torch model) differs by rounding only,
    well under 1e-5 for realistic dims and magnitudes, which is the tolerance the tests hold it to.
    ``user_codes`` and ``item_codes`` broadcast against each other (one user against many items works).
    """
    u = _codes(user_codes, artifact.n_users, "user")
    i = _codes(item_codes, artifact.n_items, "item")
    u, i = np.broadcast_arrays(u, i)
    m = artifact.manifest
    uf = np.asarray(artifact.user_factors[u], dtype=np.float64)
    vf = np.asarray(artifact.item_factors[i], dtype=np.float64)
    raw = (
        np.einsum("...d,...d->...", uf, vf)
        + artifact.user_bias[u].astype(np.float64)
        + artifact.item_bias[i].astype(np.float64)
        + m.global_offset
    )
    return apply_output_transform(raw, m.output, m.rating_scale)
