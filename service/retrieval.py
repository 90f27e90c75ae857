"""Top-k retrieval over one artifact's movie vectors with FAISS: recommendations and similar movies.

One :class:`ItemIndex` is built per model version when it is loaded and is read-only afterwards, so any
number of request threads can search it at once. This module imports only numpy, faiss and
:mod:`movierec.artifacts` (never torch or pandas).

Scores (the definitions the tests' brute-force references use)
---------------------------------------------------------------

``recommend(u, similarity="dot")``
    ``u . v_i + b_i``. The full predicted rating is ``transform(u . v_i + b_u + b_i + offset)`` with a
    monotone transform, and ``b_u + offset`` is the same for every movie, so this orders a user's movies
    exactly as the predicted rating does. The bias is folded into the index: rows ``[v_i, b_i]``, query
    ``[u, 1]``, ``METRIC_INNER_PRODUCT``.
``recommend(u, similarity="cosine")``
    ``cos(u, v_i)``, biases not involved: the index holds L2-normalised ``v_i``. A movie whose vector is
    shorter than :data:`COSINE_EPS` (one never updated in training can be exactly zero or ~1e-30) has no
    direction: it is stored as a zero row and scores 0 for every query (never a division by ~0, never
    NaN). A user vector shorter than :data:`COSINE_EPS` scores 0 against every movie. Scores lie in
    ``[-1, 1]``.
``similar(i, similarity="dot" | "cosine")``
    ``v_i . v_j`` (no biases) or ``cos(v_i, v_j)``; movie ``i`` itself is never returned.

Results are exact for ``kind="flat"`` and deterministic: ordered by score descending, then item code
ascending. FAISS computes float32 scores and may order exact or near ties arbitrarily, so the fetched
candidates (a few more than ``k``) are re-scored in float64 from the stored float32 parameters and
re-sorted by ``(-score, code)``. If an unfetched movie could still tie with (or, through float32
rounding, beat) the k-th result, which only happens with (near-)duplicate vectors at the cut-off, an
exact masked numpy pass answers that query instead. ``k`` results come back whenever ``k`` eligible
movies exist (eligible = in ``allowed`` and not in ``exclude``); fewer eligible ones all come back.

Filtering
---------

``exclude`` (the user's rated movies, possibly thousands) and ``allowed`` (a boolean mask, e.g. a genre
filter) are applied inside the search, never after a plain top-k. ``filter_strategy`` picks how a flat
search filters (HNSW always uses the bitmap selector):

* ``"selector"``: one ``faiss.IDSelectorBitmap`` over the eligible movies (``allowed`` and not
  ``exclude``; built with numpy in O(n_items), tens of microseconds for 62k movies) passed as
  ``SearchParameters(sel=...)``. ``IDSelectorNot(IDSelectorBatch(exclude))`` (a hash set) measured
  1.3-3x slower than the bitmap, so it is not used.
* ``"subset"``: ``faiss.knn_inner_products_by_idx`` over the ascending list of eligible codes: only
  eligible rows are read and scored, with no per-movie membership branch.
* ``"overfetch"``: an unfiltered search for ``k + |exclude|`` (at most ``|exclude|`` of those can be
  excluded, so ``k`` eligible ones remain whenever they exist) and the excluded ones dropped. With an
  ``allowed`` mask that bound does not exist, so those queries use the selector.
* ``"auto"`` (default): ``"overfetch"`` when at most 8 movies are excluded and there is no ``allowed``
  mask (``similar``: the movie itself; a plain search for ``k + 9`` costs nothing extra and needs no
  mask or selector), else ``"subset"`` when at most half of the catalogue is eligible, else
  ``"selector"``.

Why ``"auto"`` (``bench/bench_retrieval.py``, one thread, p50 per ``recommend`` call, 62,000 movies x 64,
a shared 2-core machine, so +-10 %): no filter 399 us; 2,000 excluded: selector 503, subset 534, overfetch
1,069; 20,000 excluded: selector 650, subset 1,159, overfetch 4,639; genre-like 10 % allowed: subset 315,
selector 552; 1 % allowed: subset 63, selector 201 (3,706 movies: 2,000 excluded, i.e. under half
eligible: subset 61, selector 92). The bitmap test costs a mispredicted branch per scattered member, so it
wins only when most of the catalogue is eligible; the subset scan wins when a filter leaves a minority.
Over-fetching is never competitive for thousands excluded: the top-``k + |exclude|`` heap costs more
than the filter; for a handful it is the plain search itself.

HNSW
----

``kind="hnsw"`` adds ``faiss.IndexHNSWFlat`` graphs (``METRIC_INNER_PRODUCT``, same bias fold and
normalisation) and keeps the flat indexes beside them. Filtering uses the bitmap selector;
``efSearch = max(hnsw_ef_search, k + 8)`` is passed per call through ``SearchParametersHNSW``, never set on
the shared index. When the approximate search returns fewer than ``min(k, eligible)`` movies (likely
under heavy filtering) that query is answered by the exact flat search, so the "k results" guarantee
holds for HNSW too. HNSW results are re-scored and re-sorted like flat ones but the set is approximate:
the default ``efSearch=128`` measured recall@10 0.995 (dot) and 0.967 (cosine) against flat on a
62,000-movie catalogue, 0.999 on 3,706 movies.

Threads
-------

Searches only read the indexes; per-call state (selectors, search parameters, id lists) lives in locals
that stay referenced until the search returns. FAISS parallelises with OpenMP, which for single-query
calls from a multi-threaded server only adds thread hand-offs and spinning cores that other requests
need: on a 2-core machine a flat 62k search took 3-10 ms with OpenMP's default against 0.4-0.8 ms with one
thread. So searches run FAISS on **one** OpenMP thread by default (:func:`configure_faiss_threads`
changes it). The OpenMP setting is per calling thread (``faiss.omp_set_num_threads`` in the main thread
does not reach the server's worker threads; measured with faiss 1.15), so every search applies the
configured value to its own thread before calling FAISS. Index building uses all cores.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Literal

import faiss
import numpy as np

from movierec.artifacts import ModelArtifact

__all__ = [
    "COSINE_EPS",
    "Similarity",
    "IndexKind",
    "FilterStrategy",
    "SearchResult",
    "ItemIndex",
    "configure_faiss_threads",
    "eligible_mask",
    "top_k_exact",
]

Similarity = Literal["dot", "cosine"]
IndexKind = Literal["flat", "hnsw"]
FilterStrategy = Literal["auto", "subset", "selector", "overfetch"]

COSINE_EPS = 1e-12
"""Vectors with an L2 norm (computed in float64) below this have no direction: cosine 0 with everything.

