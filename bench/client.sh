#!/usr/bin/env bash
# Client benchmark (issue 15): the `satchel` client against curl, in the same run, on a release server.
#   1. cold start to the archive of a small bundle: `satchel export bundle` against a shell loop of curl
#      doing the same requests (POST the export, poll its status, GET the download);
#   2. download speed of a large archive: `satchel exports download` against `curl -o`.
#
#   bash bench/client.sh
#
# Knobs (environment): RUNS=15 (small-bundle rounds)  BIG_MIB=1024 (random file in the large bundle)
#                      DL_RUNS=3  SKIP_BUILD=0  KEEP_DATA=0
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-15}
BIG_MIB=${BIG_MIB:-1024}
DL_RUNS=${DL_RUNS:-3}
SIZE_MIB=16   # lib.sh's corpus, unused here beyond its set-up
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_DATA=${KEEP_DATA:-0}
OUT=bench/out
DATA=$OUT/data-client
BIN=target/release/satchel
USER_NAME=bench
PASSWORD=bench-pw
# tools, build, server (sets PORT, PID; stops the server on exit)
. bench/lib.sh

python3 bench/client_bench.py --bin "$BIN" --port "$PORT" --user "$USER_NAME" --password "$PASSWORD" \
    --out "$OUT" --runs "$RUNS" --big-mib "$BIG_MIB" --dl-runs "$DL_RUNS"
