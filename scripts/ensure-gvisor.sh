#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Make sure dockerd can run plugin containers under gVisor (SUMMIT_ISOLATION=gvisor): install
# Debian's runsc when it is missing, register it with dockerd as the runtime `runsc` (merged
# into daemon.json, every other key kept), reload dockerd (SIGHUP reloads its runtimes) and
# check that `docker info` lists it. Run it after scripts/ensure-docker.sh. One line of output
# when everything is already in place.
#
# The runtime's arguments are the sandbox's, not tuning: --network=none gives the sandbox no
# network stack (the plugin protocol goes over a unix socket), --host-uds=all lets the plugin
# create its plugin.sock in the mounted folder and lets the host connect to it.
#
# Env: SUMMIT_DOCKER_DAEMON_JSON  dockerd's configuration file (default /etc/docker/daemon.json)
#      SUMMIT_DOCKER_WAIT         seconds to wait for the reloaded dockerd (default 30)
#      SUMMIT_LOG_DIR             where ensure-docker.sh logs dockerd (default /var/log/summit)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SUMMIT_LOG_TAG=ensure-gvisor
# shellcheck source=lib.sh
. "$HERE/lib.sh"

DAEMON_JSON="${SUMMIT_DOCKER_DAEMON_JSON:-/etc/docker/daemon.json}"
WAIT="${SUMMIT_DOCKER_WAIT:-30}"
LOG_DIR="${SUMMIT_LOG_DIR:-/var/log/summit}"
RUNTIME=runsc
RUNTIME_ARGS='["--network=none", "--host-uds=all"]'

docker info >/dev/null 2>&1 || summit_die "docker does not answer; run scripts/ensure-docker.sh first"

# The runtime as dockerd lists it, e.g. {"path":"/usr/bin/runsc","runtimeArgs":[...]}, or "null".
listed_runtime() {
  docker info --format "{{json (index .Runtimes \"$RUNTIME\")}}" 2>/dev/null || echo null
}

# Registered, and with every argument the sandbox relies on (an operator's extra ones are fine).
has_sandbox_args() {
  python3 -c '
import json, sys
listed, wanted = json.loads(sys.argv[1]), json.loads(sys.argv[2])
args = (listed or {}).get("runtimeArgs") or (listed or {}).get("args") or []
sys.exit(0 if listed and set(wanted) <= set(args) else 1)
' "$1" "$RUNTIME_ARGS"
}

if ! command -v runsc >/dev/null 2>&1; then
  summit_apt_install runsc
  command -v runsc >/dev/null 2>&1 || summit_die "runsc installed but not on PATH"
fi
RUNSC_PATH="$(command -v runsc)"
RUNSC_VERSION="$(runsc --version 2>/dev/null || echo 'runsc, version unknown')"
RUNSC_VERSION="${RUNSC_VERSION%%$'\n'*}"  # its first line

if has_sandbox_args "$(listed_runtime)"; then
  summit_log "dockerd runs gVisor as runtime '$RUNTIME' ($RUNSC_VERSION)"
  exit 0
fi

if [ -n "${DOCKER_HOST:-}" ] && [ "${DOCKER_HOST#unix://}" = "$DOCKER_HOST" ]; then
  summit_die "DOCKER_HOST=$DOCKER_HOST is remote: register runsc with runtimeArgs $RUNTIME_ARGS in that daemon's configuration"
fi

# Merge our runtime into daemon.json: other keys and other runtimes stay, an existing runsc
# entry keeps its path and extra arguments. Written beside the file and renamed over it, so
# dockerd never reads half a file. A file that is not a JSON object is left alone.
summit_log "registering $RUNSC_PATH with dockerd as runtime '$RUNTIME' in $DAEMON_JSON"
summit_as_root mkdir -p "$(dirname "$DAEMON_JSON")"
summit_as_root python3 - "$DAEMON_JSON" "$RUNTIME" "$RUNSC_PATH" "$RUNTIME_ARGS" <<'PY' \
  || summit_die "could not update $DAEMON_JSON"
import json, os, sys

path, name, binary, wanted = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
try:
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
except FileNotFoundError:
    text = ""
try:
    config = json.loads(text) if text.strip() else {}
except ValueError as exc:
    sys.exit(f"{path} is not valid JSON ({exc}); fix it by hand, nothing was changed")
if not isinstance(config, dict):
    sys.exit(f"{path} is not a JSON object; fix it by hand, nothing was changed")
runtimes = config.setdefault("runtimes", {})
entry = runtimes.setdefault(name, {})
entry.setdefault("path", binary)
args = entry.get("runtimeArgs") or []
entry["runtimeArgs"] = args + [a for a in wanted if a not in args]
tmp = f"{path}.summit-tmp"
with open(tmp, "w", encoding="utf-8") as fh:
    json.dump(config, fh, indent=2)
    fh.write("\n")
if os.path.exists(path):
    st = os.stat(path)
    os.chmod(tmp, st.st_mode & 0o7777)
os.replace(tmp, path)
PY

# SIGHUP makes dockerd re-read daemon.json; the runtimes are among what it reloads.
DOCKERD_PID=""
if [ -r /var/run/docker.pid ]; then
  DOCKERD_PID="$(cat /var/run/docker.pid)"
fi
if [ -z "$DOCKERD_PID" ] || ! kill -0 "$DOCKERD_PID" 2>/dev/null; then
  DOCKERD_PID="$(pgrep -x -o dockerd || true)"
fi
[ -n "$DOCKERD_PID" ] || summit_die "no dockerd process to reload; is Docker run by another host or a systemd unit? reload it by hand"
summit_log "reloading dockerd (pid $DOCKERD_PID)"
summit_as_root kill -HUP "$DOCKERD_PID"

for ((i = 0; i < WAIT; i++)); do
  if has_sandbox_args "$(listed_runtime)"; then
    summit_log "dockerd runs gVisor as runtime '$RUNTIME' ($RUNSC_VERSION)"
    exit 0
  fi
  sleep 1
done

tail -n 20 "$LOG_DIR/dockerd.log" >&2 2>/dev/null || true
summit_die "dockerd does not list runtime '$RUNTIME' after a reload; see $LOG_DIR/dockerd.log"
