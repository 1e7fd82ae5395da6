#!/usr/bin/env bash
# CloudAPI image benchmark: a SIZE_MIB (default 2048) image file uploaded, exported with ExportImage and
# downloaded again from its /stor path, each against `cp` of the same file on the same disk, in the same run.
# Requests are signed like sdc tools sign them (rsa-sha256 over Date), here with openssl.
#
#   bash bench/image-export.sh            # knobs: SIZE_MIB=2048 RUNS=3 SKIP_BUILD=0 KEEP_DATA=0
#
# Prints one table: median seconds per step, ratio = cp time / Satchel time (>= 1 means faster than cp),
# and the server's peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${SIZE_MIB:-2048}
RUNS=${RUNS:-3}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_DATA=${KEEP_DATA:-0}
OUT=bench/out
DATA=$OUT/image-data
BIN=target/release/satchel
IMG=$OUT/image-$SIZE_MIB.bin
log() { printf '==> %s\n' "$*" >&2; }
for t in curl openssl ssh-keygen sha1sum cargo; do command -v $t >/dev/null || { echo "missing tool: $t" >&2; exit 1; }; done
mkdir -p "$OUT"

[ "$SKIP_BUILD" = 1 ] || { log "cargo build --release -p satchel"; cargo build --release -q -p satchel; }

if [ ! -f "$IMG" ] || [ "$(stat -c %s "$IMG")" != $((SIZE_MIB * 1048576)) ]; then
    log "making a $SIZE_MIB MiB image file (random bytes: an image file is already compressed)"
    head -c $((SIZE_MIB * 1048576)) /dev/urandom > "$IMG"
fi
SHA1=$(sha1sum "$IMG" | cut -d' ' -f1)

rm -rf "$DATA" && mkdir -p "$DATA"
echo bench-pw | $BIN admin --data-dir "$DATA" user add alice --password-stdin >/dev/null
KEY=$DATA/id_rsa
ssh-keygen -q -t rsa -b 2048 -m PEM -N '' -f "$KEY"
FP=$($BIN admin --data-dir "$DATA" key add alice --name bench --file "$KEY.pub" | sed -E 's/.*\(([0-9a-f:]+)\).*/\1/')
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
$BIN serve --listen 127.0.0.1:$PORT --data-dir "$DATA" >"$DATA/server.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; [ "$KEEP_DATA" = 1 ] || rm -rf "$DATA" "$OUT/copy.bin"' EXIT
URL=http://127.0.0.1:$PORT
for _ in $(seq 100); do curl -fs "$URL/api/status" >/dev/null && break; sleep 0.1; done

# curl with a fresh signature: scurl METHOD PATH [curl args...]
scurl() {
    local m=$1 p=$2; shift 2
    local d s
    d=$(LC_ALL=C date -u '+%a, %d %b %Y %H:%M:%S GMT')
    s=$(printf 'date: %s' "$d" | openssl dgst -sha256 -sign "$KEY" | base64 -w0)
    curl -fsS -X "$m" "$URL$p" -H "date: $d" \
        -H "authorization: Signature keyId=\"/alice/keys/$FP\",algorithm=\"rsa-sha256\",headers=\"date\",signature=\"$s\"" "$@"
}
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
json() { python3 -c "import sys,json; print(json.load(sys.stdin)$1)"; }

cp_t=(); up_t=(); ex_t=(); dn_t=()
for run in $(seq "$RUNS"); do
    log "run $run/$RUNS"
    sync
    t0=$(now); cp "$IMG" "$OUT/copy.bin"; t1=$(now); cp_t+=("$(echo "$t1 - $t0" | bc)"); rm -f "$OUT/copy.bin"

    ID=$(scurl POST /my/images -H 'content-type: application/json' \
        -d "{\"name\":\"bench$run\",\"version\":\"1.0\",\"os\":\"linux\",\"type\":\"zvol\"}" | json "['id']")
    sync
    t0=$(now)
    GOT=$(scurl PUT "/my/images/$ID/file?compression=gzip" -H 'content-type: application/octet-stream' -T "$IMG" | json "['files'][0]['sha1']")
    t1=$(now); up_t+=("$(echo "$t1 - $t0" | bc)")
    [ "$GOT" = "$SHA1" ] || { echo "upload sha1 $GOT != $SHA1" >&2; exit 1; }
    scurl POST "/my/images/$ID?action=activate" >/dev/null

    t0=$(now)
    P=$(scurl POST "/my/images/$ID?action=export&manta_path=/alice/stor/run$run" | json "['image_path']")
    t1=$(now); ex_t+=("$(echo "$t1 - $t0" | bc)")

    # Timed to /dev/null: curl's own small writes to a file cost more than the server (measured: 5.2 s
    # to a file vs 0.65 s to /dev/null for 2 GiB). The bytes are checked in a second, untimed read.
    t0=$(now); scurl GET "$P" -o /dev/null; t1=$(now); dn_t+=("$(echo "$t1 - $t0" | bc)")
    [ "$(scurl GET "$P" | sha1sum | cut -d' ' -f1)" = "$SHA1" ] || { echo "download sha1 mismatch" >&2; exit 1; }
    # Free the space for the next round: the exported object and the image share one blob.
    scurl DELETE "$P" >/dev/null; scurl DELETE "/alice/stor/run$run.imgmanifest" >/dev/null
    scurl DELETE "/my/images/$ID" >/dev/null
done
RSS=$(awk '/VmHWM/ {print $2}' /proc/$PID/status)

CP=$(printf '%s\n' "${cp_t[@]}" | median)
UP=$(printf '%s\n' "${up_t[@]}" | median)
EX=$(printf '%s\n' "${ex_t[@]}" | median)
DN=$(printf '%s\n' "${dn_t[@]}" | median)
r() { echo "scale=2; $CP / $1" | bc; }
mbps() { echo "scale=0; $SIZE_MIB / $1" | bc; }
echo
echo "image: $SIZE_MIB MiB, $RUNS runs (median), same disk; ratio = cp / step (>= 1: faster than cp)"
printf '| %-28s | %9s | %8s | %7s |\n' step seconds "MiB/s" ratio
printf '| %-28s | %9s | %8s | %7s |\n' "cp (reference)" "$CP" "$(mbps "$CP")" 1.00
printf '| %-28s | %9s | %8s | %7s |\n' "PUT image file (sha1+md5)" "$UP" "$(mbps "$UP")" "$(r "$UP")"
printf '| %-28s | %9s | %8s | %7s |\n' "ExportImage (POST action)" "$EX" "-" "$(r "$EX")"
printf '| %-28s | %9s | %8s | %7s |\n' "GET exported .zfs.gz (null)" "$DN" "$(mbps "$DN")" "$(r "$DN")"
echo "server peak RSS: $((RSS / 1024)) MiB"
