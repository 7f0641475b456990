#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Build summit/orchestrator:<version> (+ :latest) from orchestrator/Dockerfile: the
# orchestrator (`summit serve`, `summit worker`) and the SDK in a venv, run as uid 10001.
# Content-addressed like plugin-base-images/build.sh: when the Dockerfile, this script, the
# orchestrator and SDK sources and the base image are unchanged, nothing is rebuilt.
# Prints the image size at the end.
#
# The base is python:3.11-slim when it is local or can be pulled, otherwise the
# debootstrapped summit/debian-python:bookworm of plugin-base-images/bootstrap-debian.sh
# (the plugin base image's fallback, shared with it). Dependencies are fetched on this host
# as wheels for the base image's Python, libc and CPU, so `docker build` needs no network.
# The build context is a temporary folder holding only the Dockerfile and those wheels:
# no checkout file (.venv, .summit, tests, secrets) ever reaches the Docker daemon.
#
# Usage: build-orchestrator-image.sh [--force]
# Env:   SUMMIT_ORCHESTRATOR_IMAGE       image repository (default: summit/orchestrator)
#        SUMMIT_ORCHESTRATOR_BASE_IMAGE  base image to use (skips the pull/bootstrap choice)
#        SUMMIT_FORCE_BUILD=1            same as --force
#        SUMMIT_PULL_TIMEOUT             seconds for `docker pull python:3.11-slim` (default 20)
#        SUMMIT_PULL_RETRY_SECONDS       after a failed pull, do not retry for this long (default 3600)
#        PYTHON                          python that runs pip (default <repo>/.venv/bin/python, else python3)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
SUMMIT_LOG_TAG=orchestrator-image
# shellcheck source=lib.sh
. "$HERE/lib.sh"

FORCE="${SUMMIT_FORCE_BUILD:-0}"
for arg in "$@"; do
  case "$arg" in
    --force|-f) FORCE=1 ;;
    -h|--help) awk 'NR > 2 && /^#/ { sub(/^# ?/, ""); print; next } NR > 2 { exit }' "$0"; exit 0 ;;
    *) summit_die "unknown argument: $arg (usage: $0 [--force])" ;;
  esac
done

START=$(date +%s)
IMAGE_REPO="${SUMMIT_ORCHESTRATOR_IMAGE:-summit/orchestrator}"
SLIM_IMAGE="python:3.11-slim"
DEBIAN_IMAGE="${SUMMIT_DEBIAN_IMAGE:-summit/debian-python:bookworm}"
DOCKERFILE="$REPO/orchestrator/Dockerfile"
SDK_DIR="$REPO/sdk"
# The plugin base image's marker: one failed pull of python:3.11-slim spares both builds the wait.
PULL_MARKER="$REPO/plugin-base-images/python/.build/.pull-failed"

[ -f "$DOCKERFILE" ] || summit_die "no Dockerfile at ${DOCKERFILE#"$REPO"/}"
[ -f "$REPO/pyproject.toml" ] && [ -d "$REPO/orchestrator" ] || summit_die "not a Summit checkout: $REPO"
[ -f "$SDK_DIR/pyproject.toml" ] && [ -d "$SDK_DIR/summit_sdk" ] || summit_die "no SDK in $SDK_DIR"

