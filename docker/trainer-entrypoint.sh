#!/usr/bin/env bash
# Entry point of the `trainer` image and compose service: a one-shot job, wiring MOVIEREC_* to `movierec`.
#   1. `movierec db load --if-empty`: load the MovieLens release $MOVIEREC_DATASET (default ml-latest-small;
#      a local copy named by $MOVIEREC_DATA wins over the download) into the store at
#      $MOVIEREC_DATABASE_URL, only when the store holds no ratings yet;
#   2. `movierec train --from-db`: train on the store's ratings (API-posted ones included) on the GPU when
#      the container has one, else the CPU (MOVIEREC_DEVICE=auto), and publish a new version under
#      $MOVIEREC_ARTIFACTS_DIR, which a running API picks up by itself.
# Extra arguments go to `movierec train`: `docker compose run --rm trainer --epochs 10`.
set -euo pipefail

movierec db load --if-empty --dataset "${MOVIEREC_DATASET:-ml-latest-small}"
exec movierec train --from-db "$@"
