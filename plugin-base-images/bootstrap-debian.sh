#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Build the root image summit/debian-python:bookworm from Debian packages
# (debootstrap + docker import), for hosts that cannot pull from a container
# registry. Skips when the image exists unless --force is given.
#
# Env: SUMMIT_DEBIAN_MIRROR   mirror to use when the host's apt config has none
#      SUMMIT_DEBIAN_SUITE    default bookworm
#      SUMMIT_DEBIAN_IMAGE    default summit/debian-python:<suite>
#      SUMMIT_DEBIAN_PACKAGES default python3,python3-venv,ca-certificates
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SUMMIT_LOG_TAG=bootstrap-debian
# shellcheck source=../scripts/lib.sh
. "$HERE/../scripts/lib.sh"

FORCE=0
for arg in "$@"; do
  case "$arg" in
    --force|-f) FORCE=1 ;;
    -h|--help) awk 'NR > 2 && /^#/ { sub(/^# ?/, ""); print; next } NR > 2 { exit }' "$0"; exit 0 ;;
    *) summit_die "unknown argument: $arg (usage: $0 [--force])" ;;
  esac
done

SUITE="${SUMMIT_DEBIAN_SUITE:-bookworm}"
IMAGE="${SUMMIT_DEBIAN_IMAGE:-summit/debian-python:$SUITE}"
PACKAGES="${SUMMIT_DEBIAN_PACKAGES:-python3,python3-venv,ca-certificates}"
START=$(date +%s)

docker info >/dev/null 2>&1 || summit_die "docker is not reachable; run scripts/ensure-docker.sh first"

if [ "$FORCE" -eq 0 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  summit_log "$IMAGE already exists (use --force to rebuild)"
  exit 0
fi

command -v debootstrap >/dev/null 2>&1 || summit_apt_install debootstrap
MIRROR="$(summit_debian_mirror)" \
  || summit_die "no Debian mirror in /etc/apt sources; set SUMMIT_DEBIAN_MIRROR"

ROOTFS_PARENT="$(mktemp -d "${TMPDIR:-/var/tmp}/summit-debootstrap.XXXXXX")"
cleanup() {
  # debootstrap may leave /proc or /sys mounted inside the target on failure.
  local m
  for m in proc sys dev/pts dev; do
    if mountpoint -q "$ROOTFS_PARENT/rootfs/$m" 2>/dev/null; then
      umount -l "$ROOTFS_PARENT/rootfs/$m" || true
    fi
  done
  rm -rf --one-file-system "$ROOTFS_PARENT"
}
trap cleanup EXIT
ROOTFS="$ROOTFS_PARENT/rootfs"

summit_log "debootstrap $SUITE from $MIRROR (minbase + $PACKAGES)"
T0=$(date +%s)
if ! debootstrap --variant=minbase --include="$PACKAGES" \
    "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS_PARENT/debootstrap.log" 2>&1; then
  tail -n 30 "$ROOTFS_PARENT/debootstrap.log" >&2 || true
  [ -f "$ROOTFS/debootstrap/debootstrap.log" ] && tail -n 30 "$ROOTFS/debootstrap/debootstrap.log" >&2
  summit_die "debootstrap failed"
fi
summit_log "debootstrap done in $(( $(date +%s) - T0 ))s"

summit_log "trimming docs, man pages, locales, apt lists and caches"
rm -rf "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* \
  "$ROOTFS"/usr/share/locale/* "$ROOTFS"/usr/share/lintian "$ROOTFS"/usr/share/linda \
  "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb \
  "$ROOTFS"/var/cache/debconf/*-old "$ROOTFS"/var/lib/dpkg/*-old \
  "$ROOTFS"/var/log/*.log "$ROOTFS"/var/log/apt/* "$ROOTFS"/tmp/* "$ROOTFS"/var/tmp/*
# Keep the copyright files out too, but leave the directory so dpkg stays happy.
mkdir -p "$ROOTFS/usr/share/doc" "$ROOTFS/usr/share/man"
# Keep future apt runs in derived images from re-adding docs/man/locales.
cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/01-summit-nodoc" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
# Point apt at the same mirror for later `apt-get install` in derived images.
printf 'deb %s %s main\n' "$MIRROR" "$SUITE" >"$ROOTFS/etc/apt/sources.list"
# Docker provides these at run time.
: >"$ROOTFS/etc/resolv.conf"
: >"$ROOTFS/etc/hostname"

# Make sure python3 works inside the tree before importing it.
PYVER=none
if [ -x "$ROOTFS/usr/bin/python3" ]; then
  chroot "$ROOTFS" /usr/bin/python3 -c 'import ensurepip, venv, ssl' \
    || summit_die "python3 in the bootstrapped tree is unusable"
  PYVER="$(chroot "$ROOTFS" /usr/bin/python3 -c 'import platform; print(platform.python_version())')"
fi

OLD_ID="$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
summit_log "importing as $IMAGE (python $PYVER)"
T1=$(date +%s)
tar --numeric-owner -C "$ROOTFS" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change "LABEL io.summit.base-source=debootstrap io.summit.debian-suite=$SUITE io.summit.python-version=$PYVER" \
  --change 'CMD ["/bin/sh"]' \
  --message "summit debootstrap $SUITE minbase + $PACKAGES" \
  - "$IMAGE" >/dev/null
summit_log "import done in $(( $(date +%s) - T1 ))s"

# The replaced image is untagged now; drop it unless something still uses it.
if [ -n "$OLD_ID" ] && [ "$OLD_ID" != "$(docker image inspect -f '{{.Id}}' "$IMAGE")" ]; then
  docker rmi "$OLD_ID" >/dev/null 2>&1 || true
fi
SIZE="$(docker image inspect -f '{{.Size}}' "$IMAGE")"
summit_log "built $IMAGE ($(( SIZE / 1024 / 1024 )) MB) in $(( $(date +%s) - START ))s total"
