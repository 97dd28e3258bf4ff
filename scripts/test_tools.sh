#!/usr/bin/env bash
# Installs the tools that only some tests need, when missing and apt-get can: haproxy for the
# RabbitMQ cluster fault test (tests/e2e/test_cluster_faults.py). Never fails the run: a test
# whose tool could not be had skips, saying why.
set -uo pipefail

if command -v haproxy >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "test tools: haproxy is missing and apt-get cannot install it here (needs root);" \
    "the cluster fault test will skip" >&2
  exit 0
fi
echo "test tools: installing haproxy (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q haproxy >/dev/null 2>&1; then
  # A fresh machine may have no package lists yet.
  apt-get update -q >/dev/null 2>&1
  apt-get install -y -q haproxy >/dev/null 2>&1 ||
    echo "test tools: apt-get install haproxy failed; the cluster fault test will skip" >&2
fi
exit 0
