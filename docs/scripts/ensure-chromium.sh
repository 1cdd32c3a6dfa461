#!/usr/bin/env bash
# The docs' browser test drives Debian's chromium through playwright-core (no
# browser download). Installs it when missing and we are root; otherwise says
# what to install. Quiet when it is there.
set -euo pipefail
browser="${CHROMIUM_PATH:-/usr/bin/chromium}"
[ -x "$browser" ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-chromium: $browser is missing: as root, run: apt-get install -y --no-install-recommends chromium" >&2
  echo "ensure-chromium: or point CHROMIUM_PATH at a Chromium binary" >&2
  exit 1
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; } >"$log" 2>&1; then
  echo "ensure-chromium: apt-get install chromium failed:" >&2
  cat "$log" >&2
  exit 1
fi
[ -x "$browser" ] || { echo "ensure-chromium: still no $browser after install" >&2; exit 1; }
