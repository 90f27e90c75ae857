#!/usr/bin/env bash
# Entry point of the `api` image and compose service: `movierec serve` migrates the store's schema, then runs
# uvicorn on the latest artifact version. Settings are MOVIEREC_* variables (service/config.py): HOST
# (0.0.0.0 in the image), PORT, WORKERS, ARTIFACTS_DIR, DATABASE_URL, RELOAD_INTERVAL_S, ...
# Extra arguments go to `movierec serve`.
set -euo pipefail

exec movierec serve "$@"
