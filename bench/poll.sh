#!/usr/bin/env bash
# Status-poll benchmark: `wrk -c64 -t2 -d10s` against an export ticket's status route, answered `304`
# (If-None-Match with its current ETag) and `200` (no condition), on the embedded default (SQLite) and on
# PostgreSQL, against nginx answering a 400-byte body from memory (`return 200`) in the same run.
# See bench/README.md.
#
#   bash bench/poll.sh
#
# Knobs (environment): RUNS=3  DURATION=10s  CONNS=64  THREADS=2  ENGINES="sqlite postgres"  SKIP_BUILD=0
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
ENGINES=${ENGINES:-sqlite postgres}
SKIP_BUILD=${SKIP_BUILD:-0}
OUT=bench/out/poll
BIN=target/release/satchel
USER_NAME=bench
PASSWORD=bench-pw

log() { printf '==> %s\n' "$*"; }
mkdir -p "$OUT"

# --- tools (installed once, like bench/lib.sh installs pigz) ---------------------------------------------
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
for t in curl python3 base64; do command -v $t >/dev/null || { echo "missing tool: $t" >&2; exit 1; }; done

if [ "$SKIP_BUILD" != 1 ]; then
    log "cargo build --release -p satchel"
    cargo build --release -q -p satchel
fi
[ -x "$BIN" ] || { echo "no $BIN (build failed?)" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

TMP=$(mktemp -d /tmp/satchel-poll.XXXXXX)
chmod 755 "$TMP"  # the postgres OS user reaches its cluster dir through it
PIDS=()
PG_DIR=
cleanup() {
    local rc=$?
    for p in "${PIDS[@]}"; do
        if kill -0 "$p" 2>/dev/null; then
            kill -TERM "$p" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$p" 2>/dev/null || true
        fi
    done
    if [ -n "$PG_DIR" ]; then
        pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -s stop >/dev/null 2>&1 || true
    fi
    rm -rf "$TMP"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- nginx: a throwaway master on 127.0.0.1 with its own config, answering 400 bytes from memory ----------
NGINX_PORT=$(free_port)
mkdir -p "$TMP/nginx/logs"
BODY400=$(python3 -c 'print("x" * 399)')  # + nginx adds nothing: `return` sends the text as is (399 + "\n" below)
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes auto;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / { default_type application/xml; return 200 "$BODY400\n"; }
    }
}
EOF
log "nginx on 127.0.0.1:$NGINX_PORT ($TMP/nginx/nginx.conf)"
"$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" >"$TMP/nginx/logs/stdout" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$NGINX_PORT/" 2>/dev/null && break; sleep 0.05; done
nginx_bytes=$(curl -fsS "http://127.0.0.1:$NGINX_PORT/" | wc -c)
[ "$nginx_bytes" = 400 ] || { echo "nginx answers $nginx_bytes bytes, not 400" >&2; exit 1; }

