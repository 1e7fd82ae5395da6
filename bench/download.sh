#!/usr/bin/env bash
# Download benchmark: a ~4 GiB export archive (the large shape of bench/perf.sh: a random file plus the
# text corpus) downloaded from Satchel and, as the same file, from nginx with sendfile, alternating, one
# download at a time and four at once. See bench/README.md.
#
#   bash bench/download.sh
#
# Knobs (environment): RUNS=5  RANDOM_MIB=3584  SKIP_BUILD=0  KEEP_DATA=0
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
RANDOM_MIB=${RANDOM_MIB:-3584}
SIZE_MIB=512 SKIP_BUILD=${SKIP_BUILD:-0} KEEP_DATA=${KEEP_DATA:-0}
OUT=bench/out DATA=bench/out/download-data BIN=target/release/satchel USER_NAME=bench PASSWORD=bench-pw
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
. bench/lib.sh
RANDOM_FILE=$OUT/random-${RANDOM_MIB}m.bin
if [ ! -f "$RANDOM_FILE" ] || [ "$(stat -c %s "$RANDOM_FILE")" != $((RANDOM_MIB * 1048576)) ]; then
    log "random file: $RANDOM_FILE ($RANDOM_MIB MiB)"
    head -c $((RANDOM_MIB * 1048576)) /dev/urandom > "$RANDOM_FILE"
fi
python3 bench/download_client.py --port "$PORT" --pid "$PID" --data "$DATA" --corpus "$CORPUS" \
    --random-file "$RANDOM_FILE" --runs "$RUNS" --nginx "$NGINX" --out "$OUT" | tee "$OUT/download.txt"
