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
if [ -f .summit/orchestrator.pid ]; then
  kill "$(cat .summit/orchestrator.pid)" 2>/dev/null || true
  rm -f .summit/orchestrator.pid
fi
echo "[down] stopped"