if [ -z "${PYTHON:-}" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
command -v "$PYTHON" >/dev/null 2>&1 || summit_die "python not found: $PYTHON"
"$PYTHON" -m pip --version >/dev/null 2>&1 || summit_die "$PYTHON has no pip"

if ! docker info >/dev/null 2>&1; then
  "$HERE/ensure-docker.sh"
fi

# "<orchestrator version> <sdk version>", checking that each pyproject is the one we expect.
read -r VERSION SDK_VERSION < <("$PYTHON" - "$REPO/pyproject.toml" "$SDK_DIR/pyproject.toml" <<'EOF'
import sys, tomllib
versions = []
for path, expected in zip(sys.argv[1:], ("summit-orchestrator", "summit-plugin-sdk")):
    with open(path, "rb") as f:
        project = tomllib.load(f)["project"]
    if project.get("name", "").replace("_", "-").lower() != expected:
        sys.exit(f"{path}: expected project {expected}, found {project.get('name')!r}")
    versions.append(project["version"])
print(*versions)
EOF
) || true
[ -n "${VERSION:-}" ] && [ -n "${SDK_VERSION:-}" ] || summit_die "cannot read the versions from pyproject.toml and sdk/pyproject.toml"

# ------------------------------------------------------------ base image
# The same choice as plugin-base-images/build.sh makes, in the same order.
if [ -n "${SUMMIT_ORCHESTRATOR_BASE_IMAGE:-}" ]; then
  BASE_IMAGE="$SUMMIT_ORCHESTRATOR_BASE_IMAGE"
  docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 || {
    summit_log "pulling $BASE_IMAGE"
    timeout "${SUMMIT_PULL_TIMEOUT:-20}" docker pull -q "$BASE_IMAGE" >/dev/null \
      || summit_die "SUMMIT_ORCHESTRATOR_BASE_IMAGE=$BASE_IMAGE is neither local nor pullable"
  }
elif docker image inspect "$SLIM_IMAGE" >/dev/null 2>&1; then
  BASE_IMAGE="$SLIM_IMAGE"
else
  BASE_IMAGE=""
  if [ -f "$PULL_MARKER" ] && \
     [ $(( $(date +%s) - $(stat -c %Y "$PULL_MARKER") )) -lt "${SUMMIT_PULL_RETRY_SECONDS:-3600}" ]; then
    summit_log "$SLIM_IMAGE not local and a pull failed recently; using $DEBIAN_IMAGE"
  else
    summit_log "trying docker pull $SLIM_IMAGE (timeout ${SUMMIT_PULL_TIMEOUT:-20}s)"
    if timeout "${SUMMIT_PULL_TIMEOUT:-20}" docker pull -q "$SLIM_IMAGE" >/dev/null 2>&1; then
      BASE_IMAGE="$SLIM_IMAGE"
      rm -f "$PULL_MARKER"
    else
      mkdir -p "$(dirname "$PULL_MARKER")"
      touch "$PULL_MARKER"
      summit_log "cannot pull $SLIM_IMAGE; falling back to the debootstrapped base"
    fi
  fi
  if [ -z "$BASE_IMAGE" ]; then
    "$REPO/plugin-base-images/bootstrap-debian.sh"  # does nothing when the image exists
    BASE_IMAGE="$DEBIAN_IMAGE"
  fi
fi
BASE_ID="$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")"
summit_log "base image $BASE_IMAGE (${BASE_ID:7:12})"

# The web UI's third-party scripts (htmx, Vega) are fetched by npm into the package's static
# folder first: the image ships them, and they are part of the input below.
bash "$REPO/scripts/build-ui.sh"

# ------------------------------------------------------------ input hash
# The image is a function of: the base image, the Dockerfile, this script (it picks the
# wheels), the two pyproject.toml files and the two packages' sources. The READMEs are not
# inputs: the wheels are built with a stub README (see below).
INPUT_HASH="$(
  {
    printf 'summit-orchestrator-image/v1\nbase %s\n' "$BASE_ID"
    cd "$REPO"
    find orchestrator sdk/summit_sdk -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 \
      | LC_ALL=C sort -z | xargs -0 sha256sum
    sha256sum pyproject.toml sdk/pyproject.toml "scripts/$(basename "${BASH_SOURCE[0]}")"
  } | sha256sum | cut -d' ' -f1
)"
TAG="$IMAGE_REPO:$VERSION"
LATEST="$IMAGE_REPO:latest"

input_hash_of() {
  docker image inspect -f '{{ index .Config.Labels "io.summit.input-hash" }}' "$1" 2>/dev/null || true
}

report_size() {
  local size
  size="$(docker image inspect -f '{{.Size}}' "$TAG")"
  summit_log "image $TAG size: $size bytes ($(( size / 1024 / 1024 )) MB)"
}

if [ "$FORCE" != 1 ] && [ "$(input_hash_of "$LATEST")" = "$INPUT_HASH" ]; then
  if [ "$(input_hash_of "$TAG")" != "$INPUT_HASH" ]; then docker tag "$LATEST" "$TAG"; fi
  summit_log "$TAG up to date (input ${INPUT_HASH:0:12}); nothing to build"
  report_size
  exit 0
