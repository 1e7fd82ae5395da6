#!/usr/bin/env bash
# Import benchmark: a bundle archive of the 512 MiB bench corpus (made once per shape with tar | pigz -6 -p 2)
# imported by Satchel (upload + job to complete), against `tar -xzf archive -C dir && sync` on the same archive
# in the same run. Two corpus shapes by default: make_corpus.py's (the one the export was tuned on) and
# make_corpus_mixed.py's (40% random, 40% text, 20% small files of 1-100 KiB, in folders). See bench/README.md.
#
#   bash bench/import.sh
#
# Knobs (environment): SIZE_MIB=512  RUNS=3 (median of N rounds)  SHAPES="default mixed"  POLL=0.05
#                      SKIP_BUILD=0  KEEP_DATA=0 (keep bench/out/data)  KEEP_ARCHIVE=0  KEEP_CORPUS=1
#                      PERF=0 (1: one extra import under perf record, top of the report in the table)
#                      SETTLE=0 (seconds to wait after each delete before the next timed step)
#                      STRICT=0 (1: exit 2 when a goal is missed)  SATCHEL_* pass through to `satchel serve`
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${SIZE_MIB:-512}
RUNS=${RUNS:-3}
SHAPES=${SHAPES:-default mixed}
POLL=${POLL:-0.05}
PERF=${PERF:-0}
SETTLE=${SETTLE:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_DATA=${KEEP_DATA:-0}
KEEP_ARCHIVE=${KEEP_ARCHIVE:-0}
KEEP_CORPUS=${KEEP_CORPUS:-1}
STRICT=${STRICT:-0}
OUT=bench/out
DATA=$OUT/data
BIN=target/release/satchel
USER_NAME=bench
PASSWORD=bench-pw
# tools, build, the default corpus, server (sets CORPUS, PORT, PID; stops the server on exit)
. bench/lib.sh

MIXED=$OUT/corpus-mixed
[ "$SIZE_MIB" = 512 ] || MIXED=$OUT/corpus-mixed-$SIZE_MIB

rm -f "$OUT/import.txt"
{
    echo "# bash bench/import.sh  ($(date -u +%Y-%m-%dT%H:%MZ); $(nproc) CPUs; $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- crates 2>/dev/null || echo '+changes'); load before: $(cut -d' ' -f1-3 /proc/loadavg))"
} > "$OUT/import.txt"
for shape in $SHAPES; do
    case $shape in
        default) dir=$CORPUS ;;
        mixed)
            log "corpus: $MIXED (${SIZE_MIB} MiB, mixed shape)"
            python3 bench/make_corpus_mixed.py "$MIXED" --size-mib "$SIZE_MIB"
            dir=$MIXED ;;
        *) echo "unknown shape $shape (default, mixed)" >&2; exit 1 ;;
    esac
    args=(--port "$PORT" --pid "$PID" --corpus "$dir" --label "$shape" --out "$OUT" --user "$USER_NAME"
          --password "$PASSWORD" --runs "$RUNS" --poll "$POLL" --settle "$SETTLE")
    [ "$KEEP_ARCHIVE" = 1 ] && args+=(--keep-archive)
    [ "$PERF" = 1 ] && args+=(--perf)
    python3 bench/import_client.py "${args[@]}"
    { echo; cat "$OUT/import-$shape.txt"; } >> "$OUT/import.txt"
    if [ "$KEEP_CORPUS" != 1 ] && [ "$shape" = mixed ]; then rm -rf "$MIXED"; fi
done
echo "server VmHWM at the end (whole process life): $(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' /proc/$PID/status)" >> "$OUT/import.txt"
log "table: $OUT/import.txt"

if [ "$STRICT" = 1 ]; then
    for shape in $SHAPES; do
        python3 -c 'import json,sys; g=json.load(open(sys.argv[1]))["goals"]; sys.exit(0 if all(g.values()) else 2)' "$OUT/import-$shape.json"
    done
fi
