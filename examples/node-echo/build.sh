#!/usr/bin/env bash
# Build summit-examples/node-echo:1.0.0 with its manifest in the io.summit.plugin label, the
# way any prebuilt plugin image carries it. Then: summit install summit-examples/node-echo:1.0.0
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$HERE/../.."
PY="${PYTHON:-$ROOT/.venv/bin/python}"
bash "$ROOT/plugin-base-images/node/build.sh"
CTX="$(mktemp -d)"
trap 'rm -rf "$CTX"' EXIT
cp "$HERE/index.js" "$HERE/Dockerfile" "$CTX/"
"$PY" -c 'import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1])), sort_keys=True))' \
  "$HERE/plugin.yaml" >"$CTX/plugin.json"
docker build -q -t "${1:-summit-examples/node-echo:1.0.0}" \
  --label "io.summit.plugin=$(cat "$CTX/plugin.json")" "$CTX" >/dev/null
echo "built ${1:-summit-examples/node-echo:1.0.0}"
