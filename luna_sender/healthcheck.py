"""``python -m luna_sender.healthcheck``: the container's HEALTHCHECK, with no curl in the image.

It reads the same settings as the service (config file, ``LUNA_SENDER_*`` environment, the same
Kubernetes service-link rules), so a port or host changed by environment is checked where the
service really listens. Exit 0 when ``/healthcheck`` answers 200, 1 otherwise (502 while the bus
is unreachable, refused connection, timeout), with the reason on one line.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from luna_sender.config import ConfigError, load_settings

WILDCARDS = {"0.0.0.0", "::", ""}


def url() -> str:
    settings = load_settings()
    host = "127.0.0.1" if settings.host in WILDCARDS else settings.host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}/healthcheck"


def main() -> int:
    try:
        target = url()
    except ConfigError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    try:
        with urllib.request.urlopen(target, timeout=3) as response:
            print(f"healthy: {target} -> {response.status}")
            return 0
    except urllib.error.HTTPError as exc:
        print(f"unhealthy: {target} -> {exc.code} {exc.read()[:300]!r}", file=sys.stderr)
    except OSError as exc:
        print(f"unhealthy: {target}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
