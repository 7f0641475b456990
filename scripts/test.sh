#!/usr/bin/env bash
# The whole test suite against real Docker, PostgreSQL, Redis and an OCI registry.
# Installs and starts whatever is missing first. Extra arguments go to pytest; without any, the
# suite runs on two workers, a test module per worker at a time (module fixtures such as one
# orchestrator per module stay on one worker), under a short temporary root: the orchestrators
# the tests start keep unix sockets there, and a socket path has room for ~100 bytes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/ensure-docker.sh
bash scripts/ensure-gvisor.sh
bash scripts/ensure-services.sh
bash scripts/bootstrap-venv.sh
bash scripts/build-ui.sh
bash scripts/ensure-chromium.sh
bash plugin-base-images/build.sh
.venv/bin/ruff check orchestrator sdk tests bench examples
.venv/bin/mypy
if [ "$#" -gt 0 ]; then
    exec .venv/bin/pytest "$@"
fi
base="/tmp/st-$$"  # short: an orchestrator's sockets live under it
trap 'rm -rf "$base"' EXIT
.venv/bin/pytest -n 2 --dist loadfile --basetemp="$base"
