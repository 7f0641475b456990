#!/usr/bin/env bash
# The whole test suite against real Docker, PostgreSQL, Redis and an OCI registry.
# Installs and starts whatever is missing first. Extra arguments go to pytest.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/ensure-docker.sh
bash scripts/ensure-gvisor.sh
bash scripts/ensure-services.sh
bash scripts/bootstrap-venv.sh
bash plugin-base-images/build.sh
.venv/bin/ruff check orchestrator sdk tests bench examples
.venv/bin/mypy
exec .venv/bin/pytest "$@"
