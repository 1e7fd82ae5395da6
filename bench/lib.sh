# Shared by the UForge benchmarks (export.sh, image.sh): tools, release build, corpus, and a server on a
# fresh data dir that is stopped (and the dir removed unless KEEP_DATA=1) on exit. Source it after setting
# SIZE_MIB, SKIP_BUILD, KEEP_DATA, OUT, DATA, BIN, USER_NAME, PASSWORD; it sets CORPUS, PORT and PID.

log() { printf '==> %s\n' "$*"; }
mkdir -p "$OUT"

# --- tools ------------------------------------------------------------------------------------------------
if ! command -v pigz >/dev/null 2>&1; then
    log "installing pigz"
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq pigz >/dev/null
fi
if ! python3 -c 'import requests' >/dev/null 2>&1; then
    log "installing python requests"
    python3 -m pip install -q requests || python3 -m pip install -q --user requests
fi
for t in tar gzip curl cargo; do command -v $t >/dev/null || { echo "missing tool: $t" >&2; exit 1; }; done

# --- build ------------------------------------------------------------------------------------------------
if [ "$SKIP_BUILD" != 1 ]; then
    log "cargo build --release -p satchel"
    cargo build --release -q -p satchel
fi
[ -x "$BIN" ] || { echo "no $BIN (build failed?)" >&2; exit 1; }

# --- corpus (skipped when its stamp matches) -------------------------------------------------------------
CORPUS=$OUT/corpus
[ "$SIZE_MIB" = 512 ] || CORPUS=$OUT/corpus-$SIZE_MIB  # other sizes don't evict the 512 MiB corpus
log "corpus: $CORPUS (${SIZE_MIB} MiB)"
python3 bench/make_corpus.py "$CORPUS" --size-mib "$SIZE_MIB"

# --- server -----------------------------------------------------------------------------------------------
rm -rf "$DATA"
mkdir -p "$DATA"
PID=
cleanup() {
    local rc=$?
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    [ "$KEEP_DATA" = 1 ] || rm -rf "$DATA"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "satchel admin: user $USER_NAME"
printf '%s\n' "$PASSWORD" | "$BIN" admin --data-dir "$DATA" user add "$USER_NAME" --password-stdin --entitlement software_upload

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log "satchel serve on 127.0.0.1:$PORT (log: $OUT/server.log)"
# The untimed set-up uploads thousands of files as one user as fast as it can: the per-user request rate
# (50/s by default) would refuse it, so it is lifted unless the caller sets one.
SATCHEL_USER_RATE=${SATCHEL_USER_RATE:-0} \
"$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" >"$OUT/server.log" 2>&1 &
PID=$!

up=0
for _ in $(seq 300); do  # up to 30 s
    if ! kill -0 "$PID" 2>/dev/null; then
        echo "server exited during startup:" >&2; tail -20 "$OUT/server.log" >&2; exit 1
    fi
    if curl -fsS -o /dev/null "http://127.0.0.1:$PORT/api/status"; then up=1; break; fi
    sleep 0.1
done
[ "$up" = 1 ] || { echo "server did not answer GET /api/status within 30 s" >&2; tail -20 "$OUT/server.log" >&2; exit 1; }
