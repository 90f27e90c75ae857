"""The training report: plots and tables that say whether a trained model is any good, drawn from its
artifact folder alone.

Contents: loss and RMSE per epoch (the manifest's ``metrics["history"]``), the test metrics beside the
baselines (``metrics["test"]``), predicted against true rating distributions on the test split, movie
embedding norms against popularity, a 2-D PCA of the movie embeddings coloured by genre, and the nearest
neighbours of a few well-known movies by dot product and by cosine.

Where it is written, and why there: ``ROOT/reports/<version>/`` (see :mod:`movierec.report_files`).

Why from the artifact alone: ``movierec report`` must redraw the report of any published version, long
after the training process is gone, so everything comes from the version folder. The one exception is the
test split's predictions, which no artifact holds (and should not: the artifact is the serving contract):
the trainer saves their histograms (a few hundred numbers, not the arrays) as
``reports/<version>/test_predictions.json`` and the report draws that section only when the file exists.

matplotlib is imported inside :func:`write_report` (Agg canvas, never pyplot and never a display): the
trainer image has it (``train`` extra), the service image does not and never imports this module; it only
serves the finished ``report.html``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from movierec import artifacts
from movierec.report_files import REPORT_HTML, predictions_file, report_dir

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "ReportError",
    "FIGURE_FILES",
    "SHOWCASE_TITLES",
    "rating_histogram",
    "save_test_predictions",
    "showcase_movies",
    "top_neighbours",
    "write_report",
]

log = logging.getLogger(__name__)

FIGURE_FILES: dict[str, str] = {
    "loss": "loss_curves.png",
    "distribution": "rating_distribution.png",
    "norms": "embedding_norms.png",
    "pca": "embedding_pca.png",
}
"""Every PNG a full report writes (a section without its data, e.g. no test split, writes none)."""

SHOWCASE_TITLES: tuple[str, ...] = ("Star Wars", "Toy Story", "Pulp Fiction", "Fargo")
"""Movies everyone can judge neighbours of; used when the catalogue has them (title prefix match)."""

_N_SHOWCASE = 4
_N_NEIGHBOURS = 10
_N_LABELLED = 5
_PCA_MAX_POINTS = 20_000  # a scatter of more is a solid blob and slow to draw
_PREDICTED_BINS = 40


class ReportError(Exception):
    """The report cannot be drawn or written; the message names the version and the cause."""


# --------------------------------------------------------------------------------------------------------
# The one input the artifact lacks: test-split rating histograms
# --------------------------------------------------------------------------------------------------------


def rating_histogram(true: np.ndarray, predicted: np.ndarray, low: float, high: float, step: float) -> dict[str, Any]:
    """Histograms of true and predicted test ratings, as plain JSON data.

    True ratings lie on the scale's grid, so they get one bin per allowed value; predictions are
    continuous, so they get finer bins over ``[low, high]`` (clipped: served predictions are too).
    Counts, not arrays: a test split of millions of ratings becomes a few hundred numbers.
    """
    true = np.asarray(true, dtype=np.float64)
    predicted = np.clip(np.asarray(predicted, dtype=np.float64), low, high)
    if true.shape != predicted.shape:
        raise ValueError(f"{len(true)} true ratings but {len(predicted)} predictions")
    n_values = int(round((high - low) / step)) + 1
    true_edges = low - step / 2 + step * np.arange(n_values + 1)
    pred_edges = np.linspace(low, high, _PREDICTED_BINS + 1)
    true_counts, _ = np.histogram(true, bins=true_edges)
    pred_counts, _ = np.histogram(predicted, bins=pred_edges)
    return {
        "n": int(len(true)),
        "true_mean": float(true.mean()) if len(true) else None,
        "predicted_mean": float(predicted.mean()) if len(predicted) else None,
        "true": {"edges": true_edges.tolist(), "counts": true_counts.tolist()},
        "predicted": {"edges": pred_edges.tolist(), "counts": pred_counts.tolist()},
    }


def save_test_predictions(version_dir: str | os.PathLike[str], histogram: dict[str, Any]) -> Path:
    """Write a version's test histograms (see :func:`rating_histogram`) where the report reads them."""
    path = predictions_file(version_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    _replace_file(path, (json.dumps(histogram, allow_nan=False) + "\n").encode())
    return path


def _load_test_predictions(version_dir: Path) -> dict[str, Any] | None:
    path = predictions_file(version_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"{path}: cannot read the saved test predictions: {e}") from e
    try:
        for key in ("true", "predicted"):
            edges, counts = data[key]["edges"], data[key]["counts"]
            if len(edges) != len(counts) + 1:
                raise ValueError(f"{key}: {len(edges)} edges for {len(counts)} counts")
        int(data["n"])
    except (KeyError, TypeError, ValueError) as e:
        raise ReportError(f"{path}: not a test predictions histogram ({e})") from e
    return data


# --------------------------------------------------------------------------------------------------------
# Numbers behind the sections (numpy only: testable without drawing)
# --------------------------------------------------------------------------------------------------------


def rating_counts(art: artifacts.ModelArtifact) -> np.ndarray:
    """Training ratings per movie: the artifact's ``item_rating_count``, else counted from the rated CSR
    (artifacts published before the count was exported)."""
    counts = art.arrays.get("item_rating_count")
    if counts is not None:
        return np.asarray(counts, dtype=np.int64)
    return np.bincount(np.asarray(art.arrays["rated_indices"]), minlength=art.n_items).astype(np.int64)


def showcase_movies(titles: np.ndarray, counts: np.ndarray, n: int = _N_SHOWCASE) -> list[int]:
    """Codes of the movies whose neighbours the report lists: the well-known :data:`SHOWCASE_TITLES`
    present in the catalogue (the most rated match of each prefix, so "Toy Story" is not "Toy Story 3"),
    then the most rated movies up to ``n``. Why: neighbours are only judgeable for movies one knows."""
    lowered = np.char.lower(np.asarray(titles).astype(str))
    chosen: list[int] = []
    for name in SHOWCASE_TITLES:
        matches = np.flatnonzero(np.char.startswith(lowered, name.lower()))
        matches = np.asarray([m for m in matches if m not in chosen], dtype=np.int64)
        if len(matches) and len(chosen) < n:
            chosen.append(int(matches[np.lexsort((matches, -counts[matches]))[0]]))
    for code in np.lexsort((np.arange(len(counts)), -counts)):
        if len(chosen) >= n:
            break
        if int(code) not in chosen:
            chosen.append(int(code))
    return chosen


def top_neighbours(factors: np.ndarray, code: int, k: int, cosine: bool) -> list[tuple[int, float]]:
    """The ``k`` movies nearest to ``code`` by dot product or cosine of the embeddings, best first (ties by
    code), the movie itself excluded."""
    v = np.asarray(factors, dtype=np.float64)
    scores = v @ v[code]
    if cosine:
        norms = np.linalg.norm(v, axis=1)
        scores = scores / np.maximum(norms * norms[code], 1e-30)
    scores[code] = -np.inf
    k = min(k, len(scores) - 1)
    order = np.lexsort((np.arange(len(scores)), -scores))[:k]
    return [(int(c), float(scores[c])) for c in order]


def primary_genres(genres: np.ndarray) -> np.ndarray:
    """Each movie's primary genre index (-1 when it has none): its rarest genre in the catalogue.

    Why the rarest: the artifact keeps genres as a multi-hot matrix (the source's order is gone), and the
    most specific label is the informative one ("Drama|Film-Noir" reads as Film-Noir, not as one more
    drama in a plot where half the catalogue is drama).
    """
    genres = np.asarray(genres, dtype=bool)
    if genres.shape[1] == 0:
        return np.full(genres.shape[0], -1, dtype=np.int64)
    frequency = genres.sum(axis=0).astype(np.float64)
    weighted = np.where(genres, frequency[None, :], np.inf)
    primary = np.argmin(weighted, axis=1).astype(np.int64)
    primary[~genres.any(axis=1)] = -1
    return primary


def pca_2d(factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first two principal components of the rows (numpy SVD) and their shares of the variance."""
    x = np.asarray(factors, dtype=np.float64)
    x = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    total = float((s**2).sum())
    share = (s[:2] ** 2) / total if total > 0 else np.zeros(2)
    return x @ vt[:2].T, share


# --------------------------------------------------------------------------------------------------------
# Figures (matplotlib's object API on an Agg canvas: no pyplot state, no display)
# --------------------------------------------------------------------------------------------------------


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _series(history: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = [(h["epoch"], h[key]) for h in history if h.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def loss_figure(history: Sequence[dict[str, Any]], best_epoch: int | None) -> bytes:
    """Train and validation loss (left) and RMSE (right) per epoch; the best epoch dashed."""
    from matplotlib.ticker import MaxNLocator

    fig = _new_figure(10, 3.8)
    for ax, what in zip(fig.subplots(1, 2), ("loss", "rmse"), strict=True):
        for split, style in (("train", "-o"), ("valid", "-s")):
            x, y = _series(history, f"{split}_{what}")
            if x:
                ax.plot(x, y, style, markersize=3, label=f"{split} {what}")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best epoch ({best_epoch})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(what.upper() if what == "rmse" else what)
        ax.set_title(f"{what.upper() if what == 'rmse' else what.capitalize()} per epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    return _png(fig)


def distribution_figure(hist: dict[str, Any]) -> bytes:
    """True and predicted test ratings as densities (the bins differ in width, so counts would mislead)."""
    fig = _new_figure(7, 4)
    ax = fig.subplots()
    n = max(int(hist["n"]), 1)
    for key, label, kw in (
        ("true", "true ratings", {"alpha": 0.45, "color": "tab:blue"}),
        ("predicted", "predicted ratings", {"alpha": 0.6, "color": "tab:orange"}),
    ):
        edges = np.asarray(hist[key]["edges"], dtype=np.float64)
        counts = np.asarray(hist[key]["counts"], dtype=np.float64)
        widths = np.diff(edges)
        mean = hist.get(f"{key}_mean")
        suffix = f" (mean {mean:.2f})" if mean is not None else ""
        ax.bar(edges[:-1], counts / (n * widths), width=widths, align="edge", label=label + suffix, **kw)
    ax.set_xlabel("rating")
    ax.set_ylabel("density")
    ax.set_title(f"Test ratings: predicted vs true (n = {hist['n']:,})")
    ax.legend()
    return _png(fig)


def norms_figure(norms: np.ndarray, counts: np.ndarray, titles: np.ndarray) -> bytes:
    """Embedding norm against training ratings per movie (log x), the 5 most and 5 least rated labelled.

    Movies without a training rating cannot sit on a log axis; the title says how many were left out.
    """
    fig = _new_figure(9, 5.5)
    ax = fig.subplots()
    rated = np.flatnonzero(counts > 0)
    ax.scatter(counts[rated], norms[rated], s=6, alpha=0.4, linewidths=0)
    ax.set_xscale("log")
    ax.set_xlabel("training ratings (log scale)")
    ax.set_ylabel("embedding L2 norm")
    left_out = len(counts) - len(rated)
    ax.set_title("Movie embedding norm vs popularity" + (f" ({left_out} unrated movies not shown)" if left_out else ""))
    ax.grid(alpha=0.3, which="both")
    by_count = rated[np.lexsort((rated, counts[rated]))]  # least rated first, ties by code
    most = by_count[::-1][:_N_LABELLED]
    least = [c for c in by_count[:_N_LABELLED] if c not in most]
    for rank, code in enumerate([*most, *least]):
        title = str(titles[code])
        title = title if len(title) <= 32 else title[:31] + "…"
        is_most = rank < len(most)
        ax.annotate(
            title,
            (counts[code], norms[code]),
            xytext=(-6 if is_most else 6, 10 - 9 * (rank % _N_LABELLED)),  # staggered: ties share a point
            textcoords="offset points",
            ha="right" if is_most else "left",
            fontsize=7,
            color="tab:red" if is_most else "tab:green",
            arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.5},
        )
    return _png(fig)


def pca_figure(factors: np.ndarray, genres: np.ndarray, genre_names: Sequence[str]) -> bytes:
    """The movie embeddings projected on their first two principal components, coloured by primary genre
    (see :func:`primary_genres`); at most ``_PCA_MAX_POINTS`` movies (a fixed random sample) are drawn."""
    import matplotlib

    points, share = pca_2d(factors)
    primary = primary_genres(genres)
    shown = np.arange(len(points))
    if len(shown) > _PCA_MAX_POINTS:
        shown = np.sort(np.random.default_rng(0).choice(len(points), _PCA_MAX_POINTS, replace=False))
    fig = _new_figure(9, 6)
    ax = fig.subplots()
    present: list[int] = np.unique(primary[shown]).tolist()
    cmap = matplotlib.colormaps["tab20"]
    for i, g in enumerate(present):
        sel = shown[primary[shown] == g]
        name = genre_names[g] if g >= 0 else "(no genre)"
        color = "lightgrey" if g < 0 else cmap(i % 20)
        ax.scatter(points[sel, 0], points[sel, 1], s=8, alpha=0.7, linewidths=0, color=color, label=name)
    ax.set_xlabel(f"PC1 ({share[0]:.0%} of variance)")
    ax.set_ylabel(f"PC2 ({share[1]:.0%} of variance)")
    sample = f", {len(shown):,} of {len(points):,} movies" if len(shown) < len(points) else ""
    ax.set_title(f"Movie embeddings, PCA to 2-D, by primary genre{sample}")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, markerscale=2, frameon=False)
    return _png(fig)


# --------------------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------------------

_METRIC_ORDER = ("rmse", "mae", "mse", "accuracy", "f1_weighted")

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; } th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.model td { font-weight: bold; }
img { max-width: 100%; } .note { color: #666; } dl { display: grid; grid-template-columns: max-content 1fr; }
dt { font-weight: bold; padding-right: 1em; }
.neighbours { display: inline-block; vertical-align: top; margin-right: 2em; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return "—" if not math.isfinite(value) else f"{value:.4f}"
    return _esc(value)


def metrics_table_html(test: dict[str, dict[str, Any]]) -> str:
    """Rows: the model and each baseline; columns: every metric any row has (rating metrics first)."""
    keys: list[str] = []
    for row in test.values():
        keys.extend(k for k in row if k not in keys)
    keys = [k for k in _METRIC_ORDER if k in keys] + sorted(k for k in keys if k not in _METRIC_ORDER)
    head = "".join(f"<th>{_esc(k)}</th>" for k in keys)
    rows = []
    for name, row in test.items():
        cells = "".join(f'<td class="num">{_number(row.get(k))}</td>' for k in keys)
        cls = ' class="model"' if name == "model" else ""
        rows.append(f"<tr{cls}><td>{_esc(name)}</td>{cells}</tr>")
    return f"<table><thead><tr><th>model</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def neighbours_html(art: artifacts.ModelArtifact, counts: np.ndarray) -> str:
    """One table per showcase movie: its top-10 neighbours by dot product and by cosine, side by side."""
    titles = art.item_titles
    parts = []
    for code in showcase_movies(titles, counts):
        dot = top_neighbours(art.item_factors, code, _N_NEIGHBOURS, cosine=False)
        cos = top_neighbours(art.item_factors, code, _N_NEIGHBOURS, cosine=True)
        rows = "".join(
            f"<tr><td class='num'>{i + 1}</td><td>{_esc(titles[d])}</td><td class='num'>{ds:.3f}</td>"
            f"<td>{_esc(titles[c])}</td><td class='num'>{cs:.3f}</td></tr>"
            for i, ((d, ds), (c, cs)) in enumerate(zip(dot, cos, strict=True))
        )
        parts.append(
            f"<div class='neighbours'><h3>{_esc(titles[code])} <span class='note'>({int(counts[code]):,} "
            f"ratings)</span></h3><table><thead><tr><th>#</th><th>by dot</th><th>score</th><th>by cosine</th>"
            f"<th>score</th></tr></thead><tbody>{rows}</tbody></table></div>"
        )
    return "".join(parts)


def _figure_html(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(alt)}">'
        f"<figcaption class='note'>{_esc(caption)}</figcaption></figure>"
    )


def _note(text: str) -> str:
    return f"<p class='note'>{_esc(text)}</p>"


# --------------------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Section:
    title: str
    body: str


def write_report(path: str | os.PathLike[str]) -> Path:
    """Draw the report of a version folder (or of an artifacts root's ``latest``) and return its HTML path.

    Writes every figure's PNG and ``report.html`` into ``ROOT/reports/<version>/``, each file replaced
    atomically (the HTML last), so a reader never sees a half-written page. Raises
    :class:`movierec.artifacts.ArtifactError` when ``path`` is not a valid artifact, and
    :class:`ReportError` when drawing or writing fails.
    """
    art = artifacts.load_version(path)
    out = report_dir(art.path)
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise ReportError(f"{art.version}: the report needs matplotlib (pip install 'movierec[train]')") from e
    try:
        figures, sections = _draw(art)
        out.mkdir(parents=True, exist_ok=True)
        for name, png in figures.items():
            _replace_file(out / name, png)
        page = _page(art, sections)
        target = out / REPORT_HTML
        _replace_file(target, page.encode("utf-8"))
    except ReportError:
        raise
    except Exception as e:  # matplotlib and numpy raise many types; the caller needs one, naming the version
        raise ReportError(f"{art.version}: drawing the report failed: {type(e).__name__}: {e}") from e
    log.info("wrote the report of %s to %s", art.version, target)
    return target


def _draw(art: artifacts.ModelArtifact) -> tuple[dict[str, bytes], list[_Section]]:
    """Every figure (file name -> PNG) and the page's sections, in order."""
    metrics = art.manifest.metrics
    figures: dict[str, bytes] = {}
    sections: list[_Section] = []

    def add_figure(key: str, title: str, png: bytes, caption: str) -> None:
        figures[FIGURE_FILES[key]] = png
        sections.append(_Section(title, _figure_html(png, title, caption)))

    history = metrics.get("history") or []
    if history:
        add_figure(
            "loss", "Training curves", loss_figure(history, metrics.get("best_epoch")),
            "Loss and RMSE per epoch on the training data and, when a validation split was held out, on it.",
        )  # fmt: skip
    else:
        sections.append(_Section("Training curves", _note("No per-epoch history was recorded for this model.")))

    test = metrics.get("test")
    if test:
        sections.append(_Section("Test metrics against the baselines", metrics_table_html(test)))
    else:
        sections.append(_Section("Test metrics against the baselines", _note("Trained without a test split.")))

    hist = _load_test_predictions(art.path)
    if hist is not None:
        add_figure(
            "distribution", "Predicted vs true ratings", distribution_figure(hist),
            "A model that predicts close to the mean shows a narrow predicted distribution.",
        )  # fmt: skip
    else:
        sections.append(
            _Section("Predicted vs true ratings", _note("No saved test predictions (no test split, or not saved)."))
        )

    counts = rating_counts(art)
    if art.dim == 0:
        sections.append(_Section("Movie embeddings", _note("This model has no embeddings (dim 0).")))
        return figures, sections
    norms = np.linalg.norm(np.asarray(art.item_factors, dtype=np.float64), axis=1)
    add_figure(
        "norms", "Embedding norm vs popularity", norms_figure(norms, counts, art.item_titles),
        f"Red: the {_N_LABELLED} most rated movies; green: the {_N_LABELLED} least rated.",
    )  # fmt: skip
    if art.dim >= 2 and art.n_items >= 3:
        add_figure(
            "pca", "Movie embeddings by genre", pca_figure(art.item_factors, art.item_genres, art.genre_names),
            "Primary genre: each movie's rarest genre in the catalogue (the most specific label).",
        )  # fmt: skip
    else:
        sections.append(_Section("Movie embeddings by genre", _note("A 2-D projection needs at least 2 dims.")))
    sections.append(_Section("Nearest neighbours", neighbours_html(art, counts)))
    return figures, sections


def _page(art: artifacts.ModelArtifact, sections: Sequence[_Section]) -> str:
    m = art.manifest
    facts = {
        "version": m.version,
        "model": m.model_kind,
        "trained at": m.created_at.isoformat(),
        "data": f"{m.dataset.source} ({m.dataset.n_ratings:,} ratings, {m.dims.n_users:,} users, "
        f"{m.dims.n_items:,} movies)",
        "dims": m.dims.dim,
        "epochs run": m.metrics.get("epochs_run", "—"),
        "split": m.metrics.get("split", "—"),
        "report drawn at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    dl = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in facts.items())
    body = "".join(f"<section><h2>{_esc(s.title)}</h2>{s.body}</section>" for s in sections)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>movierec report {_esc(m.version)}</title><style>{_CSS}</style></head>"
        f"<body><h1>Training report: {_esc(m.model_kind)} {_esc(m.version)}</h1><dl>{dl}</dl>{body}</body></html>\n"
    )


def _replace_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a unique temporary name beside ``path`` and ``os.replace`` it into place."""
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
