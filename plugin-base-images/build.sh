#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Build summit/plugin-python:<sdk-version> (+ :latest) from python/Dockerfile
# with the Summit SDK preinstalled. Content-addressed: when the Dockerfile, the
# SDK sources and the base image are unchanged, nothing is rebuilt.
#
# Usage: build.sh [--force]
# Env:   SUMMIT_BASE_IMAGE    base image to use (skips the pull/bootstrap choice)
#        SUMMIT_SDK_DIR       SDK source dir (default: <repo>/sdk)
#        SUMMIT_PLUGIN_IMAGE  image repository (default: summit/plugin-python)
#        SUMMIT_FORCE_BUILD=1 same as --force
#        SUMMIT_PULL_TIMEOUT  seconds for `docker pull python:3.11-slim` (default 20)
#        SUMMIT_PULL_RETRY_SECONDS  after a failed pull, do not retry for this long (default 3600)
#        PYTHON               python used for `pip wheel` (default <repo>/.venv/bin/python, else python3)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
SUMMIT_LOG_TAG=plugin-image
# shellcheck source=../scripts/lib.sh
. "$REPO/scripts/lib.sh"

FORCE="${SUMMIT_FORCE_BUILD:-0}"
for arg in "$@"; do
  case "$arg" in
    --force|-f) FORCE=1 ;;
    -h|--help) awk 'NR > 2 && /^#/ { sub(/^# ?/, ""); print; next } NR > 2 { exit }' "$0"; exit 0 ;;
    *) summit_die "unknown argument: $arg (usage: $0 [--force])" ;;
  esac
done

START=$(date +%s)
IMAGE_REPO="${SUMMIT_PLUGIN_IMAGE:-summit/plugin-python}"
SLIM_IMAGE="python:3.11-slim"
DEBIAN_IMAGE="${SUMMIT_DEBIAN_IMAGE:-summit/debian-python:bookworm}"
CONTEXT_SRC="$HERE/python"
BUILD_DIR="$CONTEXT_SRC/.build"
SDK_DIR="${SUMMIT_SDK_DIR:-$REPO/sdk}"
SDK_DIR="$(cd "$SDK_DIR" 2>/dev/null && pwd)" || summit_die "SDK dir not found: ${SUMMIT_SDK_DIR:-$REPO/sdk}"
[ -f "$SDK_DIR/pyproject.toml" ] || summit_die "no pyproject.toml in $SDK_DIR"
[ -d "$SDK_DIR/summit_sdk" ] || summit_die "no summit_sdk package in $SDK_DIR"

if [ -z "${PYTHON:-}" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
command -v "$PYTHON" >/dev/null 2>&1 || summit_die "python not found: $PYTHON"

if ! docker info >/dev/null 2>&1; then
  "$REPO/scripts/ensure-docker.sh"
fi

SDK_VERSION="$("$PYTHON" - "$SDK_DIR/pyproject.toml" <<'EOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)["project"]
if project.get("name", "").replace("_", "-").lower() != "summit-plugin-sdk":
    sys.exit(f"unexpected project name {project.get('name')!r}")
print(project["version"])
EOF
)" || summit_die "cannot read the SDK version from $SDK_DIR/pyproject.toml"

# ------------------------------------------------------------ base image
mkdir -p "$BUILD_DIR"
pull_marker="$BUILD_DIR/.pull-failed"
if [ -n "${SUMMIT_BASE_IMAGE:-}" ]; then
  BASE_IMAGE="$SUMMIT_BASE_IMAGE"
  docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 || {
    summit_log "pulling $BASE_IMAGE"
    timeout "${SUMMIT_PULL_TIMEOUT:-20}" docker pull -q "$BASE_IMAGE" >/dev/null \
      || summit_die "SUMMIT_BASE_IMAGE=$BASE_IMAGE is neither local nor pullable"
  }
elif docker image inspect "$SLIM_IMAGE" >/dev/null 2>&1; then
  BASE_IMAGE="$SLIM_IMAGE"
else
  BASE_IMAGE=""
  # Remember a failed pull for a while so repeated (no-op) builds stay fast offline.
  if [ -f "$pull_marker" ] && \
     [ $(( $(date +%s) - $(stat -c %Y "$pull_marker") )) -lt "${SUMMIT_PULL_RETRY_SECONDS:-3600}" ]; then
    summit_log "$SLIM_IMAGE not local and a pull failed recently; using $DEBIAN_IMAGE"
  else
    summit_log "trying docker pull $SLIM_IMAGE (timeout ${SUMMIT_PULL_TIMEOUT:-20}s)"
    if timeout "${SUMMIT_PULL_TIMEOUT:-20}" docker pull -q "$SLIM_IMAGE" >/dev/null 2>&1; then
      BASE_IMAGE="$SLIM_IMAGE"
      rm -f "$pull_marker"
    else
      touch "$pull_marker"
      summit_log "cannot pull $SLIM_IMAGE; falling back to the debootstrapped base"
    fi
  fi
  if [ -z "$BASE_IMAGE" ]; then
    "$HERE/bootstrap-debian.sh"
    BASE_IMAGE="$DEBIAN_IMAGE"
  fi
