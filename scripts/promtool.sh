#!/usr/bin/env bash
# Prints the path of a promtool for the alert-rule and dashboard tests: the one on PATH, or
# one taken out of Debian's prometheus package into .local/tools (downloaded once with
# `apt-get download`; nothing is installed and no Prometheus server is started; the
# package's `prometheus` binary lands beside it, for scripts/dashboard_preview.py). Prints
# nothing, with the reason on stderr, when neither can be had: those tests then skip.
set -uo pipefail
cd "$(dirname "$0")/.."
if command -v promtool >/dev/null 2>&1; then
  command -v promtool
  exit 0
fi
tools="$PWD/.local/tools"
if [ -x "$tools/promtool" ]; then
  echo "$tools/promtool"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "promtool: not found and apt-get is not usable; the alert-rule tests will skip" \
    "(install it: apt-get install prometheus)" >&2
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
download() { (cd "$work" && apt-get download -q prometheus >&2 2>/dev/null); }
echo "promtool: taking it from Debian's prometheus package into $tools" >&2
# A fresh machine may have no package lists yet: update them once (as root), then again.
if ! download && ! { [ "$(id -u)" -eq 0 ] && apt-get update -q >&2 && download; }; then
  echo "promtool: could not download Debian's prometheus package; the alert-rule tests will skip" >&2
  exit 0
fi
dpkg-deb -x "$work"/prometheus_*.deb "$work/x" && mkdir -p "$tools" &&
  cp "$work/x/usr/bin/prometheus" "$tools/prometheus" &&
  cp "$work/x/usr/bin/promtool" "$tools/promtool" && echo "$tools/promtool"
