#!/usr/bin/env bash
# Takeout benchmark: a corpus uploaded as three bundles, taken out (include=bundles) as zip and as tar.gz,
# against `zip -r -6` and `tar | pigz -6 -p 2` on the same files in the same run. Two corpus shapes: the
# export benchmark's (make_corpus.py) and the mixed one (make_corpus_mixed.py: 40% random, 40% text, 20% in
# small files, in folders). See bench/README.md.
#
#   bash bench/takeout.sh
#
# Knobs (environment): SIZE_MIB=512  RUNS=3  SHAPES="default mixed"  SKIP_BUILD=0  KEEP_DATA=0
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${SIZE_MIB:-512}
RUNS=${RUNS:-3}
SHAPES=${SHAPES:-default mixed}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_DATA=${KEEP_DATA:-0}
OUT=bench/out
DATA=$OUT/data
BIN=target/release/satchel
USER_NAME=bench
PASSWORD=bench-pw
command -v zip >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq zip >/dev/null; }
# tools, build, the default corpus, server (sets CORPUS, PORT, PID; stops the server on exit)
. bench/lib.sh

MIXED=$OUT/corpus-mixed
[ "$SIZE_MIB" = 512 ] || MIXED=$OUT/corpus-mixed-$SIZE_MIB
first=1
for shape in $SHAPES; do
    case $shape in
        default) dir=$CORPUS ;;
        mixed)
            log "corpus: $MIXED (${SIZE_MIB} MiB, mixed shape)"
            python3 bench/make_corpus_mixed.py "$MIXED" --size-mib "$SIZE_MIB"
            dir=$MIXED ;;
        *) echo "unknown shape $shape (default, mixed)" >&2; exit 1 ;;
    esac
    if [ $first = 0 ]; then
        # A fresh user per shape, so each takeout holds only its own corpus.
        USER_NAME=bench-$shape
        printf '%s\n' "$PASSWORD" | "$BIN" admin --data-dir "$DATA" user add "$USER_NAME" --password-stdin --entitlement software_upload
    fi
    first=0
    python3 bench/takeout_client.py --port "$PORT" --pid "$PID" --corpus "$dir" --shape "$shape" --out "$OUT" \
        --user "$USER_NAME" --password "$PASSWORD" --runs "$RUNS" | tee "$OUT/takeout-$shape.txt"
done
