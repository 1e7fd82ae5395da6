#!/usr/bin/env bash
# Pull benchmark (issue 17): a SIZE_MIB (default 1024) container image generated from a bundle, published
# (pimages) and pulled from Satchel's pull endpoint (/v2) by `skopeo copy docker://... dir:OUT`, against `cp`
# of the same blobs (manifest, config, layer) on the same disk, in the same run.
#
#   bash bench/pull.sh            # knobs: SIZE_MIB=1024 RUNS=3 SKIP_BUILD=0 KEEP_DATA=0
#
# The bundle: 3/4 random bytes (incompressible, stored as-is by the layer's gzip) in 64 MiB files and 1/4
# text in 16 MiB files; the image is generated uncompressed (compress=false, hammr's default: the archive is
# a plain tar whose layer is gzip). Prints median seconds of each, ratio = cp / pull (>= 1: faster than cp),
# the pulled layer's check, and the load average before and after (the machine is shared).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${SIZE_MIB:-1024}
RUNS=${RUNS:-3}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_DATA=${KEEP_DATA:-0}
OUT=bench/out
DATA=$OUT/pull-data
BIN=target/release/satchel
PW=bench-pw
log() { printf '==> %s\n' "$*" >&2; }
for t in curl skopeo python3 cargo sha256sum; do command -v $t >/dev/null || { echo "missing tool: $t" >&2; exit 1; }; done
mkdir -p "$OUT"
[ "$SKIP_BUILD" = 1 ] || { log "cargo build --release -p satchel"; cargo build --release -q -p satchel; }
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

rm -rf "$DATA" && mkdir -p "$DATA"
echo "$PW" | $BIN admin --data-dir "$DATA" user add alice --password-stdin --entitlement software_upload >/dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SATCHEL_USER_RATE=0 $BIN serve --listen 127.0.0.1:$PORT --data-dir "$DATA" >"$DATA/server.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; [ "$KEEP_DATA" = 1 ] || rm -rf "$DATA" "$OUT/pulled" "$OUT/cp-blobs"' EXIT
URL=http://127.0.0.1:$PORT
for _ in $(seq 100); do curl -fs "$URL/api/status" >/dev/null && break; sleep 0.1; done
NS=http://www.usharesoft.com/uforge
api() { curl -fsS -u "alice:$PW" "$@"; }
xml() { api -X POST -H 'Content-Type: application/xml' "$URL/api/users/alice/$1" --data-binary "$2"; }
field() { python3 -c "import sys,re; m=re.search(r'<$1>([^<]*)</$1>', sys.stdin.read()); print(m.group(1) if m else '')"; }
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

log "bundle: $SIZE_MIB MiB (3/4 random, 1/4 text)"
MSID=$(xml mysoftware "<ns1:mySoftware xmlns:ns1=\"$NS\"><name>pullbench</name><version>1.0</version></ns1:mySoftware>" | field dbId)
add() {  # add NAME FILE
    local said
    said=$(xml "mysoftware/$MSID/artifacts" "<ns1:softwareArtifact xmlns:ns1=\"$NS\"><name>$1</name><type>file</type></ns1:softwareArtifact>" | field dbId)
    api -X POST -H 'Content-Type: application/octet-stream' --data-binary "@$2" \
        "$URL/api/users/alice/mysoftware/$MSID/artifacts/$said/bin/$1" >/dev/null
}
TMPF=$DATA/part
RANDOM_MIB=$((SIZE_MIB * 3 / 4)); TEXT_MIB=$((SIZE_MIB - RANDOM_MIB))
n=0
for ((left = RANDOM_MIB; left > 0; left -= 64)); do
    m=$((left < 64 ? left : 64)); head -c $((m << 20)) /dev/urandom > "$TMPF"; add "random-$n.bin" "$TMPF"; n=$((n + 1))
done
for ((left = TEXT_MIB; left > 0; left -= 16)); do
    m=$((left < 16 ? left : 16))
    python3 -c "import random,sys; r=random.Random($n); w=['alpha','beta','gamma','delta','satchel','image','layer','pull','%d'];
out=sys.stdout; n=0
while n < $((m << 20)):
    l=' '.join(r.choice(w) for _ in range(12)) + '\n'; out.write(l); n+=len(l)" | head -c $((m << 20)) > "$TMPF"
    add "text-$n.txt" "$TMPF"; n=$((n + 1))
done
rm -f "$TMPF"

