#!/usr/bin/env bash
# Create (or refresh) the project's virtualenv in .venv with the orchestrator, the SDK and the
# development tools. Fast when nothing changed: it reinstalls only when pyproject files did.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
STAMP="$VENV/.summit-installed"

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "[venv] Python 3.11 or newer is required (found: $("$PY" --version 2>&1))" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PY" -m venv "$VENV" 2>/dev/null; then
    echo "[venv] python3-venv is missing; installing it"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
    "$PY" -m venv "$VENV"
  fi
fi
want="$(cat "$ROOT/pyproject.toml" "$ROOT/sdk/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  echo "[venv] up to date"
  exit 0
fi
echo "[venv] installing the orchestrator, the SDK and dev tools into .venv"
log="$VENV/pip-install.log"
if ! { "$VENV/bin/python" -m pip install -q --upgrade pip &&
  "$VENV/bin/python" -m pip install -q -e "$ROOT/sdk[cli]" -e "$ROOT[dev]"; } >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  echo "[venv] pip install failed (full log: .venv/pip-install.log)" >&2
  exit 1
fi
echo "$want" >"$STAMP"
