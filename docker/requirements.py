#!/usr/bin/env python3
"""Print the requirements of the package and of the given extras, one per line, read from pyproject.toml.

    python requirements.py pyproject.toml serve        # what the api image installs
    python requirements.py pyproject.toml train store  # what the trainer image installs

The Dockerfile installs these before it copies the source, so the dependency layer stays cached while only
the code changes; the package itself is then installed with --no-deps. Standard library only.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"{pyproject}: no extra {', '.join(unknown)} (known: {', '.join(optional)})")
    found: list[str] = []
    for req in [*project.get("dependencies", []), *(r for e in extras for r in optional[e])]:
        if req not in found:
            found.append(req)
    return found


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    sys.stdout.write("".join(f"{r}\n" for r in requirements(Path(sys.argv[1]), sys.argv[2:])))
