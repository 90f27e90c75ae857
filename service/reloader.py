"""Holds the served model and swaps in new versions: load aside, validate fully, then one assignment.

A failed load (corrupt, half-written or invalid version) is logged and recorded in ``last_error`` (shown
by ``GET /model``) and the current model keeps serving. A background thread polls the ``latest`` pointer
so that a trainer publishing a new version is picked up without a restart.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from movierec import artifacts
from movierec.artifacts import ArtifactError
from service.config import ServiceSettings
from service.model_state import LoadedModel, load_model

log = logging.getLogger(__name__)


class ModelHolder:
    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.current: LoadedModel | None = None
        self.last_error: str | None = None
        self.failures = 0
        self._lock = threading.Lock()  # one load at a time; readers never take it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refused: str | None = None  # a version the poller already refused: not retried every tick

    @property
    def root(self) -> Path:
        return Path(self.settings.artifacts_dir)

    def reload(self) -> bool:
        """Load the version ``latest`` points at if it is not the one served; True when it swapped."""
        with self._lock:
            try:
                target = artifacts.latest_version(self.root)
            except ArtifactError as e:
                self._failed(str(e))
                return False
            if self.current is not None and self.current.version == target.name:
                return False
            try:
                model = load_model(target, self.settings)
            except ArtifactError as e:
                self._failed(str(e))
                return False
            except Exception as e:  # a bug or an unexpected file problem must not kill the server
                log.exception("loading %s failed", target)
                self._failed(f"{target}: {type(e).__name__}: {e}")
                return False
            old = self.current.version if self.current is not None else None
            self.current = model  # the swap: one reference assignment
            self.last_error = None
            log.info("serving model %s (was %s)", model.version, old)
            return True

    def _failed(self, message: str) -> None:
        self.last_error = message
        self.failures += 1
        if self.current is None:
            log.error("no model loaded: %s", message)
        else:
            log.error("model update refused, still serving %s: %s", self.current.version, message)

    def start_polling(self) -> None:
        interval = self.settings.reload_interval_s
        if interval <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._poll, args=(interval,), name="model-reloader", daemon=True)
        self._thread.start()

    def _poll(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                pointer = (self.root / artifacts.LATEST_POINTER).read_text(encoding="utf-8").strip()
            except OSError:
                continue
            if self.current is None or pointer != self.current.version:
                if pointer == self._refused:
                    continue  # already refused this exact version; wait for a new one
                if not self.reload() and self.last_error is not None:
                    self._refused = pointer

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
