#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what it needs (Chromium too, for the
# AsyncAPI page test; haproxy, for the cluster test; promtool, for the alert rules; each
# when apt-get can), starts RabbitMQ and Redis when they are installed but stopped, runs
# every test, TEST_WORKERS (default 4) at a time with pytest-xdist. Extra arguments go to
# pytest (`-n 0` runs them one at a time).
set -euo pipefail
cd "$(dirname "$0")/.."
read -r -a uv_cmd <<<"$(scripts/bootstrap.sh)"
scripts/services.sh
scripts/test_package.sh chromium "AsyncAPI page test"
scripts/test_package.sh haproxy "cluster fault test"
# promtool for the alert-rule and dashboard tests (taken from Debian's package if missing).
PROMTOOL="${PROMTOOL:-$(scripts/promtool.sh)}"
export PROMTOOL
# Fault-schedule seeds replay identically only with the same string hashing.
export PYTHONHASHSEED="${PYTHONHASHSEED:-0}"
# Most tests wait on processes and the network: 4 workers keep 2 cores busy. Tests go out
# one at a time (longest first, see conftest.py), so no worker queues several long ones.
exec "${uv_cmd[@]}" run --frozen pytest -n "${TEST_WORKERS:-4}" --dist load --maxschedchunk 1 "$@"