fi

# ------------------------------------------------------------ target platform
# Wheels are chosen for the interpreter in the base image, not for this host's: its Python
# version (a marker such as `python_full_version < "3.11.3"` must be read for the image's
# Python), its glibc (a host with a newer one would fetch wheels the image cannot load) and
# its CPU. The facts come from the image itself.
TARGET_JSON="$(
  docker run --rm --network none --entrypoint python3 "$BASE_IMAGE" -c '
import json, os, platform, sys
def version(info):
    text = "%d.%d.%d" % (info.major, info.minor, info.micro)
    return text if info.releaselevel == "final" else text + info.releaselevel[0] + str(info.serial)
# The fields of a PEP 508 marker environment, computed as packaging computes them.
markers = {
    "implementation_name": sys.implementation.name,
    "implementation_version": version(sys.implementation.version),
    "os_name": os.name,
    "platform_machine": platform.machine(),
    "platform_release": platform.release(),
    "platform_system": platform.system(),
    "platform_version": platform.version(),
    "python_full_version": platform.python_version(),
    "platform_python_implementation": platform.python_implementation(),
    "python_version": "%d.%d" % sys.version_info[:2],
    "sys_platform": sys.platform,
}
print(json.dumps({"markers": markers, "libc": platform.libc_ver()}))
'
)" || summit_die "cannot run python3 in $BASE_IMAGE"
read -r IMG_PYFULL IMG_PYVER IMG_IMPL IMG_LIBC IMG_LIBC_VERSION IMG_ARCH < <(
  "$PYTHON" -c 'import json, sys; t = json.loads(sys.argv[1]); m = t["markers"]
print(m["python_full_version"], m["python_version"], m["implementation_name"], *t["libc"], m["platform_machine"])' \
    "$TARGET_JSON"
) || true
[ -n "${IMG_ARCH:-}" ] || summit_die "cannot read the Python facts of $BASE_IMAGE: $TARGET_JSON"
[ "$IMG_IMPL" = cpython ] || summit_die "$BASE_IMAGE runs $IMG_IMPL, not CPython"
[ "$IMG_LIBC" = glibc ] || summit_die "$BASE_IMAGE uses ${IMG_LIBC:-no known libc}, not glibc; this script fetches manylinux wheels only"
case "$IMG_PYVER" in
  3.1[1-9]) ;;
  *) summit_die "$BASE_IMAGE has Python $IMG_PYVER; the orchestrator needs 3.11 or later" ;;
esac
glibc_minor="${IMG_LIBC_VERSION#2.}"
glibc_minor="${glibc_minor%%.*}"
PLATFORM_ARGS=()
for (( minor = glibc_minor; minor >= 17; minor-- )); do
  PLATFORM_ARGS+=(--platform "manylinux_2_${minor}_${IMG_ARCH}")
done
PLATFORM_ARGS+=(--platform "manylinux2014_$IMG_ARCH")

# ------------------------------------------------------------ build context
WORK="$(mktemp -d "${TMPDIR:-/tmp}/summit-orchestrator-image.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
CONTEXT="$WORK/context"
mkdir -p "$CONTEXT/wheels" "$WORK/src/orchestrator" "$WORK/src/sdk"
cp "$DOCKERFILE" "$CONTEXT/Dockerfile"

# Copies of the two projects, so neither tree gets build/ or egg-info folders, and the
# wheels do not depend on README.md (the package metadata gets a one-line description).
cp "$REPO/pyproject.toml" "$WORK/src/orchestrator/"
tar -C "$REPO" --exclude=__pycache__ --exclude='*.pyc' --exclude='orchestrator/Dockerfile' \
  -c orchestrator | tar -C "$WORK/src/orchestrator" -x
printf 'Summit orchestrator %s: see the project README.\n' "$VERSION" >"$WORK/src/orchestrator/README.md"
cp "$SDK_DIR/pyproject.toml" "$WORK/src/sdk/"
tar -C "$SDK_DIR" --exclude=__pycache__ --exclude='*.pyc' -c summit_sdk | tar -C "$WORK/src/sdk" -x
printf 'Summit plugin SDK %s: see the project README.\n' "$SDK_VERSION" >"$WORK/src/sdk/README.md"

