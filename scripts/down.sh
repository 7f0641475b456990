#!/usr/bin/env bash
# Stop what `make up` started: disable every plugin (their containers stop) and the orchestrator.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export SUMMIT_URL="${SUMMIT_URL:-http://127.0.0.1:${SUMMIT_PORT:-8700}}"
if curl -fsS -m 2 "$SUMMIT_URL/healthz" >/dev/null 2>&1; then
  for id in $(.venv/bin/summit list --json | .venv/bin/python -c \
      'import json,sys; print(" ".join(p["id"] for p in json.load(sys.stdin) if p["state"] == "ACTIVE"))'); do
    .venv/bin/summit disable "$id" --cascade || true
  done
fi
# The orchestrator drains for SUMMIT_SHUTDOWN_GRACE_S (5 s by default) after SIGTERM; wait that
# long and a little more, then say so and kill it: "stopped" must mean stopped.
GRACE="${SUMMIT_SHUTDOWN_GRACE_S:-5}"
WAIT_S="$(awk -v g="$GRACE" 'BEGIN { printf "%d", g + 10 }')"
if [ -f .summit/orchestrator.pid ]; then
  pid="$(cat .summit/orchestrator.pid)"
  if kill -TERM "$pid" 2>/dev/null; then
    for _ in $(seq 1 $((WAIT_S * 5))); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "[down] the orchestrator (pid $pid) did not exit ${WAIT_S}s after SIGTERM; sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 1 25); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
  fi
  rm -f .summit/orchestrator.pid
fi
echo "[down] stopped"
