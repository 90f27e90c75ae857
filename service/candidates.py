"""Per-user recommendation lists, computed once per model version and reused while they stay exact.

Why: under one model version a user's ranking never changes; only the set of movies to leave out grows,
as the user posts ratings. So the first request for ``(user, similarity)`` computes the exact top
``depth`` movies the user did not rate in training (FAISS search, float64 re-score, predicted ratings,
the rendered JSON items) and keeps them here; a later request removes the movies the store says the user
has rated and answers from what is left. Removing movies from an exact best-first list leaves the exact
best-first list of the rest, so the answer is the full search's answer whenever at least ``k`` remain (or
when the list already holds every eligible movie); otherwise the caller runs the full search.

The cache belongs to one :class:`~service.model_state.LoadedModel`: a new model version starts with an
empty one, and the old one goes with the old model. Memory: about ``depth`` rendered items (~150 bytes
each) per entry, at most ``size`` entries, least recently used evicted first.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from cachetools import LRUCache


@dataclass(frozen=True, slots=True)
class Candidates:
    """One user's best unrated-in-training movies under one similarity, best first."""

    ids: np.ndarray  # int64 external movie ids, best first
    items: list[bytes]  # the rendered JSON item of each (see service.render.recommendation_items)
    complete: bool  # True when the list holds every eligible movie (fewer than ``depth`` exist)

    def pick(self, rated_sorted: np.ndarray, k: int) -> list[bytes] | None:
        """The first ``k`` items whose movie is not in ``rated_sorted`` (ascending unique int64 ids), or
        None when fewer than ``k`` remain and the list is not complete (the caller searches instead)."""
        if len(rated_sorted):
            pos = np.searchsorted(rated_sorted, self.ids)
            pos[pos == len(rated_sorted)] = 0
            keep = np.flatnonzero(rated_sorted[pos] != self.ids)[:k].tolist()
            if len(keep) < k and not self.complete:
                return None
            return [self.items[i] for i in keep]
        if len(self.items) < k and not self.complete:
            return None
        return self.items[:k]


class CandidateCache:
    """A bounded LRU map ``(user code, similarity) -> Candidates``; ``size=0`` disables it."""

    def __init__(self, size: int, depth: int) -> None:
        self.size = size
        self.depth = depth
        self._entries: LRUCache[tuple[int, str], Candidates] | None = LRUCache(size) if size else None
        self._lock = threading.Lock()  # LRUCache is not thread-safe; requests normally share one loop

    def usable(self, k: int) -> bool:
        return self._entries is not None and k <= self.depth

    def get(self, user_code: int, similarity: str) -> Candidates | None:
        if self._entries is None:
            return None
        with self._lock:
            return self._entries.get((user_code, similarity))

    def put(self, user_code: int, similarity: str, entry: Candidates) -> None:
        if self._entries is None:
            return
        with self._lock:
            self._entries[(user_code, similarity)] = entry

    def __len__(self) -> int:
        return 0 if self._entries is None else len(self._entries)