Absolute, not relative: trained factors have norms of order 0.1-10, and the vectors this guards against
are exactly zero or denormal-small (~1e-30, whose float32 squares underflow to 0)."""

_SLACK = 8
"""Candidates fetched beyond ``k`` so a near-tie at the cut-off can be detected (see ``_search``)."""

_SUBSET_SHARE_NUM, _SUBSET_SHARE_DEN = 1, 2
"""``"auto"`` scans the eligible subset when at most this share (1/2) of the catalogue is eligible."""

_U32 = 2.0**-24  # unit round-off of float32


@dataclass(frozen=True)
class SearchResult:
    """Top-k answer: item codes best first (int64) and their scores (float32), same order."""

    codes: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.codes)


_EMPTY = SearchResult(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32))

# --------------------------------------------------------------------------------------------------------
# OpenMP threads
# --------------------------------------------------------------------------------------------------------

_DEFAULT_THREADS = max(1, int(faiss.omp_get_max_threads()))  # OpenMP's default: all cores
_search_threads = 1
_thread_state = threading.local()


def configure_faiss_threads(n: int | None = 1) -> int:
    """Set the OpenMP threads FAISS may use per search, in every thread that searches; returns the old value.

    The default is already 1: the service sends one query per call from many request threads, so the
    requests are the parallelism. ``None`` means OpenMP's default (all cores), for offline batch use.
    Applied lazily: each search first sets it for its own thread if that thread has not got it yet.
    """
    global _search_threads
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"faiss threads must be a positive integer or None, got {n!r}")
    previous = _search_threads
    _search_threads = _DEFAULT_THREADS if n is None else n
    _apply_threads()
    return previous


def _apply_threads() -> None:
    want = _search_threads
    if getattr(_thread_state, "threads", None) != want:
        faiss.omp_set_num_threads(want)
        _thread_state.threads = want


# --------------------------------------------------------------------------------------------------------
# Shared helpers (also used by service.popularity)
# --------------------------------------------------------------------------------------------------------


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ValueError(f"k must be an integer, got {k!r}")
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    return int(k)


def eligible_mask(
    n_items: int, exclude: np.ndarray | None = None, allowed: np.ndarray | None = None
) -> tuple[np.ndarray | None, int]:
    """``(mask, n_eligible)``: a fresh boolean mask of eligible movies, or ``None`` when nothing is filtered.

    ``exclude``: item codes (any integer array, duplicates fine) that must not be returned; codes outside
    ``[0, n_items)`` are a ValueError. ``allowed``: boolean mask of shape ``(n_items,)``.
    """
    if exclude is None and allowed is None:
        return None, n_items
    if allowed is not None:
        allowed = np.asarray(allowed)
        if allowed.dtype != np.bool_ or allowed.shape != (n_items,):
            raise ValueError(
                f"allowed must be a boolean mask of shape ({n_items},), got {allowed.dtype} {allowed.shape}"
            )
        mask = allowed.copy()
    else:
        mask = np.ones(n_items, dtype=bool)
    if exclude is not None:
        ex = np.asarray(exclude)
        if ex.size:
            if ex.dtype.kind not in "iu":
                raise ValueError(f"exclude must hold integer item codes, got dtype {ex.dtype}")
            ex = ex.ravel()
            if int(ex.min()) < 0 or int(ex.max()) >= n_items:
                raise ValueError(f"exclude codes must lie in [0, {n_items})")
            mask[ex] = False
    return mask, int(np.count_nonzero(mask))


def top_k_exact(scores: np.ndarray, k: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Codes of the ``k`` best eligible scores, by score descending then code ascending (exact ties)."""
    codes = np.arange(len(scores), dtype=np.int64) if mask is None else np.flatnonzero(mask).astype(np.int64)
    s = scores[codes]
    if k < len(codes):
        kth = np.partition(s, len(s) - k)[len(s) - k]
        keep = s >= kth  # every tie of the k-th value, so code order decides among them below
        codes, s = codes[keep], s[keep]
    order = np.lexsort((codes, -s))[:k]
    return codes[order]


