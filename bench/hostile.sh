#!/usr/bin/env bash
# Hostile-input figures on a release build (issues 11 and 18), each against a reference in the same run:
#   1. four 90 000-attribute XML documents at once: time to refusal, and GET /api/status latency meanwhile
#      (reference: GET /api/status latency when idle);
#   2. 256 concurrent wrong-password requests: answers, server RSS growth, a logged-in user's polls meanwhile
#      (reference: the same polls when idle);
#   3. 64 concurrent cold logins of one user: argon2 checks run (from /metrics), RSS growth, wall time
#      (reference: one login).
# Usage: bash bench/hostile.sh   (SKIP_BUILD=1 reuses target/release/satchel)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out/hostile}
BIN=${BIN:-target/release/satchel}
mkdir -p "$OUT"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    echo "==> cargo build --release -p satchel"
    cargo build --release -q -p satchel
fi
DATA=$(mktemp -d)
PID=
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
    rm -rf "$DATA"
}
trap cleanup EXIT
for u in alice bob carol; do
    printf '%s-pw\n' "$u" | "$BIN" admin --data-dir "$DATA" user add "$u" --password-stdin --entitlement software_upload >/dev/null
done
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
MPORT=$(free_port)
"$BIN" serve --listen "127.0.0.1:$PORT" --metrics-listen "127.0.0.1:$MPORT" --data-dir "$DATA" >"$OUT/server.log" 2>&1 &
PID=$!
for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$PORT/api/status" && break; sleep 0.1; done
python3 bench/hostile_client.py "$PORT" "$MPORT" "$PID"
