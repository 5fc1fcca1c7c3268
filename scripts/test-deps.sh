#!/usr/bin/env bash
# System packages the test suite needs, installed only when missing, so `make test` is the one
# command a new developer runs on a fresh Debian/Ubuntu machine (and .ci/run calls nothing else).
set -euo pipefail

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
updated=""
apt_update() {
  if [ -z "$updated" ]; then $SUDO apt-get update -qq; updated=1; fi
}

# Fixtures start private redis-servers (and freeze, kill and restart them).
if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server missing: installing it with apt-get"
  apt_update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server
fi

# promtool (Prometheus' linter) checks a real /metrics scrape in tests/test_ops_metrics.py.
# Debian's prometheus package ships it beside the server; installing the package would also pull
# ~15 JS packages and start a Prometheus daemon, so only the promtool binary is taken from it
# (a ~19 MB download, a few seconds).
if ! command -v promtool >/dev/null 2>&1; then
  echo "promtool missing: extracting it from Debian's prometheus package"
  apt_update
  tmp="$(mktemp -d)" && chmod 755 "$tmp"  # apt downloads as the _apt user
  (cd "$tmp" && apt-get download -qq prometheus \
    && dpkg-deb --fsys-tarfile prometheus_*.deb | tar -x ./usr/bin/promtool)
  $SUDO install -m 0755 "$tmp/usr/bin/promtool" /usr/local/bin/promtool
  rm -rf "$tmp"
fi