# Third-party requirements of both projects (the SDK itself is built here, never fetched:
# a package of the same name on an index must not stand in for it).
"$PYTHON" - "$REPO/pyproject.toml" "$SDK_DIR/pyproject.toml" >"$WORK/requirements.txt" <<'EOF'
import re, sys, tomllib
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        for requirement in tomllib.load(f)["project"].get("dependencies", []):
            name = re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]
            if name.replace("_", "-").lower() != "summit-plugin-sdk":
                print(requirement)
EOF

T0=$(date +%s)
summit_log "building the summit-orchestrator $VERSION and summit-plugin-sdk $SDK_VERSION wheels"
if ! "$PYTHON" -m pip wheel --disable-pip-version-check -q --no-deps --wheel-dir "$CONTEXT/wheels" \
    "$WORK/src/sdk" "$WORK/src/orchestrator" >"$WORK/pip-wheel.log" 2>&1; then
  tail -n 30 "$WORK/pip-wheel.log" >&2
  summit_die "pip wheel failed"
fi
summit_log "downloading dependency wheels for CPython $IMG_PYFULL, glibc $IMG_LIBC_VERSION, $IMG_ARCH"
# pip evaluates environment markers against the interpreter that runs it, whatever
# --python-version says, and has no option to do otherwise; so pip runs here (with this
# host's index, proxy and certificate configuration) with its marker environment replaced
# by the image's. If pip ever stops reading markers this way, the offline install in the
# Dockerfile fails loudly on the missing wheel; it never installs a wrong one.
if ! "$PYTHON" - "$TARGET_JSON" download --disable-pip-version-check -q --dest "$CONTEXT/wheels" \
    --only-binary=:all: --implementation cp --python-version "$IMG_PYFULL" \
    --abi "cp${IMG_PYVER/./}" "${PLATFORM_ARGS[@]}" \
    -r "$WORK/requirements.txt" >"$WORK/pip-download.log" 2>&1 <<'EOF'
import json, sys
from pip._internal.cli.main import main
from pip._vendor.packaging import markers
target = json.loads(sys.argv[1])["markers"]
markers.default_environment = lambda: dict(target)
sys.exit(main(sys.argv[2:]))
EOF
then
  tail -n 30 "$WORK/pip-download.log" >&2
  summit_die "pip download failed (a dependency without a wheel for this platform?)"
fi
summit_log "wheels ready in $(( $(date +%s) - T0 ))s: $(find "$CONTEXT/wheels" -name '*.whl' | wc -l) files," \
  "$(du -sm "$CONTEXT/wheels" | cut -f1) MB"

# ------------------------------------------------------------ docker build
# Drop the venv stage's image (also what a failed build left of it) and earlier, now untagged,
# orchestrator images. rmi without -f refuses images still in use, which is what we want.
drop_leftovers() {
  docker image ls -q --filter dangling=true --filter label=io.summit.stage=orchestrator-venv \
    | xargs -r docker rmi >/dev/null 2>&1 || true
  docker image ls -q --filter dangling=true --filter label=io.summit.image=orchestrator \
    | xargs -r docker rmi >/dev/null 2>&1 || true
}
T1=$(date +%s)
summit_log "docker build $TAG (FROM $BASE_IMAGE)"
# --force-rm: the classic builder otherwise keeps the container of a failed step.
if ! docker build -q --force-rm \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --build-arg "VERSION=$VERSION" \
    --build-arg "SDK_VERSION=$SDK_VERSION" \
    --build-arg "INPUT_HASH=$INPUT_HASH" \
    -t "$TAG" -t "$LATEST" "$CONTEXT" >"$WORK/docker-build.log" 2>&1; then
  tail -n 40 "$WORK/docker-build.log" >&2
  drop_leftovers
  summit_die "docker build failed"
fi
drop_leftovers
summit_log "built $TAG and $LATEST in $(( $(date +%s) - T1 ))s; total $(( $(date +%s) - START ))s"
report_size
