"""Secrets hidden from what the service shows: ``check-config``, ``/config`` and bus log lines.

Apart from the settings model because the bus masks its URL in log lines without caring how
settings are loaded.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "********"
SECRET_KEY_RE = re.compile(r"password|token|secret", re.IGNORECASE)
_USERINFO_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^:/@]*):([^@/]*)@")
_SECRET_QUERY_RE = re.compile(r"([?&][^=&]*(?:password|token|secret)[^=&]*)=([^&]*)", re.I)


def mask_secrets(value: Any, key: str = "") -> Any:
    """Plain settings data with the values of secret-named keys and URL passwords masked."""
    if isinstance(value, dict):
        return {k: mask_secrets(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v, key) for v in value]
    if isinstance(value, str):
        if SECRET_KEY_RE.search(key) and value:
            return MASK
        return mask_url(value) if "://" in value else value
    return value


def mask_url(url: str) -> str:
    """Hide the password of a URL's userinfo (``redis://user:pw@host`` -> ``user:********``).

    A regex rather than urlsplit: Sentinel/Cluster URLs list several ``host:port`` pairs, which
    urlsplit cannot parse.
    """
    url = _USERINFO_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}:{MASK}@", url, count=1)
    return _SECRET_QUERY_RE.sub(lambda m: f"{m.group(1)}={MASK}", url)
