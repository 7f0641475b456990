#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Make sure Debian's Chromium is installed for the browser tests (tests/browser/), which drive
# it headless through Playwright's Python package with executable_path=/usr/bin/chromium.
# Playwright's own browser download (`playwright install`) is never used: these machines reach
# Debian's archive, not a browser vendor's CDN.
#
# Env: SUMMIT_CHROMIUM   the browser's path (default /usr/bin/chromium)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SUMMIT_LOG_TAG=ensure-chromium
# shellcheck source=lib.sh
. "$HERE/lib.sh"

CHROMIUM="${SUMMIT_CHROMIUM:-/usr/bin/chromium}"

if [ -x "$CHROMIUM" ] && "$CHROMIUM" --headless --no-sandbox --version >/dev/null 2>&1; then
  summit_log "$("$CHROMIUM" --version 2>/dev/null | head -n1) at $CHROMIUM"
  exit 0
fi
# fonts-liberation: without any font the pages render as boxes in the screenshots.
summit_apt_install chromium fonts-liberation
[ -x "$CHROMIUM" ] || summit_die "chromium was installed but $CHROMIUM is missing"
summit_log "$("$CHROMIUM" --version 2>/dev/null | head -n1) installed at $CHROMIUM"