# --------------------------------------------------------------------------------------------------------
# The index
# --------------------------------------------------------------------------------------------------------


class _Space:
    """One similarity's flat index (and HNSW graph) plus what its error bound needs."""

    def __init__(self, rows: np.ndarray, kind: IndexKind, m: int, ef_construction: int) -> None:
        n, d = rows.shape
        self.flat = faiss.IndexFlatIP(d)
        self.flat.add(rows)
        # What FAISS scores (float32), for the subset scan and the exact numpy pass: a read-only view of
        # the flat index's own storage rather than a second copy (valid while self.flat lives; never
        # added to after this).
        self.rows = faiss.rev_swig_ptr(self.flat.get_xb(), n * d).reshape(n, d)
        self.rows.flags.writeable = False
        self.hnsw: faiss.IndexHNSWFlat | None = None
        if kind == "hnsw":
            self.hnsw = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
            self.hnsw.hnsw.efConstruction = ef_construction
            self.hnsw.add(rows)
        self.max_row_norm = float(np.linalg.norm(rows.astype(np.float64), axis=1).max(initial=0.0))
        self._local = threading.local()

    def selector_params(self, mask: np.ndarray) -> faiss.SearchParameters:
        """Flat-search parameters whose bitmap selector admits exactly ``mask``: one set per thread, built
        on the thread's first call and refilled on each (building the selector and the parameters per
        search cost ~5 us). Valid until this thread's next call; a search never spans two calls."""
        state = getattr(self._local, "selector", None)
        if state is None:
            bitmap = np.zeros((len(mask) + 7) // 8, dtype=np.uint8)
            sel = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))  # size in bytes; no copy
            params = faiss.SearchParameters()
            params.sel = sel
            state = self._local.selector = (bitmap, sel, params)  # the bitmap and selector live as long
        bitmap, _, params = state
        bitmap[:] = np.packbits(mask, bitorder="little")
        return params


