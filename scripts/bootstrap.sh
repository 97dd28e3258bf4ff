#!/usr/bin/env bash
# Installs uv when missing and the locked workspace; prints the uv command to use.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v uv >/dev/null 2>&1; then
  uv_cmd=(uv)
else
  if ! python3 -m uv --version >/dev/null 2>&1; then
    echo "bootstrap: installing uv from PyPI" >&2
    python3 -m pip install --quiet "uv>=0.5" >&2
  fi
  uv_cmd=(python3 -m uv)
fi
"${uv_cmd[@]}" sync --all-packages --frozen --quiet >&2
echo "${uv_cmd[*]}"