log "generate (compress=false) and publish"
TID=$(xml "mysoftware/$MSID/templates" "" | field dbId)
IMG=$URL/api/users/alice/mysoftware/$MSID/templates/$TID/images
ITID=$(xml "mysoftware/$MSID/templates/$TID/images" "<ns1:image xmlns:ns1=\"$NS\"><compress>false</compress><format><name>docker</name></format><name>pullbench</name></ns1:image>" | field dbId)
wait_done() { for _ in $(seq 6000); do s=$(api "$1"); [[ $s == *"<complete>true</complete>"* ]] && return; [[ $s == *"<error>true</error>"* ]] && { echo "$s" >&2; exit 1; }; sleep 0.1; done; exit 1; }
wait_done "$IMG/$ITID/status"
PTIID=$(xml "mysoftware/$MSID/templates/$TID/images/$ITID/pimages" "" | field dbId)
wait_done "$IMG/$ITID/pimages/$PTIID/status"
OWNER_BLOBS=$(ls -d "$DATA"/blobs/u/*/registry/blobs/sha256)
BLOB_BYTES=$(du -cb "$OWNER_BLOBS"/* | tail -1 | cut -f1)
REF=127.0.0.1:$PORT/alice/pullbench:1.0
log "published $REF: $(ls "$OWNER_BLOBS" | wc -l) blobs, $BLOB_BYTES bytes"

pull_t=(); cp_t=(); curl_t=()
for run in $(seq "$RUNS"); do
    log "run $run/$RUNS"
    rm -rf "$OUT/cp-blobs"; sync
    t0=$(now); cp -r "$OWNER_BLOBS" "$OUT/cp-blobs"; sync; t1=$(now)
    cp_t+=("$(echo "$t1 - $t0" | bc)")
    rm -rf "$OUT/pulled"; sync
    t0=$(now)
    skopeo copy -q --src-tls-verify=false --src-creds "alice:$PW" "docker://$REF" "dir:$OUT/pulled"; sync
    t1=$(now)
    pull_t+=("$(echo "$t1 - $t0" | bc)")
    # The same blobs over HTTP by curl (the server's part of a pull, without skopeo's own work).
    rm -rf "$OUT/curl-blobs"; mkdir -p "$OUT/curl-blobs"; sync
    t0=$(now)
    for b in "$OWNER_BLOBS"/*; do
        api -o "$OUT/curl-blobs/$(basename "$b")" "$URL/v2/alice/pullbench/blobs/sha256:$(basename "$b")"
    done
    sync; t1=$(now)
    curl_t+=("$(echo "$t1 - $t0" | bc)")
done
rm -rf "$OUT/curl-blobs"
# The pulled layer is the published one, byte for byte.
for f in "$OUT"/pulled/*; do
    h=$(basename "$f"); [ -f "$OWNER_BLOBS/$h" ] || continue
    [ "$(sha256sum < "$f" | cut -d' ' -f1)" = "$h" ] || { echo "pulled blob $h does not match" >&2; exit 1; }
done
CHECKED=$(cd "$OUT/pulled" && ls | grep -c '^[0-9a-f]\{64\}$' || true)
P=$(printf '%s\n' "${pull_t[@]}" | median); C=$(printf '%s\n' "${cp_t[@]}" | median)
U=$(printf '%s\n' "${curl_t[@]}" | median)
printf '\n%-34s %10s\n' "RUNS=$RUNS, medians" "seconds"
printf '%-34s %10.2f\n' "cp -r of the published blobs" "$C"
printf '%-34s %10.2f   ratio cp/pull %.2f   %.0f MiB/s\n' "skopeo copy docker:// -> dir:" "$P" "$(echo "$C / $P" | bc -l)" \
    "$(echo "$BLOB_BYTES / 1048576 / $P" | bc -l)"
printf '%-34s %10.2f   ratio cp/curl %.2f   %.0f MiB/s\n' "curl of each blob (GET /v2/.../blobs)" "$U" "$(echo "$C / $U" | bc -l)" \
    "$(echo "$BLOB_BYTES / 1048576 / $U" | bc -l)"
printf 'blobs: %s bytes; pulled blobs checked by sha256: %s\n' "$BLOB_BYTES" "$CHECKED"
printf 'loadavg before: %s  after: %s  (cores: %s)\n' "$LOAD_BEFORE" "$(cut -d' ' -f1-3 /proc/loadavg)" "$(nproc)"
