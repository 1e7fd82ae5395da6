#!/usr/bin/env bash
# Container-image benchmark: the export corpus (512 MiB mixed files) uploaded as one bundle, generated as an
# OCI image (compress=true) by Satchel, against `tar -cf - DIR | pigz -6 -p 2` on the same files in the same
# run (the cost of the image's one layer, which dominates), with the server's peak RSS. See bench/README.md.
#
#   bash bench/image.sh
#
# Knobs (environment): SIZE_MIB=512  RUNS=1 (median of N rounds)  SKIP_BUILD=0  KEEP_DATA=0
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${SIZE_MIB:-512}
RUNS=${RUNS:-1}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_DATA=${KEEP_DATA:-0}
OUT=bench/out
DATA=$OUT/data-image
BIN=target/release/satchel
USER_NAME=bench
PASSWORD=bench-pw
# tools, build, corpus, server (sets CORPUS, PORT, PID; stops the server on exit)
. bench/lib.sh

python3 bench/image_client.py --port "$PORT" --pid "$PID" --corpus "$CORPUS" --out "$OUT" \
    --user "$USER_NAME" --password "$PASSWORD" --runs "$RUNS"
