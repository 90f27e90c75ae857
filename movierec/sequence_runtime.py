"""Run a published ``sequence`` model with numpy + onnxruntime (no torch): the service side of the kind.

The artifact carries the network as ONNX bytes (``sequence_onnx``, uint8, covered by the manifest's
sha256 like every array) and what the network needs besides the movie asked about: each user's last
``n_history`` training ratings (``seq_items`` int32, -1 = padding, left-padded, most recent last;
``seq_ratings`` float32) and the user's feature codes (``user_feature_codes`` int64, 0 = unknown).
:meth:`SequenceScorer.predict` builds the same inputs as the trainer (``trainer.models.sequence``) and
clips to the rating scale, so it equals the torch model's ``predict`` to float rounding.

The standard factor arrays of a sequence artifact are a retrieval model (biased MF by default), so
``movierec.artifacts.predict`` on it is that model's rating, not this one's; the service retrieves
candidates with the factors and re-ranks them with :meth:`SequenceScorer.predict`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SequenceScorer"]


@dataclass
class SequenceScorer:
    """An onnxruntime session over a sequence model plus the per-user inputs it needs."""

    session: Any
    seq_items: np.ndarray
    seq_ratings: np.ndarray
    user_feature_codes: np.ndarray
    pad_item: int
    n_items: int
    low: float
    high: float
    batch_size: int = 65536

    @classmethod
    def from_artifact(cls, art: Any, *, threads: int = 1) -> SequenceScorer:
        """From a loaded ``movierec.artifacts.ModelArtifact`` of kind ``sequence``."""
        return cls.from_arrays(
            art.arrays,
            art.manifest.hyperparameters,
            (art.manifest.rating_scale.low, art.manifest.rating_scale.high),
            threads=threads,
        )

    @classmethod
    def from_arrays(
        cls,
        arrays: Mapping[str, np.ndarray],
        hyperparameters: Mapping[str, Any],
        scale: tuple[float, float],
        *,
        threads: int = 1,
    ) -> SequenceScorer:
        import onnxruntime as ort

        spec = hyperparameters.get("sequence")
        if not isinstance(spec, Mapping) or "sequence_onnx" not in arrays:
            raise ValueError("not a sequence artifact: no sequence_onnx array / hyperparameters['sequence']")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        model = np.ascontiguousarray(arrays["sequence_onnx"], dtype=np.uint8).tobytes()
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        return cls(
            session=session,
            seq_items=np.asarray(arrays["seq_items"]),
            seq_ratings=np.asarray(arrays["seq_ratings"]),
            user_feature_codes=np.asarray(arrays["user_feature_codes"]),
            pad_item=int(spec["pad_item"]),
            n_items=int(arrays["item_factors"].shape[0]),
            low=float(scale[0]),
            high=float(scale[1]),
        )

    def inputs(self, user_codes: np.ndarray, item_codes: np.ndarray) -> dict[str, np.ndarray]:
        """The network's inputs for (user, movie) code pairs (padding -1 mapped to the pad index)."""
        users = np.asarray(user_codes, dtype=np.int64)
        hist = self.seq_items[users].astype(np.int64)
        return {
            "hist_items": np.where(hist < 0, self.pad_item, hist),
            "hist_ratings": self.seq_ratings[users].astype(np.float32),
            "target_items": np.asarray(item_codes, dtype=np.int64),
            "user_features": self.user_feature_codes[users].astype(np.int64),
            "user_ids": users,
        }

    def predict(self, user_codes: np.ndarray | list[int], item_codes: np.ndarray | list[int]) -> np.ndarray:
        """Predicted ratings (float32, clipped to the rating scale) for parallel arrays of codes."""
        users, items = np.broadcast_arrays(np.asarray(user_codes, dtype=np.int64), np.asarray(item_codes, np.int64))
        users, items = users.ravel(), items.ravel()
        n_users = len(self.seq_items)
        if users.size and (users.min() < 0 or users.max() >= n_users):
            raise ValueError(f"user codes must lie in [0, {n_users})")
        if items.size and (items.min() < 0 or items.max() >= self.n_items):
            raise ValueError(f"item codes must lie in [0, {self.n_items})")
        wanted = {i.name for i in self.session.get_inputs()}
        out = []
        for s in range(0, len(users), self.batch_size):
            feeds = self.inputs(users[s : s + self.batch_size], items[s : s + self.batch_size])
            (pred,) = self.session.run(None, {k: v for k, v in feeds.items() if k in wanted})
            out.append(np.asarray(pred, dtype=np.float32).reshape(-1))
        pred = np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
        return np.clip(pred, self.low, self.high).astype(np.float32)
