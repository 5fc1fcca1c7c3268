#!/usr/bin/env bash
# Installs the benchmark's peers: a separate venv for the Python peers and Debian's nginx + nchan.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .peers/venv/bin/python ]; then
  python3 -m venv .peers/venv
fi
.peers/venv/bin/pip install --quiet --upgrade pip
# broadcaster 0.3.1 silently stops listening with redis-py >= 5.1: pin the version it works with.
.peers/venv/bin/pip install --quiet "python-socketio>=5" aiohttp "redis>=5,<5.1" "broadcaster[redis]" \
  starlette "uvicorn[standard]"
if ! command -v nginx >/dev/null || [ ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
  SUDO=""; [ "$(id -u)" = "0" ] || SUDO="sudo"
  # Read the policy first: `grep -q` closing the pipe early would fail it under pipefail.
  policy="$(apt-cache policy libnginx-mod-nchan 2>/dev/null || true)"
  if [ -z "$(printf '%s' "$policy" | grep Candidate | grep -v '(none)')" ]; then
    $SUDO apt-get update -qq || true
    policy="$(apt-cache policy libnginx-mod-nchan 2>/dev/null || true)"
  fi
  if printf '%s' "$policy" | grep Candidate | grep -qv '(none)'; then
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx libnginx-mod-nchan
    # The benchmark starts its own nginx; don't keep the distribution's default one running
    # (only that one: its pid file, never every nginx on the machine).
    $SUDO systemctl stop nginx 2>/dev/null \
      || { [ -s /run/nginx.pid ] && $SUDO kill "$(cat /run/nginx.pid)"; } || true
  else
    echo "libnginx-mod-nchan is not available here: the nchan peer will be skipped"
  fi
fi
echo "peers ready"
