#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Fetch the web UI's third-party browser files from the npm registry and copy their dist files
# into orchestrator/web/static/vendor/, which the orchestrator serves at /ui/static/vendor/.
#
# The exact versions are pinned in orchestrator/web/package.json and package-lock.json (both
# committed); the downloaded files are not: they are installed into build/ui/ (git-ignored)
# with `npm ci`, which refuses a lock file that does not match. Nothing here runs a package's
# install scripts. Fast when nothing changed: a stamp holds the lock file's digest.
#
# Without these files the UI still works (plain links and forms) and says so in one line.
#
# Env: SUMMIT_UI_BUILD_DIR   where npm installs (default build/ui)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
SUMMIT_LOG_TAG=build-ui
# shellcheck source=lib.sh
. "$HERE/lib.sh"

WEB="$ROOT/orchestrator/web"
BUILD="${SUMMIT_UI_BUILD_DIR:-$ROOT/build/ui}"
VENDOR="$WEB/static/vendor"
STAMP="$VENDOR/.lock-sha256"

# package (folder under node_modules) : file in it : name served under /ui/static/vendor/
FILES=(
  "htmx.org:dist/htmx.min.js:htmx.min.js"
  "htmx-ext-sse:dist/sse.min.js:htmx-sse.min.js"
  "vega:build/vega.min.js:vega.min.js"
  "vega-lite:build/vega-lite.min.js:vega-lite.min.js"
  "vega-embed:build/vega-embed.min.js:vega-embed.min.js"
)

want="$(sha256sum "$WEB/package-lock.json" | cut -d' ' -f1)"
complete=1
for spec in "${FILES[@]}"; do
  [ -s "$VENDOR/${spec##*:}" ] || complete=0
done
if [ "$complete" -eq 1 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  summit_log "vendor files up to date"
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  summit_apt_install npm
fi

mkdir -p "$BUILD"
cp "$WEB/package.json" "$WEB/package-lock.json" "$BUILD/"
summit_log "npm ci (versions from orchestrator/web/package-lock.json)"
# vega-lite declares node >=22 for its own tools; only its browser build is used here.
if ! (cd "$BUILD" && npm ci --ignore-scripts --no-audit --no-fund --engine-strict=false \
  --loglevel=error >"$BUILD/npm.log" 2>&1); then
  tail -n 30 "$BUILD/npm.log" >&2
  summit_die "npm ci failed (full log: $BUILD/npm.log)"
fi

mkdir -p "$VENDOR"
for spec in "${FILES[@]}"; do
  IFS=: read -r package file name <<<"$spec"
  src="$BUILD/node_modules/$package/$file"
  [ -s "$src" ] || summit_die "$package has no $file"
  install -m 0644 "$src" "$VENDOR/$name"
  # Each file's licence goes with it.
  for licence in LICENSE LICENSE.md license; do
    if [ -f "$BUILD/node_modules/$package/$licence" ]; then
      install -m 0644 "$BUILD/node_modules/$package/$licence" "$VENDOR/$package.LICENSE.txt"
      break
    fi
  done
done
echo "$want" >"$STAMP"
summit_log "copied ${#FILES[@]} files into orchestrator/web/static/vendor/"
