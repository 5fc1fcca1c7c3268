"""Secrets hidden from what the service shows: ``check-config``, ``/config`` and bus log lines.

Apart from the settings model because the bus masks its URL in log lines without caring how
settings are loaded.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_plus

MASK = "********"
# Names that hold a credential. Plugins take free-form names: a webhook's ``headers`` carry
# ``Authorization`` or ``X-Api-Key``, its URL ``?api_key=`` or ``?sig=``, and /config showed
# them in clear (an outside pass); a public key is no secret.
_SECRET_WORDS = r"password|passwd|token|secret|key|auth|cookie|credential|sig"
SECRET_KEY_RE = re.compile(_SECRET_WORDS, re.IGNORECASE)
_PUBLIC_RE = re.compile(r"public", re.IGNORECASE)
_ALWAYS_SECRET_RE = re.compile(r"password|passwd|token|secret|credential|cookie", re.IGNORECASE)


def _secret(name: str) -> bool:
    return bool(SECRET_KEY_RE.search(name)) and not _PUBLIC_RE.search(name)


def mask_secrets(value: Any, key: str = "", hidden: bool = False) -> Any:
    """Plain settings data with the values of secret-named keys and URL passwords masked. A
    number under a secret name is masked too, and so is all a mapping holds under one of the
    names that always mean a credential (``password: 12345`` and ``token: {inner: ...}`` were
    shown); ``auth`` or ``key`` may name a section, whose entries are judged by their own."""
    if isinstance(value, dict):
        inner = hidden or bool(_ALWAYS_SECRET_RE.search(key))
        return {k: mask_secrets(v, k, inner) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v, key, hidden) for v in value]
    if value in (None, "") or isinstance(value, bool):
        return value
    if hidden or _secret(key):
        return MASK
    return mask_url(value) if isinstance(value, str) and "://" in value else value


def _query_secret(name: str) -> bool:
    # In a query a ``jwt`` is a bearer token too (in settings it names the jwt section's keys).
    return _secret(name) or "jwt" in name.lower()


def mask_params(query: str) -> str:
    """A query string (no ``?``) with the values of credential-named parameters masked: the
    names are looked for decoded and in every ``;`` piece (``%74oken=``, ``token;=``,
    ``a=1;token=``). Shared by /config's URLs and every log line showing a request's query."""
    return "&".join(_mask_param(param) for param in query.split("&"))


def _mask_param(param: str) -> str:
    name, eq, _value = param.partition("=")
    names = (unquote_plus(piece.partition("=")[0]) for piece in param.split(";"))
    return f"{name}={MASK}" if eq and any(_query_secret(n) for n in names) else param


def mask_url(url: str) -> str:
    """Hide the password of a URL's userinfo (``redis://user:pw@host`` -> ``user:********``) and
    the values of credential-named query parameters.

    Not urlsplit: Sentinel/Cluster URLs list several ``host:port`` pairs, which it cannot parse.
    The userinfo ends at the last ``@`` before the path, as redis-py reads it: a password with
    an ``@`` of its own was shown from there on.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    # The userinfo ends at the last "@" before the query: a password's own "/" or "#" (which the
    # multi-host backends take unencoded) showed the whole password on /config (an outside pass).
    query_at = rest.find("?")
    at_sign = rest.rfind("@", 0, query_at if query_at >= 0 else len(rest))
    start = at_sign + 1
    cut = min(
        (i for i in (rest.find("/", start), rest.find("?", start)) if i >= 0), default=len(rest)
    )
    netloc, tail = rest[:cut], rest[cut:]
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.partition(":")[0] + ":" + MASK
    path, q, query = tail.partition("?")
    if q:
        query = mask_params(query)
    return f"{scheme}://{userinfo}{at}{hosts}{path}{q}{query}"
