#!/usr/bin/env bash
# Installs Debian's Chromium, which the AsyncAPI page test opens, when it is missing and
# apt-get can be used (as root). Never fails the run: without Chromium that test skips and
# says why.
set -uo pipefail

command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium: not installed and apt-get is not usable here; the AsyncAPI page test" \
    "will skip (install it: apt-get install chromium)" >&2
  exit 0
fi

install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=120 chromium >&2
}

echo "chromium: installing Debian's chromium for the AsyncAPI page test" >&2
# A fresh machine may have no package lists yet: update them once, then try again.
install || { apt-get update -q >&2 && install; } ||
  echo "chromium: could not be installed; the AsyncAPI page test will skip" >&2
exit 0
