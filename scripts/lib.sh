# shellcheck shell=bash
# Shared helpers for Summit's scripts. Source it; do not run it.

summit_log() { printf '[%s] %s\n' "${SUMMIT_LOG_TAG:-summit}" "$*"; }
summit_die() { printf '[%s] ERROR: %s\n' "${SUMMIT_LOG_TAG:-summit}" "$*" >&2; exit 1; }

# Run as root, or through sudo when available.
summit_as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    summit_die "need root to run: $*"
  fi
}

# apt-get update once per process, then install the given packages non-interactively.
_SUMMIT_APT_UPDATED=0
summit_apt_install() {
  command -v apt-get >/dev/null 2>&1 || summit_die "apt-get not found; install $* by hand"
  if [ "$_SUMMIT_APT_UPDATED" -eq 0 ]; then
    summit_log "apt-get update"
    summit_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null \
      || summit_die "apt-get update failed"
    _SUMMIT_APT_UPDATED=1
  fi
  summit_log "apt-get install $*"
  summit_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null \
    || summit_die "apt-get install $* failed"
}

# Print the Debian mirror URL this host's apt uses (deb822 .sources first, then
# one-line sources.list), skipping security/updates archives. Falls back to
# $SUMMIT_DEBIAN_MIRROR. Prints nothing and returns 1 if neither is known.
summit_debian_mirror() {
  local uri=""
  if [ -n "${SUMMIT_DEBIAN_MIRROR:-}" ]; then
    printf '%s\n' "$SUMMIT_DEBIAN_MIRROR"
    return 0
  fi
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    # deb822: URIs may list several; take URIs of stanzas of Types deb whose
    # URI does not point at the security archive.
    uri=$(awk '
      BEGIN { IGNORECASE = 1 }
      /^[[:space:]]*$/ { if (u != "" && t ~ /(^|[[:space:]])deb([[:space:]]|$)/) { print u; exit } u = ""; t = ""; next }
      /^[[:space:]]*#/ { next }
      tolower($1) == "types:"  { t = $0; sub(/^[^:]*:/, "", t) }
      tolower($1) == "uris:"   { for (i = 2; i <= NF; i++) if ($i !~ /security/) { u = $i; break } }
      END { if (u != "" && t ~ /(^|[[:space:]])deb([[:space:]]|$)/) print u }
    ' "$f" | head -n1)
    [ -n "$uri" ] && break
  done
  if [ -z "$uri" ] && [ -r /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" {
        for (i = 2; i <= NF; i++) { if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; continue } if ($i !~ /security/) { print $i; exit } else break }
      }' /etc/apt/sources.list | head -n1)
  fi
  if [ -n "$uri" ]; then
    printf '%s\n' "${uri%/}"
    return 0
  fi
  return 1
}
