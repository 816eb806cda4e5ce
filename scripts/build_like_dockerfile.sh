#!/usr/bin/env bash
# Build and run the service the way the Dockerfile does, without a Docker engine.
#
#   scripts/build_like_dockerfile.sh [CMD...]
#
# Build stage: `python -m venv`, then `pip install --no-cache-dir -r requirements.lock` into it.
# Runtime stage: app/ and migrations/ copied into an empty WORKDIR, the image's ENV
# (APP_ENV=production, UPLOAD_DIR, PROMETHEUS_MULTIPROC_DIR, HOST, PATH with the venv first), and
# nothing else of the caller's environment (`env -i`, as in a container).
# Then, in that environment:
#   1. `create_app()` with SECRET_KEY=change-me must refuse to start, naming SECRET_KEY;
#   2. `flask --app app db upgrade` on a SQLite file;
#   3. CMD (default: the Dockerfile's CMD, granian through app/server.py) on HOST=127.0.0.1 and
#      PORT=<free port>, with two workers (WEB_CONCURRENCY=2) and random 40-character secrets;
#      /health and /ready must answer 200, /metrics must answer 401 without METRICS_TOKEN and,
#      with it, count the requests (summed over the workers), the access line (the app's) must
#      be JSON with the request id;
#   4. SIGTERM: the server must stop cleanly (exit 0), and every line it wrote must be JSON.
# Every check prints a `RESULT <name> ...` line; the script exits non-zero on the first failure.
#
# Environment: PYTHON (the base interpreter, default python3), KEEP_WORKDIR=1 to keep the build.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/build-like-dockerfile.XXXXXX")"
VENV="$WORK/opt/venv"
SRV="$WORK/srv/mediaamp"
SERVER_PID=""

log() { printf '%s\n' "$*" >&2; }
result() { printf 'RESULT %s\n' "$*"; }
fail() {
  result "FAILED $*"
  exit 1
}

cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -KILL -- "-$SERVER_PID" 2>/dev/null || kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ "${KEEP_WORKDIR:-0}" == "1" ]]; then
    log "kept $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

if [[ $# -eq 0 ]]; then
  # The runtime stage's CMD, exec form (a JSON array).
  mapfile -t CMD < <("$PYTHON" - "$ROOT/Dockerfile" <<'EOF'
import json, sys
cmds = [line for line in open(sys.argv[1]) if line.startswith("CMD ")]
print("\n".join(json.loads(cmds[-1][4:])))
EOF
)
else
  CMD=("$@")
fi
log "CMD: ${CMD[*]}"

# --- build stage ------------------------------------------------------------------------------
log "building $VENV from requirements.lock (this is the slow part)"
"$PYTHON" -m venv "$VENV"
cp "$ROOT/requirements.lock" "$WORK/requirements.lock"
if ! PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
  "$VENV/bin/pip" install --no-cache-dir -r "$WORK/requirements.lock" >"$WORK/pip.log" 2>&1; then
  tail -n 40 "$WORK/pip.log" >&2
  fail "pip-install"
fi
result "pip-install ok"

# --- runtime stage ----------------------------------------------------------------------------
mkdir -p "$SRV" "$WORK/data/uploads" "$WORK/prometheus" "$WORK/home"
cp -R "$ROOT/app" "$ROOT/migrations" "$SRV/"
find "$SRV" -name __pycache__ -prune -exec rm -rf {} +  # .dockerignore: **/__pycache__

SECRET_KEY="$("$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(30))')"
JWT_SECRET_KEY="$("$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(30))')"
METRICS_TOKEN="$("$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(30))')"
PORT="$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE_URL="http://127.0.0.1:$PORT"
# The image's ENV, the secrets and database an operator would provide, and nothing else.
RUNTIME_ENV=(
  HOME="$WORK/home"
  LANG=C.UTF-8
  PATH="$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  PYTHONUNBUFFERED=1
  PYTHONDONTWRITEBYTECODE=1
  APP_ENV=production
  UPLOAD_DIR="$WORK/data/uploads"
  PROMETHEUS_MULTIPROC_DIR="$WORK/prometheus"
  HOST=0.0.0.0
  DATABASE_URL="sqlite:///$WORK/app.db"
  CELERY_BROKER_URL="sqla+sqlite:///$WORK/broker.sqlite"
  JWT_SECRET_KEY="$JWT_SECRET_KEY"
  METRICS_TOKEN="$METRICS_TOKEN"
)
in_image() { (cd "$SRV" && env -i "${RUNTIME_ENV[@]}" "$@"); }

# 1. Placeholder secrets are refused in production.
set +e
refusal="$(in_image SECRET_KEY=change-me python -c 'from app import create_app; create_app()' 2>&1)"
refusal_exit=$?
set -e
refusal_line="$(grep -m1 'SECRET_KEY' <<<"$refusal" || true)"
result "refuse-placeholder exit=$refusal_exit $refusal_line"
[[ $refusal_exit -ne 0 && -n "$refusal_line" ]] || fail "refuse-placeholder: $refusal"

