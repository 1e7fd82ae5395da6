#!/usr/bin/env bash
# Runs the UForge-SDK conformance tests against a Satchel binary.
#
#   bash tests/sdk/run.sh [pytest args...]
#
# Idempotently: creates a venv (target/sdk-venv) with tests/sdk/requirements.txt, downloads the
# uforge-python-sdk 3.8.13 and hammr 3.8.13 sdists from PyPI into target/sdk-cache (nothing of
# them is committed), then runs pytest on tests/sdk. Needs PyPI only (no GitHub).
#
# Environment:
#   SATCHEL_BIN        server binary            (default: target/debug/satchel)
#   SATCHEL_SDK_CACHE  sdist cache directory    (default: target/sdk-cache)
#   SATCHEL_SDK_VENV   venv directory           (default: target/sdk-venv)
#   SATCHEL_PYTHON     interpreter for the venv (default: python3, Python >= 3.9)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

venv="${SATCHEL_SDK_VENV:-$repo/target/sdk-venv}"
export SATCHEL_SDK_CACHE="${SATCHEL_SDK_CACHE:-$repo/target/sdk-cache}"
py="${SATCHEL_PYTHON:-python3}"
req="$here/requirements.txt"

log() { printf '[sdk-tests] %s\n' "$*" >&2; }

command -v "$py" >/dev/null 2>&1 || { log "no $py on PATH (set SATCHEL_PYTHON)"; exit 2; }
"$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' \
  || { log "$py is older than Python 3.9"; exit 2; }

venv_ok() { [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; }

make_venv() {
  rm -rf "$venv"
  "$py" -m venv "$venv" >/dev/null 2>&1 && "$venv/bin/python" -m pip --version >/dev/null 2>&1
}

if ! venv_ok; then
  mkdir -p "$(dirname "$venv")"
  log "creating venv $venv with $("$py" --version 2>&1)"
  if ! make_venv; then
    # Debian/Ubuntu split venv/ensurepip into python3-venv.
    pyver="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      log "python venv unavailable; installing python3-venv with apt-get"
      export DEBIAN_FRONTEND=noninteractive
      apt-get install -y "python${pyver}-venv" python3-venv >/dev/null 2>&1 \
        || { apt-get update >/dev/null 2>&1 \
             && apt-get install -y "python${pyver}-venv" python3-venv >/dev/null 2>&1; } \
        || log "apt-get install python3-venv failed"
    fi
    if ! make_venv; then
      # Last resort: a venv without pip, filled by the system pip (pip >= 22.3 has --python).
      rm -rf "$venv"
      if "$py" -m venv --without-pip "$venv" >/dev/null 2>&1 \
          && "$py" -m pip --version >/dev/null 2>&1; then
        log "venv without ensurepip: installing with the system pip"
      else
        rm -rf "$venv"
        log "cannot create a Python venv. On Debian/Ubuntu: apt-get install -y python3-venv"
        exit 2
      fi
    fi
  fi
fi

pip_install() {
  if "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    "$venv/bin/python" -m pip install --disable-pip-version-check -q "$@"
  else
    "$py" -m pip --python "$venv/bin/python" install --disable-pip-version-check -q "$@"
  fi
}

# Reinstall only when requirements.txt changed (or a package went missing).
stamp="$venv/.satchel-requirements.sha256"
want="$(cat "$req" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ] \
   || ! "$venv/bin/python" -c 'import pyxb, requests, pytest, yaml' >/dev/null 2>&1; then
  log "installing $(grep -v '^#' "$req" | tr '\n' ' ')"
  pip_install -r "$req"
  echo "$want" > "$stamp"
fi

# SDK + hammr sdists: download, verify sha256, extract, and check the SDK loads (idempotent).
"$venv/bin/python" "$here/sdk_loader.py" --prepare >&2

bin="${SATCHEL_BIN:-$repo/target/debug/satchel}"
[ -x "$bin" ] || log "warning: no server binary at $bin (set SATCHEL_BIN); tests will fail"

exec "$venv/bin/python" -m pytest -p no:cacheprovider "$here" "$@"
