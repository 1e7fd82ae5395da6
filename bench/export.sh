#!/usr/bin/env bash
# Export benchmark: a 512 MiB mixed corpus as one bundle, exported by Satchel vs `tar | pigz -6 -p 2`
# on the same files in the same run. Prints the ratio and the server's peak RSS during export+download.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-512}
OUT=bench/out
mkdir -p "$OUT"
command -v pigz >/dev/null || { apt-get update -qq && apt-get install -y -qq pigz; }
python3 -c 'import requests' 2>/dev/null || pip install -q requests
cargo build --release -q -p satchel
BIN=target/release/satchel
CORPUS=$OUT/corpus
python3 bench/make_corpus.py "$CORPUS" --size-mib "$SIZE_MIB"
DATA=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo bench-pw | $BIN admin --data-dir "$DATA" user add bench --password-stdin --entitlement software_upload >/dev/null
$BIN serve --listen 127.0.0.1:$PORT --data-dir "$DATA" >"$OUT/server.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; rm -rf "$DATA"' EXIT
python3 bench/export_client.py --port "$PORT" --pid "$PID" --corpus "$CORPUS" --out "$OUT"
