#!/usr/bin/env bash
# Issue 16's archive benchmark in one command: three corpus shapes (text-heavy, many small files in a mixed
# corpus and in a source tree, large incompressible) plus the container image, each against
# `tar | pigz -6 -p 2` and `cp` in the same run, with the server's peak RSS (VmHWM). See bench/README.md.
#
#   bash bench/perf.sh
#
# Knobs (environment): RUNS=3 (medians)  SHAPES="text mixed small large image"  SIZE_MIB=512 (text, mixed)
#                      SMALL_FILES=16000  RANDOM_MIB=3584 (the large file)  SKIP_BUILD=0  KEEP_DATA=0
#                      KEEP_CORPUS=1 (0: remove the generated corpora and the random file afterwards)
#                      STRICT=0 (1: exit 2 when a goal is missed)
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${SIZE_MIB:-512}
RUNS=${RUNS:-3}
SHAPES=${SHAPES:-"text mixed small large image"}
SMALL_FILES=${SMALL_FILES:-16000}
RANDOM_MIB=${RANDOM_MIB:-3584}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_DATA=${KEEP_DATA:-0}
KEEP_CORPUS=${KEEP_CORPUS:-1}
STRICT=${STRICT:-0}
OUT=bench/out
DATA=$OUT/data-perf
BIN=target/release/satchel
USER_NAME=bench
PASSWORD=bench-pw
# tools, build, the text corpus, server (sets CORPUS, PORT, PID; stops the server on exit)
. bench/lib.sh

args=(--port "$PORT" --pid "$PID" --out "$OUT" --user "$USER_NAME" --password "$PASSWORD" --runs "$RUNS"
      --shapes "$SHAPES" --text "$CORPUS")
MIXED=$OUT/corpus-mixed
[ "$SIZE_MIB" = 512 ] || MIXED=$OUT/corpus-mixed-$SIZE_MIB
SMALL=$OUT/corpus-small-$SMALL_FILES
RANDOM_FILE=$OUT/random-${RANDOM_MIB}m.bin
case " $SHAPES " in *" mixed "*)
    log "corpus: $MIXED"; python3 bench/make_corpus_mixed.py "$MIXED" --size-mib "$SIZE_MIB"; args+=(--mixed "$MIXED");;
esac
case " $SHAPES " in *" small "*)
    log "corpus: $SMALL"; python3 bench/make_corpus_small.py "$SMALL" --files "$SMALL_FILES"; args+=(--small "$SMALL");;
esac
case " $SHAPES " in *" large "*)
    if [ "$(stat -c %s "$RANDOM_FILE" 2>/dev/null || echo 0)" != $((RANDOM_MIB * 1048576)) ]; then
        log "random file: $RANDOM_FILE ($RANDOM_MIB MiB)"
        head -c $((RANDOM_MIB * 1048576)) /dev/urandom > "$RANDOM_FILE"
    fi
    args+=(--random-file "$RANDOM_FILE");;
esac
[ "$STRICT" = 1 ] && args+=(--strict)

rc=0
python3 bench/perf_client.py "${args[@]}" || rc=$?
if [ "$KEEP_CORPUS" = 0 ]; then
    rm -rf "$MIXED" "$SMALL" "$RANDOM_FILE"
fi
exit $rc
