#!/usr/bin/env bash
# Validates docker-compose.yml and docker-compose.cluster.yml against the Compose
# specification's JSON schema (no engine needed), and with `docker compose config` too where
# the Compose plugin is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
compose_files=(docker-compose.yml docker-compose.cluster.yml)
read -r -a uv_cmd <<<"$(scripts/bootstrap.sh)"
"${uv_cmd[@]}" run --frozen check-jsonschema --builtin-schema vendor.compose-spec "${compose_files[@]}"
if docker compose version >/dev/null 2>&1; then
  for file in "${compose_files[@]}"; do
    docker compose -f "$file" config --quiet
  done
fi
