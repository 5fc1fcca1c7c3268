"""Secrets hidden from what the service shows: ``check-config``, ``/config`` and bus log lines.

Apart from the settings model because the bus masks its URL in log lines without caring how
settings are loaded.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "********"
# Names that hold a credential. Plugins take free-form names: a webhook's ``headers`` carry
# ``Authorization`` or ``X-Api-Key``, its URL ``?api_key=`` or ``?sig=``, and /config showed
# them in clear (an outside pass); a public key is no secret.
_SECRET_WORDS = r"password|passwd|token|secret|key|auth|cookie|credential|sig"
SECRET_KEY_RE = re.compile(_SECRET_WORDS, re.IGNORECASE)
_PUBLIC_RE = re.compile(r"public", re.IGNORECASE)
_USERINFO_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^:/@]*):([^@/]*)@")
_SECRET_QUERY_RE = re.compile(rf"([?&][^=&]*(?:{_SECRET_WORDS})[^=&]*)=([^&]*)", re.I)


def mask_secrets(value: Any, key: str = "") -> Any:
    """Plain settings data with the values of secret-named keys and URL passwords masked."""
    if isinstance(value, dict):
        return {k: mask_secrets(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v, key) for v in value]
    if isinstance(value, str):
        if value and SECRET_KEY_RE.search(key) and not _PUBLIC_RE.search(key):
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
