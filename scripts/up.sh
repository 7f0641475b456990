#!/usr/bin/env bash
# One command from nothing to a running orchestrator with the example plugin ACTIVE:
# Docker Engine, the virtualenv, the plugin base image, `summit serve` on SQLite, and
# examples/word-count installed and enabled. Running it again is harmless.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
HOST="${SUMMIT_HOST:-127.0.0.1}"
PORT="${SUMMIT_PORT:-8700}"
export SUMMIT_URL="http://$HOST:$PORT"
export SUMMIT_ADMIN_TOKEN="${SUMMIT_ADMIN_TOKEN:-dev-admin-token}"
RUN="$ROOT/.summit"
mkdir -p "$RUN"

bash scripts/ensure-docker.sh
bash scripts/bootstrap-venv.sh
bash scripts/build-ui.sh
bash plugin-base-images/build.sh

if curl -fsS -m 2 "$SUMMIT_URL/healthz" >/dev/null 2>&1; then
  echo "[up] orchestrator already answers at $SUMMIT_URL"
else
  echo "[up] starting the orchestrator at $SUMMIT_URL (log: .summit/orchestrator.log)"
  nohup .venv/bin/summit serve --host "$HOST" --port "$PORT" >>"$RUN/orchestrator.log" 2>&1 &
  echo $! >"$RUN/orchestrator.pid"
fi
for _ in $(seq 1 120); do
  curl -fsS -m 2 "$SUMMIT_URL/readyz" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -fsS -m 2 "$SUMMIT_URL/readyz" >/dev/null || {
  echo "[up] the orchestrator did not become ready; see .summit/orchestrator.log" >&2
  tail -n 20 "$RUN/orchestrator.log" >&2 || true
  exit 1
}

PLUGIN=com.example.word-count
state="$(.venv/bin/summit show "$PLUGIN" --json 2>/dev/null | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["state"])' 2>/dev/null || echo NONE)"
case "$state" in
  NONE) .venv/bin/summit install examples/word-count --approve-all --enable ;;
  ACTIVE) echo "[up] $PLUGIN is already ACTIVE" ;;
  *) .venv/bin/summit enable "$PLUGIN" ;;
esac

cat <<EOT

Summit is up at $SUMMIT_URL (API docs: $SUMMIT_URL/docs), with $PLUGIN ACTIVE.
Call it:
  curl -s -H "Authorization: Bearer $SUMMIT_ADMIN_TOKEN" -H 'content-type: application/json' \\
       -d '{"input": {"text": "to be or not to be"}}' \\
       $SUMMIT_URL/v1/extension-points/analyzer/execute
or with the CLI:
  .venv/bin/summit list
  .venv/bin/summit execute analyzer --input '{"text": "to be or not to be"}'
Stop it with: make down
EOT