class ItemIndex:
    """FAISS indexes over one artifact's movie vectors, built once per model version (at load).

    Parameters: ``item_factors`` (n_items, dim) and ``item_bias`` (n_items,), finite. ``kind="flat"`` is
    exact; ``"hnsw"`` is approximate (graphs with ``hnsw_m`` links, ``hnsw_ef_construction``) searched
    with ``efSearch = max(hnsw_ef_search, k + 8)``. ``filter_strategy`` picks how flat searches filter
    (see the module docstring). See the module docstring for the exact score definitions, tie order and
    guarantees.
    """

    def __init__(
        self,
        item_factors: np.ndarray,
        item_bias: np.ndarray,
        *,
        kind: IndexKind = "flat",
        hnsw_m: int = 32,
        hnsw_ef_search: int = 128,
        hnsw_ef_construction: int = 200,
        filter_strategy: FilterStrategy = "auto",
    ) -> None:
        if kind not in ("flat", "hnsw"):
            raise ValueError(f"kind must be 'flat' or 'hnsw', got {kind!r}")
        if filter_strategy not in ("auto", "subset", "selector", "overfetch"):
            raise ValueError(
                f"filter_strategy must be 'auto', 'subset', 'selector' or 'overfetch', got {filter_strategy!r}"
            )
        for name, value in (("hnsw_m", hnsw_m), ("hnsw_ef_search", hnsw_ef_search)):
            if int(value) < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        if int(hnsw_ef_construction) < 1:
            raise ValueError(f"hnsw_ef_construction must be positive, got {hnsw_ef_construction}")
        factors = np.asarray(item_factors)
        bias = np.asarray(item_bias)
        if factors.ndim != 2 or factors.shape[0] < 1:
            raise ValueError(f"item_factors must be (n_items >= 1, dim), got shape {factors.shape}")
        if bias.shape != (factors.shape[0],):
            raise ValueError(f"item_bias must have shape ({factors.shape[0]},), got {bias.shape}")
        factors = np.ascontiguousarray(factors, dtype=np.float32)
        bias = np.ascontiguousarray(bias, dtype=np.float32)
        if not (np.isfinite(factors).all() and np.isfinite(bias).all()):
            raise ValueError("item_factors and item_bias must be finite")

        self.kind: IndexKind = kind
        self.filter_strategy: FilterStrategy = filter_strategy
        self.hnsw_ef_search = int(hnsw_ef_search)
        self.n_items, self.dim = factors.shape
        self._factors = factors
        self._bias = bias
        self._bias64 = bias.astype(np.float64)
        v64 = factors.astype(np.float64)
        self._norms = np.linalg.norm(v64, axis=1)
        self._has_direction = self._norms >= COSINE_EPS

        # Build with every core whatever this thread's search setting is (OpenMP settings are per thread).
        saved = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(_DEFAULT_THREADS)
        try:
            dot_rows = np.ascontiguousarray(np.hstack([factors, bias[:, None]]), dtype=np.float32)
            # dim 0 (a biases-only model) still needs a 1-wide cosine index: all rows zero, all scores 0.
            cos_rows = np.zeros((self.n_items, max(self.dim, 1)), dtype=np.float32)
            nz = self._has_direction
            cos_rows[nz, : self.dim] = (v64[nz] / self._norms[nz, None]).astype(np.float32)
            m, efc = int(hnsw_m), int(hnsw_ef_construction)
            self._spaces: dict[str, _Space] = {
                "dot": _Space(dot_rows, kind, m, efc),
                "cosine": _Space(cos_rows, kind, m, efc),
            }
        finally:
            faiss.omp_set_num_threads(saved)

    @classmethod
    def from_artifact(cls, art: ModelArtifact, **kw) -> ItemIndex:
        """Index an artifact's ``item_factors`` and ``item_bias``; ``kw`` as for the constructor."""
        return cls(art.item_factors, art.item_bias, **kw)

    # ----------------------------------------------------------------------------------------------------
    # Public searches
    # ----------------------------------------------------------------------------------------------------

    def recommend(
        self,
        user_vector: np.ndarray,
        k: int,
        similarity: Similarity,
        *,
        exclude: np.ndarray | None = None,
        allowed: np.ndarray | None = None,
    ) -> SearchResult:
        """The ``k`` best movies for a user vector, never one in ``exclude``, only ones in ``allowed``.

        ``dot``: score ``u . v_i + b_i`` (the order of the full predicted rating); ``cosine``:
        ``cos(u, v_i)``, 0 for direction-less vectors. Best first, ties by code ascending; all eligible
        movies when fewer than ``k`` exist. ``k <= 0`` is a ValueError.
        """
        k = _check_k(k)
        sim = _check_similarity(similarity)
        q = np.asarray(user_vector)
        if q.shape != (self.dim,):
            raise ValueError(f"user_vector must have shape ({self.dim},), got {q.shape}")
        q = q.astype(np.float64)
        qq = float(q @ q)  # finite implies every component is finite (a NaN or inf would propagate)
        if not math.isfinite(qq) and not np.isfinite(q).all():
            raise ValueError("user_vector must be finite")
        mask, n_eligible = eligible_mask(self.n_items, exclude, allowed)
        return self._search(q, 1.0, k, sim, mask, n_eligible, allowed is not None, qq)

    def similar(
        self, item_code: int, k: int, similarity: Similarity, *, allowed: np.ndarray | None = None
    ) -> SearchResult:
        """The ``k`` movies nearest to movie ``item_code`` by ``v_i . v_j`` (no biases) or cosine.

        The movie itself is never returned; ``k`` results whenever ``k`` other allowed movies exist.
        """
        k = _check_k(k)
        sim = _check_similarity(similarity)
        if isinstance(item_code, bool) or not isinstance(item_code, int | np.integer):
            raise ValueError(f"item_code must be an integer, got {item_code!r}")
        code = int(item_code)
        if not 0 <= code < self.n_items:
            raise ValueError(f"item_code must lie in [0, {self.n_items}), got {code}")
        mask, n_eligible = eligible_mask(self.n_items, np.array([code]), allowed)
        q = self._factors[code].astype(np.float64)
        return self._search(q, 0.0, k, sim, mask, n_eligible, allowed is not None)

    # ----------------------------------------------------------------------------------------------------
    # Internals
    # ----------------------------------------------------------------------------------------------------

    def _search(
        self,
        q: np.ndarray,
        bias_weight: float,
        k: int,
        sim: Similarity,
        mask: np.ndarray | None,
        n_eligible: int,
        has_allowed: bool,
        qq: float | None = None,
    ) -> SearchResult:
        """``qq``: ``q @ q`` when the caller has it."""
        k_eff = min(k, n_eligible)
        if k_eff == 0:
            return _EMPTY
        if n_eligible == self.n_items:
            mask = None  # e.g. a user with nothing rated: the plain search is the fastest
        space = self._spaces[sim]
        width = space.rows.shape[1]
        qf = np.empty((1, width), dtype=np.float32)
        if qq is None:
            qq = float(q @ q)
        if sim == "cosine":
            qnorm = math.sqrt(qq)  # what np.linalg.norm computes for a 1-d float64 vector
            if qnorm < COSINE_EPS:
                return self._all_zero(k_eff, mask)
            qf[0] = q / qnorm  # width == dim here (only a dim-0 model pads, and its query is empty)
            qf_norm = 1.0
        else:
            if bias_weight == 0.0 and not q.any():
                return self._all_zero(k_eff, mask)
            qf[0, : self.dim] = q
            qf[0, self.dim] = bias_weight
            qf_norm = math.sqrt(qq + bias_weight * bias_weight)
        # |float32 FAISS score - float64 score| <= (D + 2) u |q| max|row| to first order (dot product of D
        # terms, plus the rounding of the query and of the stored normalised rows); doubled for safety.
        margin = 2.0 * (width + 2) * _U32 * qf_norm * space.max_row_norm
        margin += 1e-30
        k_fetch = min(k_eff + _SLACK, n_eligible)
        _apply_threads()

        if space.hnsw is not None:
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(self.hnsw_ef_search, k_fetch)
            bitmap = sel = None
            if mask is not None:
                bitmap = np.packbits(mask, bitorder="little")
                sel = faiss.IDSelectorBitmap(bitmap)
                params.sel = sel
            dist, labels = space.hnsw.search(qf, k_fetch, params=params)
            del bitmap, sel  # only now may the selector and its bitmap go
            valid = labels[0] >= 0
            if int(valid.sum()) >= k_eff:
                codes = labels[0][valid].astype(np.int64)
                scores = self._scores(codes, q, bias_weight, sim)
                order = np.lexsort((codes, -scores))[:k_eff]
                return SearchResult(codes[order], scores[order].astype(np.float32))
            # too few found (heavy filtering): the exact flat search answers this query

        strategy = self.filter_strategy
        if strategy == "auto":
            if not has_allowed and self.n_items - n_eligible <= _SLACK:
                strategy = "overfetch"  # a handful excluded (similar: the movie itself): a plain search
            elif n_eligible * _SUBSET_SHARE_DEN <= self.n_items * _SUBSET_SHARE_NUM:
                strategy = "subset"
            else:
                strategy = "selector"
        elif strategy == "overfetch" and has_allowed:
            strategy = "selector"  # no bound on how many of an unfiltered top-k an allowed mask removes
        if mask is None:
            dist, labels = _flat_search(space.flat, qf, k_fetch, None)
        elif strategy == "overfetch":
            n_excluded = self.n_items - n_eligible
            dist, labels = _flat_search(space.flat, qf, min(k_fetch + n_excluded, self.n_items), None)
            keep = labels >= 0
            keep[keep] = mask[labels[keep]]
            dist, labels = dist[keep][:k_fetch], labels[keep][:k_fetch]
        elif strategy == "subset":
            ids = np.flatnonzero(mask).astype(np.int64)  # ascending: a forward, prefetch-friendly scan
            dist = np.empty((1, k_fetch), dtype=np.float32)
            labels = np.empty((1, k_fetch), dtype=np.int64)
            faiss.knn_inner_products_by_idx(
                faiss.swig_ptr(qf), faiss.swig_ptr(space.rows), faiss.swig_ptr(ids), qf.shape[1], 1,
                self.n_items, len(ids), k_fetch, faiss.swig_ptr(dist), faiss.swig_ptr(labels), 0,
            )  # fmt: skip
            del ids  # the raw pointers above were only used during the call
            dist, labels = dist[0], labels[0]
        else:
            dist, labels = _flat_search(space.flat, qf, k_fetch, space.selector_params(mask))
        valid = labels >= 0
        if valid.all():
            codes = labels
        else:
            dist, codes = dist[valid], labels[valid]
        scores = self._scores(codes, q, bias_weight, sim)
        order = np.lexsort((codes, -scores))
        codes, scores = codes[order], scores[order]
        if len(codes) < k_eff or (
            len(codes) < n_eligible and scores[k_eff - 1] <= float(np.minimum.reduce(dist)) + margin
        ):
            # An unfetched movie might tie with (or by float32 rounding beat) the k-th: exact pass.
            return self._exact(space, qf, q, bias_weight, sim, k_eff, mask, margin)
        return SearchResult(codes[:k_eff], scores[:k_eff].astype(np.float32))

    def _scores(self, codes: np.ndarray, q: np.ndarray, bias_weight: float, sim: Similarity) -> np.ndarray:
        """Float64 scores of ``codes`` from the stored float32 parameters (row-wise, so equal rows tie)."""
        v = self._factors[codes].astype(np.float64)
        dots = (v * q).sum(axis=1)
        if sim == "dot":
            if bias_weight == 1.0:
                dots += self._bias64[codes]
            elif bias_weight:
                dots += bias_weight * self._bias64[codes]
            return dots
        norms = self._norms[codes]
        out = np.zeros(len(codes), dtype=np.float64)
        ok = self._has_direction[codes]
        out[ok] = dots[ok] / (norms[ok] * float(np.linalg.norm(q)))
        return np.clip(out, -1.0, 1.0)

    def _exact(
        self,
        space: _Space,
        qf: np.ndarray,
        q: np.ndarray,
        bias_weight: float,
        sim: Similarity,
        k: int,
        mask: np.ndarray | None,
        margin: float,
    ) -> SearchResult:
        """Masked numpy pass: float32 scores select every possible top-k member, float64 decides."""
        s32 = space.rows @ qf[0]
        eligible = np.flatnonzero(mask) if mask is not None else np.arange(self.n_items)
        s_elig = s32[eligible]
        if k < len(eligible):
            kth = float(np.partition(s_elig, len(s_elig) - k)[len(s_elig) - k])
            # any true top-k movie has float32 score >= kth - 2 * margin (see the error bound above)
            eligible = eligible[s_elig >= kth - 2.0 * margin]
        codes = eligible.astype(np.int64)
        scores = self._scores(codes, q, bias_weight, sim)
        order = np.lexsort((codes, -scores))[:k]
        return SearchResult(codes[order], scores[order].astype(np.float32))

    def _all_zero(self, k: int, mask: np.ndarray | None) -> SearchResult:
        """Every eligible movie scores exactly 0: the first ``k`` eligible codes."""
        codes = (np.flatnonzero(mask)[:k] if mask is not None else np.arange(k)).astype(np.int64)
        return SearchResult(codes, np.zeros(len(codes), dtype=np.float32))


def _flat_search(
    index: faiss.IndexFlatIP, qf: np.ndarray, k: int, params: faiss.SearchParameters | None
) -> tuple[np.ndarray, np.ndarray]:
    """One query's ``(scores, labels)`` from a flat index: ``index.search`` without the Python wrapper's
    argument checks and conversions (a few microseconds per call; ``qf`` is already a contiguous
    float32 row of the index's width)."""
    dist = np.empty(k, dtype=np.float32)
    labels = np.empty(k, dtype=np.int64)
    index.search_c(1, faiss.swig_ptr(qf), k, faiss.swig_ptr(dist), faiss.swig_ptr(labels), params)
    return dist, labels


def _check_similarity(similarity: str) -> Similarity:
    if similarity not in ("dot", "cosine"):
        raise ValueError(f"similarity must be 'dot' or 'cosine', got {similarity!r}")
    return similarity  # type: ignore[return-value]
