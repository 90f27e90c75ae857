#!/usr/bin/env python3
"""Container health probe: GET http://127.0.0.1:$MOVIEREC_PORT<PATH> (PATH default /health); exit 0 on a 200.

Standard library only: the slim api image has no curl. The image's HEALTHCHECK probes /health (the process
answers); the compose api service probes /ready (a model is loaded and the store answers).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else "/health"
    url = f"http://127.0.0.1:{os.environ.get('MOVIEREC_PORT', '8000')}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            status = response.status
    except (urllib.error.URLError, OSError) as exc:  # HTTPError (e.g. 503 not ready) is a URLError
        sys.stderr.write(f"{url}: {exc}\n")
        return 1
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
