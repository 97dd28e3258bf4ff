#!/usr/bin/env bash
# Validates docker-compose.yml against the Compose specification's JSON schema (no engine
# needed), and with `docker compose config` too where the Compose plugin is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
read -r -a uv_cmd <<<"$(scripts/bootstrap.sh)"
"${uv_cmd[@]}" run --frozen check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
if docker compose version >/dev/null 2>&1; then
  docker compose config --quiet
fi
