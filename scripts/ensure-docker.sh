#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Make sure a Docker Engine answers: install Debian's docker.io when dockerd is
# missing, start dockerd in the background when `docker info` fails, wait for it.
#
# Env: SUMMIT_DOCKER_WAIT   seconds to wait for dockerd (default 60)
#      SUMMIT_LOG_DIR       default /var/log/summit
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SUMMIT_LOG_TAG=ensure-docker
# shellcheck source=lib.sh
. "$HERE/lib.sh"

WAIT="${SUMMIT_DOCKER_WAIT:-60}"
LOG_DIR="${SUMMIT_LOG_DIR:-/var/log/summit}"

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
  summit_apt_install docker.io
  command -v dockerd >/dev/null 2>&1 || summit_die "docker.io installed but dockerd is still missing"
fi

if docker info >/dev/null 2>&1; then
  summit_log "docker is up ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
  exit 0
fi

if [ -n "${DOCKER_HOST:-}" ] && [ "${DOCKER_HOST#unix://}" = "$DOCKER_HOST" ]; then
  summit_die "DOCKER_HOST=$DOCKER_HOST does not answer and is not a local socket; not starting dockerd"
fi

# A live (non-zombie) dockerd process, if any.
dockerd_alive() {
  local pid
  for pid in $(pgrep -x dockerd 2>/dev/null); do
    grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null || return 0
  done
  return 1
}

if dockerd_alive; then
  summit_log "dockerd is running but not answering yet; waiting"
else
  summit_as_root mkdir -p "$LOG_DIR"
  summit_log "starting dockerd (log: $LOG_DIR/dockerd.log)"
  # setsid + nohup: survive the end of this shell; no systemd here.
  [ "$(id -u)" -eq 0 ] || summit_die "dockerd is not running and starting it needs root"
  setsid nohup dockerd >>"$LOG_DIR/dockerd.log" 2>&1 </dev/null &
fi

for ((i = 0; i < WAIT; i++)); do
  if docker info >/dev/null 2>&1; then
    summit_log "docker is up after ${i}s ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
    exit 0
  fi
  sleep 1
done

tail -n 20 "$LOG_DIR/dockerd.log" >&2 2>/dev/null || true
summit_die "dockerd did not answer within ${WAIT}s; see $LOG_DIR/dockerd.log"
