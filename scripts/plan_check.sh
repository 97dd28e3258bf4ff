#!/usr/bin/env bash
# The tracking plan (tracking-plan/) against the previous one (docs/tracking-plan.md):
# PLAN_AGAINST when set (a folder or a git revision); else, on a branch, its merge base with
# origin/main (or main); on main itself (CI's fresh clone), the commit before. With no previous commit
# there is nothing to compare, and the check passes.
set -euo pipefail
cd "$(dirname "$0")/.."
uv_cmd=$(scripts/bootstrap.sh)
against="${PLAN_AGAINST:-}"
if [ -z "$against" ]; then
  head=$(git rev-parse HEAD)
  for main in origin/main main; do
    if base=$(git merge-base HEAD "$main" 2>/dev/null) && [ "$base" != "$head" ]; then
      against="$base"
      break
    fi
  done
fi
if [ -z "$against" ]; then
  if git rev-parse -q --verify 'HEAD^' >/dev/null; then
    against=$(git rev-parse 'HEAD^')
  else
    echo "plan-check: no previous commit to compare the tracking plan with: nothing to check"
    exit 0
  fi
fi
# shellcheck disable=SC2086 # the uv command may be two words (python3 -m uv)
exec $uv_cmd run --frozen event-tracker-plan check --plan tracking-plan --against "$against"
