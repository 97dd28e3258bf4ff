#!/usr/bin/env bash
# Installs Debian's haproxy, which the RabbitMQ cluster fault test runs in front of its three
# nodes, when it is missing and apt-get can be used (as root). Never fails the run: without
# haproxy that test skips and says why.
set -uo pipefail

command -v haproxy >/dev/null 2>&1 && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "haproxy: not installed and apt-get is not usable here; the cluster fault test" \
    "will skip (install it: apt-get install haproxy)" >&2
  exit 0
fi

install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=120 haproxy >&2
}

echo "haproxy: installing Debian's haproxy for the cluster fault test" >&2
# A fresh machine may have no package lists yet: update them once, then try again.
install || { apt-get update -q >&2 && install; } ||
  echo "haproxy: apt-get could not install it; the cluster fault test will skip" >&2
exit 0
