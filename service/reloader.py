"""Holds the served models (one per kind) and swaps in new versions: load aside, validate fully, then one
assignment.

Each model kind has its own pointer (``latest-<kind>``, written by the trainer); the holder loads
the current version of every kind it finds (``MOVIEREC_MODELS`` narrows the set) and keeps them side by
side, so ``?model=als`` and ``?model=mf`` can be compared live. A failed load (corrupt, half-written or
invalid version) is logged and recorded in ``last_error`` (shown by ``GET /model``) and the model already
serving that kind keeps serving. A background thread polls the pointers so that a trainer publishing a new
version is picked up without a restart.

Defaults: ``recommend_model`` / ``predict_model`` name the kind each endpoint uses without ``?model=``;
``auto`` picks, among the loaded models, the best test NDCG@10 for recommendations and the best test RMSE
for predictions (from each manifest's metrics), falling back to the newest version's kind.
"""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path
from typing import Literal

from movierec import artifacts
from movierec.artifacts import ArtifactError
from service.config import ServiceSettings
from service.model_state import LoadedModel, load_model

log = logging.getLogger(__name__)
Purpose = Literal["recommend", "predict"]


def _test_metric(model: LoadedModel, name: str) -> float | None:
    value = model.artifact.manifest.metrics.get("test", {}).get("model", {}).get(name)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


class ModelHolder:
    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.models: dict[str, LoadedModel] = {}  # replaced, never mutated: readers need no lock
        self.last_error: str | None = None
        self.failures = 0
        self._lock = threading.Lock()  # one load at a time; readers never take it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refused: dict[str, str] = {}  # kind -> version already refused: not retried every tick

    @property
    def root(self) -> Path:
        return Path(self.settings.artifacts_dir)

    # ---------------------------------------------------------------------------------------------- reads

    def default_kind(self, purpose: Purpose) -> str | None:
        """The kind an endpoint uses without ``?model=``: the setting, or the best loaded model (auto)."""
        models = self.models
        wanted = self.settings.recommend_model if purpose == "recommend" else self.settings.predict_model
        if wanted != "auto":
            return wanted
        if not models:
            return None
        metric, sign = ("ndcg@10", -1.0) if purpose == "recommend" else ("rmse", 1.0)
        scored = [(sign * v, kind) for kind, m in models.items() if (v := _test_metric(m, metric)) is not None]
        if scored:
            return min(scored)[1]
        return max(models.values(), key=lambda m: m.version).artifact.manifest.model_kind

    def get(self, kind: str | None, purpose: Purpose = "recommend") -> LoadedModel | None:
        return self.models.get(kind if kind is not None else (self.default_kind(purpose) or ""))

    @property
    def current(self) -> LoadedModel | None:
        """The model recommendations use by default (what ``GET /model`` and ``/ready`` describe)."""
        return self.get(None, "recommend")

    # ---------------------------------------------------------------------------------------------- loads

    def _wanted_kinds(self) -> list[str]:
        kinds = artifacts.latest_kinds(self.root)
        if not kinds:  # artifacts from before per-kind pointers: the global pointer's kind
            try:
                name = artifacts.latest_version(self.root).name
                kinds = [name.split("-")[1]]
            except (ArtifactError, IndexError):
                kinds = []
        allowed = self.settings.model_kinds()
        return [k for k in kinds if allowed is None or k in allowed]

    def _target(self, kind: str) -> Path:
        try:
            return artifacts.latest_version(self.root, kind)
        except ArtifactError:
            if artifacts.latest_kinds(self.root):
                raise
            return artifacts.latest_version(self.root)

    def reload(self) -> bool:
        """Load every kind whose pointer names a version not served yet; True when anything swapped."""
        with self._lock:
            kinds = self._wanted_kinds()
            if not kinds:
                try:
                    artifacts.latest_version(self.root)
                    self._failed("no model kind to serve under the configured MOVIEREC_MODELS")
                except ArtifactError as e:
                    self._failed(str(e))
                return False
            swapped = False
            for kind in kinds:
                swapped |= self._reload_kind(kind)
            return swapped

    def _reload_kind(self, kind: str) -> bool:
        try:
            target = self._target(kind)
        except ArtifactError as e:
            self._failed(str(e), kind)
            return False
        current = self.models.get(kind)
        if current is not None and current.version == target.name:
            return False
        try:
            model = load_model(target, self.settings)
        except ArtifactError as e:
            self._failed(str(e), kind, target.name)
            return False
        except Exception as e:  # a bug or an unexpected file problem must not kill the server
            log.exception("loading %s failed", target)
            self._failed(f"{target}: {type(e).__name__}: {e}", kind, target.name)
            return False
        self.models = {**self.models, kind: model}  # the swap: one reference assignment
        self.last_error = None
        self._refused.pop(kind, None)
        log.info("serving %s model %s (was %s)", kind, model.version, current.version if current else None)
        return True

    def _failed(self, message: str, kind: str | None = None, version: str | None = None) -> None:
        self.last_error = message
        self.failures += 1
        if kind is not None and version is not None:
            self._refused[kind] = version
        serving = self.models.get(kind or "")
        if serving is None:
            log.error("no %s model loaded: %s", kind or "", message)
        else:
            log.error("model update refused, still serving %s: %s", serving.version, message)

    def _changed(self) -> bool:
        for kind in self._wanted_kinds():
            try:
                name = self._target(kind).name
            except ArtifactError:
                continue
            served = self.models.get(kind)
            if (served is None or served.version != name) and self._refused.get(kind) != name:
                return True
        return False

    def start_polling(self) -> None:
        interval = self.settings.reload_interval_s
        if interval <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._poll, args=(interval,), name="model-reloader", daemon=True)
        self._thread.start()

    def _poll(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                if self._changed():
                    self.reload()
            except OSError:
                continue

    def metrics_state(self) -> tuple[str | None, str | None, float | None, int]:
        m = self.current
        if m is None:
            return None, None, None, self.failures
        return m.version, m.artifact.manifest.model_kind, m.loaded_at, self.failures

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