fi
BASE_ID="$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")"
summit_log "base image $BASE_IMAGE (${BASE_ID:7:12})"

# ------------------------------------------------------------ input hash
# Dockerfile + SDK sources (pyproject.toml, summit_sdk/**) + base image id.
INPUT_HASH="$(
  cd "$SDK_DIR"
  {
    printf 'summit-plugin-image/v1\nbase %s\n' "$BASE_ID"
    printf 'Dockerfile %s\n' "$(sha256sum <"$CONTEXT_SRC/Dockerfile" | cut -d' ' -f1)"
    find pyproject.toml summit_sdk -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 \
      | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -d' ' -f1
)"
TAG="$IMAGE_REPO:$SDK_VERSION"
LATEST="$IMAGE_REPO:latest"

current_hash() {
  docker image inspect -f '{{ index .Config.Labels "io.summit.input-hash" }}' "$1" 2>/dev/null || true
}

if [ "$FORCE" != 1 ] && [ "$(current_hash "$LATEST")" = "$INPUT_HASH" ]; then
  # Keep the versioned tag pointing at the same image.
  if [ "$(current_hash "$TAG")" != "$INPUT_HASH" ]; then docker tag "$LATEST" "$TAG"; fi
  summit_log "$TAG up to date (input ${INPUT_HASH:0:12}); nothing to build"
  exit 0
fi

# ------------------------------------------------------------ build context
# The interpreter in the image must match the one that builds the wheels.
host_pyver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
image_pyver="$(docker run --rm --network none --entrypoint python3 "$BASE_IMAGE" \
  -c 'import sys; print("%d.%d" % sys.version_info[:2])')" \
  || summit_die "cannot run python3 in $BASE_IMAGE"
[ "$host_pyver" = "$image_pyver" ] \
  || summit_die "$PYTHON is Python $host_pyver but $BASE_IMAGE has $image_pyver; set PYTHON to a python$image_pyver"

summit_log "preparing build context in ${BUILD_DIR#"$REPO"/}"
find "$BUILD_DIR" -mindepth 1 -maxdepth 1 ! -name .pull-failed -exec rm -rf {} +
mkdir -p "$BUILD_DIR/wheels" "$BUILD_DIR/sdk-src"
cp "$CONTEXT_SRC/Dockerfile" "$BUILD_DIR/Dockerfile"
printf 'sdk-src\n.pull-failed\n' >"$BUILD_DIR/.dockerignore"
# Build from a copy so the SDK's own tree stays untouched (no egg-info/build dirs).
cp "$SDK_DIR/pyproject.toml" "$BUILD_DIR/sdk-src/"
for f in README.md README.rst LICENSE setup.cfg setup.py; do
  if [ -f "$SDK_DIR/$f" ]; then cp "$SDK_DIR/$f" "$BUILD_DIR/sdk-src/"; fi
done
tar -C "$SDK_DIR" --exclude=__pycache__ --exclude='*.pyc' -c summit_sdk | tar -C "$BUILD_DIR/sdk-src" -x

T0=$(date +%s)
summit_log "pip wheel summit-plugin-sdk $SDK_VERSION and its dependencies (python $host_pyver)"
if ! "$PYTHON" -m pip wheel --disable-pip-version-check -q --wheel-dir "$BUILD_DIR/wheels" \
    "$BUILD_DIR/sdk-src" >"$BUILD_DIR/pip-wheel.log" 2>&1; then
  tail -n 30 "$BUILD_DIR/pip-wheel.log" >&2
  summit_die "pip wheel failed"
fi
rm -rf "$BUILD_DIR/sdk-src"
summit_log "wheels ready in $(( $(date +%s) - T0 ))s: $(find "$BUILD_DIR/wheels" -name '*.whl' | wc -l) files"

# ------------------------------------------------------------ docker build
T1=$(date +%s)
summit_log "docker build $TAG (FROM $BASE_IMAGE)"
if ! docker build -q \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --build-arg "SDK_VERSION=$SDK_VERSION" \
    --build-arg "INPUT_HASH=$INPUT_HASH" \
    -t "$TAG" -t "$LATEST" "$BUILD_DIR" >"$BUILD_DIR/docker-build.log" 2>&1; then
  tail -n 40 "$BUILD_DIR/docker-build.log" >&2
  summit_die "docker build failed (full log: $BUILD_DIR/docker-build.log)"
fi
# Drop leftovers: the venv stage image and earlier, now untagged, plugin-python
# images. rmi without -f refuses images still in use, which is what we want.
docker image ls -q --filter dangling=true --filter label=io.summit.stage=plugin-python-venv \
  | xargs -r docker rmi >/dev/null 2>&1 || true
docker image ls -q --filter dangling=true --filter label=io.summit.base=python \
  | xargs -r docker rmi >/dev/null 2>&1 || true
SIZE="$(docker image inspect -f '{{.Size}}' "$TAG")"
summit_log "built $TAG and $LATEST ($(( SIZE / 1024 / 1024 )) MB) in $(( $(date +%s) - T1 ))s; total $(( $(date +%s) - START ))s"
