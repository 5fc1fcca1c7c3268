"""Bus URLs with a host list (``redis+sentinel://``, ``redis+cluster://``).

Both multi-host schemes read their URL the same way; keeping the parsing here lets each backend
depend on it without depending on another backend. ``urllib.parse.urlsplit`` cannot be used: it
rejects the port of every host but the last in ``host:port,host:port``.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import parse_qs, unquote


class BusUrl(NamedTuple):
    scheme: str
    user: str | None
    password: str | None
    hosts: str
    path: str
    query: dict[str, list[str]]

    @property
    def tls(self) -> bool:
        return self.scheme.startswith("rediss")


def parse_hosts(netloc_hosts: str, default_port: int) -> list[tuple[str, int]]:
    hosts: list[tuple[str, int]] = []
    for item in netloc_hosts.split(","):
        item = item.strip()
        if not item:
            continue
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
        hosts.append((host or item, int(port) if port else default_port))
    if not hosts:
        raise ValueError("no hosts in bus URL")
    return hosts


def split_url(url: str) -> BusUrl:
    scheme, rest = url.split("://", 1)
    rest, _, query = rest.partition("?")
    userinfo, _, hostpart = rest.rpartition("@") if "@" in rest.split("/", 1)[0] else ("", "", rest)
    user = password = None
    if userinfo:
        user, _, password = userinfo.partition(":")
        user, password = unquote(user) or None, unquote(password) or None
    hosts, _, path = hostpart.partition("/")
    return BusUrl(scheme, user, password, hosts, path, parse_qs(query))
