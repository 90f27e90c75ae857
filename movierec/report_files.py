"""Where a version's training report lives: ``ROOT/reports/<version>/``, beside the versions, not in them.

Layout under an artifacts root::

    ROOT/
      latest
      20240501T123456.123456Z-mf-1a2b3c/        the version (immutable, checksummed: movierec.artifacts)
      reports/
        20240501T123456.123456Z-mf-1a2b3c/
          report.html                           self-contained: every PNG embedded as a data: URI
          loss_curves.png  rating_distribution.png  embedding_norms.png  embedding_pca.png
                                                the same figures as files, to attach or compare
          test_predictions.json                 histograms of predicted and true test ratings (report input)

Why a sibling folder rather than files inside the version folder:

* A version is immutable once published and :func:`movierec.artifacts.publish` writes only arrays and the
  manifest (it takes no extra files). ``movierec report`` must be able to redraw the report of an old
  version (new plots, a fixed bug) without touching the folder whose checksums the service verified, and
  a report that fails to draw must never hold back or alter a publish.
* Nothing else under the root is confused by it: versions are recognised by their name pattern and the
  temporary-folder cleanup only looks at ``.tmp-*`` entries at the top level.
* The service finds the report of the version it serves from that version's folder alone
  (:func:`report_html`), without matplotlib or the trainer: it only reads the finished HTML file.

Removing a version by hand leaves its report behind; delete ``reports/<version>`` with it.

This module is stdlib only, so the service can import it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["REPORTS_DIR", "REPORT_HTML", "TEST_PREDICTIONS", "report_dir", "report_html", "predictions_file"]

REPORTS_DIR = "reports"
REPORT_HTML = "report.html"
TEST_PREDICTIONS = "test_predictions.json"


def report_dir(version_dir: str | os.PathLike[str]) -> Path:
    """``ROOT/reports/<version>`` for the version folder ``ROOT/<version>``."""
    version_dir = Path(version_dir)
    return version_dir.parent / REPORTS_DIR / version_dir.name


def report_html(version_dir: str | os.PathLike[str]) -> Path:
    """The report page of a version (it may not exist: reports are optional)."""
    return report_dir(version_dir) / REPORT_HTML


def predictions_file(version_dir: str | os.PathLike[str]) -> Path:
    """The saved test-split rating histograms of a version: the one report input the artifact lacks."""
    return report_dir(version_dir) / TEST_PREDICTIONS