# --- PostgreSQL: a throwaway cluster (as crates/testkit starts one: initdb in a temp dir, as `postgres`) --
pg_as() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
start_postgres() {
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [ -x "$PG_BIN/initdb" ] || { echo "no PostgreSQL server binaries (apt install postgresql)" >&2; exit 1; }
    PG_DIR="$TMP/pg"
    mkdir -p "$PG_DIR"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$PG_DIR"
    PG_PORT=$(free_port)
    (cd / && pg_as "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U postgres -E UTF8 >/dev/null)
    (cd / && pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w -s \
        -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off" start)
    PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
    log "PostgreSQL $(basename "$(dirname "$PG_BIN")") on 127.0.0.1:$PG_PORT"
}

# --- a Satchel server with one completed export ticket ------------------------------------------------------
# Sets PORT, SPID, STATUS_URL, ETAG.
start_satchel() {
    local engine=$1 data="$TMP/data-$1" storage=()
    mkdir -p "$data"
    if [ "$engine" = postgres ]; then
        storage=(--database-url "$PG_URL")
        export SATCHEL_SECRETS_KEY
        SATCHEL_SECRETS_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
    fi
    printf '%s\n' "$PASSWORD" | "$BIN" admin --data-dir "$data" "${storage[@]}" user add "$USER_NAME" \
        --password-stdin --entitlement software_upload >/dev/null
    PORT=$(free_port)
    # The per-user request rate (50/s by default) would refuse a benchmark of one user: lifted.
    SATCHEL_USER_RATE=0 "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$data" "${storage[@]}" \
        >"$OUT/server-$engine.log" 2>&1 &
    SPID=$!
    PIDS+=($SPID)
    for _ in $(seq 300); do
        kill -0 "$SPID" 2>/dev/null || { tail -20 "$OUT/server-$engine.log" >&2; exit 1; }
        curl -fsS -o /dev/null "http://127.0.0.1:$PORT/api/status" 2>/dev/null && break
        sleep 0.1
    done
    local base="http://127.0.0.1:$PORT/api/users/$USER_NAME" ns="http://www.usharesoft.com/uforge" msid eid
    msid=$(curl -fsS -u "$USER_NAME:$PASSWORD" -H 'Content-Type: application/xml' -H 'Accept: application/json' \
        -d "<ns0:mySoftware xmlns:ns0=\"$ns\"><name>polled</name><version>1.0</version></ns0:mySoftware>" \
        "$base/mysoftware" | python3 -c 'import json,sys; print(json.load(sys.stdin)["dbId"])')
    eid=$(curl -fsS -u "$USER_NAME:$PASSWORD" -X POST -H 'Accept: application/json' "$base/mysoftware/$msid/exports" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["dbId"])')
    STATUS_URL="$base/mysoftware/$msid/exports/$eid/status"
    for _ in $(seq 300); do
        curl -fsS -u "$USER_NAME:$PASSWORD" -H 'Accept: application/json' "$STATUS_URL" | grep -q '"complete":true' && break
        sleep 0.1
    done
    ETAG=$(curl -fsS -D - -o /dev/null -u "$USER_NAME:$PASSWORD" -H 'Accept: application/xml' "$STATUS_URL" |
        tr -d '\r' | awk 'tolower($1)=="etag:" {print $2}')
    [ -n "$ETAG" ] || { echo "no ETag on $STATUS_URL" >&2; exit 1; }
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' -u "$USER_NAME:$PASSWORD" -H 'Accept: application/xml' \
        -H "If-None-Match: $ETAG" "$STATUS_URL")
    [ "$code" = 304 ] || { echo "If-None-Match $ETAG answered $code, not 304" >&2; exit 1; }
    log "satchel ($engine) on 127.0.0.1:$PORT, ticket $STATUS_URL, ETag $ETAG"
}

stop_satchel() {
    kill -TERM "$SPID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SPID" 2>/dev/null || true
    wait "$SPID" 2>/dev/null || true
}

AUTH="Authorization: Basic $(printf '%s:%s' "$USER_NAME" "$PASSWORD" | base64 -w0)"
RESULTS="$OUT/results.tsv"
: >"$RESULTS"

# One wrk run: appends "label req/s p50_ms p99_ms non2xx3xx" to $RESULTS.
run_wrk() {
    local label=$1 url=$2; shift 2
    local txt="$OUT/wrk-$label-$run.txt"
    wrk -c"$CONNS" -t"$THREADS" -d"$DURATION" --latency "$@" "$url" >"$txt" 2>&1
    python3 - "$txt" "$label" >>"$RESULTS" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)$", v)
    n, u = float(m.group(1)), m.group(2)
    return n / 1000 if u == "us" else n * 1000 if u == "s" else n
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", text, re.M))
bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
errs = re.search(r"Socket errors: (.*)", text)
print("%s\t%.0f\t%.2f\t%.2f\t%s\t%s" % (sys.argv[2], rps, ms(lat["50"]), ms(lat["99"]),
      bad.group(1) if bad else 0, (errs.group(1) if errs else "").replace("\t", " ")))
PY
    tail -1 "$RESULTS" | awk -F'\t' '{printf "    %-22s %9s req/s  p50 %7s ms  p99 %7s ms  non-2xx/3xx %s %s\n", $1, $2, $3, $4, $5, $6}'
}

echo "loadavg before: $(cat /proc/loadavg)" | tee "$OUT/loadavg.txt"
for engine in $ENGINES; do
    [ "$engine" = postgres ] && [ -z "$PG_DIR" ] && start_postgres
    start_satchel "$engine"
    for run in $(seq "$RUNS"); do
        log "run $run/$RUNS ($engine): nginx, satchel 304, satchel 200   (loadavg $(cut -d' ' -f1-3 /proc/loadavg))"
        run_wrk "nginx" "http://127.0.0.1:$NGINX_PORT/"
        run_wrk "$engine-304" "$STATUS_URL" -H "$AUTH" -H "Accept: application/xml" -H "If-None-Match: $ETAG"
        run_wrk "$engine-200" "$STATUS_URL" -H "$AUTH" -H "Accept: application/xml"
    done
    stop_satchel
done
echo "loadavg after: $(cat /proc/loadavg)" | tee -a "$OUT/loadavg.txt"

# --- table: medians per label; each Satchel row against the nginx median of the same engine's runs -------
python3 - "$RESULTS" "$RUNS" "$ENGINES" "$CONNS" "$THREADS" "$DURATION" <<'PY' | tee "$OUT/table.txt"
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
runs, engines = int(sys.argv[2]), sys.argv[3].split()
print()
print("wrk -c%s -t%s -d%s, RUNS=%d, medians (nginx: `return 200` of 400 bytes from memory, same run)"
      % (sys.argv[4], sys.argv[5], sys.argv[6], runs))
print("%-16s %10s %8s %9s %9s %6s   %s" % ("", "req/s", "x nginx", "p50 ms", "p99 ms", "bad", "goal"))
goals = {"304": (0.5, 10.0), "200": (0.25, 10.0)}
ok_all = True
# The rows of one engine's runs follow each other: nginx, 304, 200 per run.
i = 0
for e in engines:
    chunk = rows[i:i + 3 * runs]
    i += 3 * runs
    med = lambda label, k: statistics.median(float(r[k]) for r in chunk if r[0] == label)
    bad = lambda label: sum(int(r[4]) for r in chunk if r[0] == label)
    n = med("nginx", 1)
    print("%-16s %10.0f %8s %9.2f %9.2f %6d" % ("nginx (%s)" % e, n, "1.00", med("nginx", 2), med("nginx", 3), bad("nginx")))
    for kind in ("304", "200"):
        label = "%s-%s" % (e, kind)
        rps, p99 = med(label, 1), med(label, 3)
        ratio_goal, p99_goal = goals[kind]
        ok = rps / n >= ratio_goal and p99 <= p99_goal and bad(label) == 0
        ok_all &= ok
        print("%-16s %10.0f %8.2f %9.2f %9.2f %6d   >= %.2fx, p99 <= %.0f ms: %s"
              % ("satchel " + label, rps, rps / n, med(label, 2), p99, bad(label), ratio_goal, p99_goal,
                 "ok" if ok else "MISSED"))
print()
print("all goals met" if ok_all else "some goals MISSED")
PY
cat "$OUT/loadavg.txt"
