"""Bus URLs with a host list (``redis+sentinel://``, ``redis+cluster://``).

Both multi-host schemes read their URL the same way; keeping the parsing here lets each backend
depend on it without depending on another backend. ``urllib.parse.urlsplit`` cannot be used: it
rejects the port of every host but the last in ``host:port,host:port``.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit


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
        if port and not (_number(port) and 0 < int(port) < 65536):
            raise ValueError(f"port {port!r} is not a number from 1 to 65535")
        hosts.append((host or item, int(port) if port else default_port))
    if not hosts:
        raise ValueError("no hosts in bus URL")
    return hosts


def _number(text: str) -> bool:
    return text.isascii() and text.isdigit()


def check_url(url: str) -> None:
    """Raise ValueError saying what is wrong with a bus URL, reading it as its backend will but
    without connecting. The backends read their URL only when the service starts, so a bad port
    or option passed ``check-config`` and then ended the start with a traceback (an outside
    pass: ``redis://h:99999/0``, ``?socket_timeout=abc``, a Sentinel URL without a master)."""
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        return
    if scheme in ("redis", "rediss", "unix"):
        from redis.asyncio.connection import parse_url

        parse_url(url)  # the port, and every option in the query
        if scheme != "unix" and urlsplit(url).port == 0:  # redis-py would use 6379 for it
            raise ValueError("port 0 is not a number from 1 to 65535")
        database = url.partition("?")[0].split("://", 1)[1].partition("/")[2].strip("/")
        if scheme != "unix" and database and not _number(database):
            # redis-py would quietly use database 0 for it
            raise ValueError(f"the database {database!r} in the bus URL is not a number")
        return
    parsed = split_url(url)
    parse_hosts(parsed.hosts, 26379)
    parts = [p for p in parsed.path.split("/") if p]
    if "sentinel" in scheme:
        if not parts:
            raise ValueError(f"{scheme}:// URL needs a master name: .../<master>[/db]")
        if len(parts) > 1 and not _number(parts[1]):
            raise ValueError(f"the database {parts[1]!r} in the bus URL is not a number")


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
