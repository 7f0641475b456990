#!/usr/bin/env bash
# Build summit/plugin-node:latest, the base image of JavaScript plugins. Like the Python base,
# it comes from Debian packages (debootstrap: nodejs) when no registry can be reached.
# Skips when the image exists (pass --force to rebuild).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IMAGE=summit/plugin-node:latest
if [ "${1:-}" != "--force" ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "[plugin-node] $IMAGE already exists"
  exit 0
fi
SUMMIT_DEBIAN_IMAGE=summit/debian-node:bookworm \
SUMMIT_DEBIAN_PACKAGES=nodejs,ca-certificates \
  bash "$HERE/../bootstrap-debian.sh"
docker build -q -t "$IMAGE" --build-arg BASE_IMAGE=summit/debian-node:bookworm "$HERE" >/dev/null
echo "[plugin-node] built $IMAGE"
