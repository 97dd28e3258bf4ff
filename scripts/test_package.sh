#!/usr/bin/env bash
# Usage: scripts/test_package.sh PACKAGE "WHAT NEEDS IT"
# Installs a Debian package one test needs (chromium for the AsyncAPI page test, haproxy for
# the cluster fault test) when it is missing and apt-get can be used (as root). Never fails
# the run: without the package that test skips and says why.
set -uo pipefail

package="$1"
needed_by="$2"
command -v "$package" >/dev/null 2>&1 && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "$package: not installed and apt-get is not usable here; the $needed_by will skip" \
    "(install it: apt-get install $package)" >&2
  exit 0
fi

install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=120 \
    "$package" >&2
}

echo "$package: installing Debian's $package for the $needed_by" >&2
# A fresh machine may have no package lists yet: update them once, then try again.
install || { apt-get update -q >&2 && install; } ||
  echo "$package: apt-get could not install it; the $needed_by will skip" >&2
exit 0