# 2. Migrations.
if ! in_image SECRET_KEY="$SECRET_KEY" flask --app app db upgrade >"$WORK/migrate.log" 2>&1; then
  cat "$WORK/migrate.log" >&2
  fail "migrate"
fi
result "migrate ok"

# 3. The CMD, on a free loopback port, with two workers (metrics must be summed over them).
cd "$SRV"
setsid env -i "${RUNTIME_ENV[@]}" SECRET_KEY="$SECRET_KEY" HOST=127.0.0.1 PORT="$PORT" \
  WEB_CONCURRENCY=2 "${CMD[@]}" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
cd "$ROOT"

# fetch PATH [CURL ARGS]: prints the status code; the body goes to $WORK/body, the headers to
# $WORK/headers. The request id is `build-<path without slashes>` (`/health` -> `build-health`).
fetch() {
  curl -sS -o "$WORK/body" -D "$WORK/headers" -w '%{http_code}' --max-time 5 \
    -H "X-Request-ID: build-${1//\//}" "${@:2}" "$BASE_URL$1" 2>/dev/null || echo 000
}

status=000
for _ in $(seq 1 150); do  # up to 30 s for the server to serve
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; fail "server exited"; }
  status="$(fetch /health)"
  [[ "$status" == 200 ]] && break
  sleep 0.2
done
result "health $status $(cat "$WORK/body" 2>/dev/null)"
[[ "$status" == 200 ]] || { cat "$WORK/server.log" >&2; fail "health"; }
grep -qi '^Strict-Transport-Security:' "$WORK/headers" || fail "health: no HSTS in production"
grep -qi '^X-Request-ID: build-health' "$WORK/headers" || fail "health: X-Request-ID"
result "hsts present"

READY_REQUESTS=6
for _ in $(seq 1 "$READY_REQUESTS"); do
  status="$(fetch /ready)"
  [[ "$status" == 200 ]] || { cat "$WORK/body" >&2; fail "ready $status"; }
done
result "ready $status $(cat "$WORK/body")"

# Production serves the metrics to the holder of METRICS_TOKEN only.
status="$(fetch /metrics)"
[[ "$status" == 401 ]] || fail "metrics without the token: $status"
status="$(fetch /metrics -H "Authorization: Bearer $METRICS_TOKEN")"
[[ "$status" == 200 ]] || fail "metrics $status"
ready_count="$(in_image python - "$WORK/body" <<'EOF'
import sys
from prometheus_client.parser import text_string_to_metric_families

names = set()
ready = 0.0
for family in text_string_to_metric_families(open(sys.argv[1]).read()):
    for sample in family.samples:
        names.add(sample.name)
        labels = sample.labels
        if (
            sample.name == "http_requests_total"
            and labels.get("endpoint") == "/ready"
            and labels.get("status") == "200"
        ):
            ready += sample.value
required = {
    "http_requests_total",
    "http_request_duration_seconds_bucket",
    "loader_rows_logged_total",
    "loader_last_success_timestamp_seconds",
}
missing = required - names
if missing:
    sys.exit(f"missing metrics: {sorted(missing)}")
print(int(ready))
EOF
)" || fail "metrics content"
result "metrics 200 ready_requests=$ready_count"
[[ "$ready_count" == "$READY_REQUESTS" ]] || fail "metrics: /ready counted $ready_count times"

# The app's request line is the access line (granian's own access log is off).
if grep '"logger": "app.request"' "$WORK/server.log" | grep -q '"request_id": "build-ready"'; then
  result "access-log json"
else
  cat "$WORK/server.log" >&2
  fail "access-log: no JSON line with the request id"
fi

# 4. Graceful stop.
kill -TERM "$SERVER_PID"
stop_exit=0
for _ in $(seq 1 175); do  # up to 35 s (the server's graceful timeout is 30 s)
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.2
done
if kill -0 "$SERVER_PID" 2>/dev/null; then
  fail "the server did not stop on SIGTERM"
fi
wait "$SERVER_PID" || stop_exit=$?
SERVER_PID=""
result "stopped exit=$stop_exit"
[[ $stop_exit -eq 0 ]] || { cat "$WORK/server.log" >&2; fail "server exit $stop_exit"; }

# Every line the server wrote, start to stop (granian's, the launcher's, the app's), is JSON.
log_lines="$(in_image python - "$WORK/server.log" <<'EOF'
import json, sys

lines = [line for line in open(sys.argv[1]) if line.strip()]
for line in lines:
    try:
        assert isinstance(json.loads(line), dict)
    except (ValueError, AssertionError):
        sys.exit(f"not a JSON object: {line!r}")
print(len(lines))
EOF
)" || { cat "$WORK/server.log" >&2; fail "log: $log_lines"; }
result "log-lines json=$log_lines"
result "ok"
