#!/usr/bin/env bash
# Export benchmark: a 512 MiB mixed corpus uploaded as one bundle's artifacts, exported by Satchel, against
# `tar -cf - DIR | pigz -6 -p 2` on the same files in the same run. See bench/README.md.
#
#   bash bench/export.sh
#
# Knobs (environment): SIZE_MIB=512  RUNS=1 (median of N rounds)  GZIP_REF=1 (also time tar | gzip -6)
#                      VERIFY=full|quick  SKIP_BUILD=0  KEEP_DATA=0 (keep bench/out/data afterwards)
#                      STRICT=0 (1: exit 2 when a goal is missed)  SATCHEL_WORKERS/SATCHEL_GZIP_LEVEL pass through
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${SIZE_MIB:-512}
RUNS=${RUNS:-1}
GZIP_REF=${GZIP_REF:-1}
VERIFY=${VERIFY:-full}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_DATA=${KEEP_DATA:-0}
STRICT=${STRICT:-0}
OUT=bench/out
DATA=$OUT/data
BIN=target/release/satchel
USER_NAME=bench
PASSWORD=bench-pw
# tools, build, corpus, server (sets CORPUS, PORT, PID; stops the server on exit)
. bench/lib.sh

# --- measure ----------------------------------------------------------------------------------------------
args=(--port "$PORT" --pid "$PID" --corpus "$CORPUS" --out "$OUT" --user "$USER_NAME" --password "$PASSWORD" --runs "$RUNS")
[ "$GZIP_REF" = 1 ] || args+=(--no-gzip)
[ "$VERIFY" = full ] || args+=(--quick-verify)
python3 bench/export_client.py "${args[@]}"

if [ "$STRICT" = 1 ]; then
    python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))["goals"]["all"] else 2)' "$OUT/export-results.json"
fi
