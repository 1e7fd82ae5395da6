#!/usr/bin/env bash
# Fuzzes a running Satchel server from its own OpenAPI document (GET /api/openapi.json) with
# schemathesis: no 5xx, and every error in its face's format (face_errors.py).
#
#   bash tests/fuzz-api/run.sh BASE_URL USER:PASSWORD [MAX_SECONDS]
#
# Idempotently creates target/fuzz-venv with requirements.txt (PyPI only).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
base="$1"; creds="$2"; max="${3:-60}"
venv="${SATCHEL_FUZZ_VENV:-$repo/target/fuzz-venv}"
stamp="$venv/.requirements.sha256"
want="$(sha256sum < "$here/requirements.txt" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ] || ! "$venv/bin/python" -c 'import schemathesis' 2>/dev/null; then
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/requirements.txt"
    echo "$want" > "$stamp"
fi
export SCHEMATHESIS_HOOKS="$here/face_errors.py"
# Its example database goes under target/, not into the work tree.
mkdir -p "$repo/target/fuzz-api" && cd "$repo/target/fuzz-api"
# Seeded, so a failure reproduces; bounded by --max-time and the number of examples per operation.
exec "$venv/bin/schemathesis" run "$base/api/openapi.json" \
    --url "$base" \
    --checks not_a_server_error,error_in_face_format \
    --auth "$creds" \
    --max-time "$max" \
    --max-examples 25 \
    --seed 20261129 \
    --workers 2 \
    --request-timeout 30 \
    --suppress-health-check all \
    --warnings off
