"""Redis Sentinel backend: ``redis+sentinel://[user:pw@]host:port[,host:port…]/<master>[/db]``.

The client comes from redis-py's ``Sentinel.master_for``: every new connection asks the sentinels
where the master is. So when the master fails over, the pub/sub reader's ordinary reconnect loop
(redis.py) lands on the new master and resubscribes — websockets never notice beyond the gap.
Sentinel credentials: ``?sentinel_username=…&sentinel_password=…``; TLS: ``rediss+sentinel://``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote

from redis.asyncio.sentinel import Sentinel

from luna_sender.bus.redis import NO_RETRY, RedisBus


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


def split_url(url: str) -> tuple[str, str | None, str | None, str, str, dict[str, list[str]]]:
    """(scheme, user, password, hosts, path, query) — urlsplit rejects comma host lists' ports."""
    scheme, rest = url.split("://", 1)
    rest, _, query = rest.partition("?")
    userinfo, _, hostpart = rest.rpartition("@") if "@" in rest.split("/", 1)[0] else ("", "", rest)
    user = password = None
    if userinfo:
        user, _, password = userinfo.partition(":")
        user, password = unquote(user) or None, unquote(password) or None
    hosts, _, path = hostpart.partition("/")
    return scheme, user, password, hosts, path, parse_qs(query)


class SentinelBus(RedisBus):
    def __init__(self, url: str, **options: Any) -> None:
        scheme, user, password, hosts, path, query = split_url(url)
        parts = [p for p in path.split("/") if p]
        if not parts:
            raise ValueError("redis+sentinel:// URL needs a master name: .../<master>[/db]")
        master = parts[0]
        db = int(parts[1]) if len(parts) > 1 else 0
        sentinel_kwargs: dict[str, Any] = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}
        if "sentinel_username" in query:
            sentinel_kwargs["username"] = query["sentinel_username"][0]
        if "sentinel_password" in query:
            sentinel_kwargs["password"] = query["sentinel_password"][0]
        tls = scheme.startswith("rediss")
        sentinel = Sentinel(
            parse_hosts(hosts, 26379),
            sentinel_kwargs=sentinel_kwargs,
            socket_timeout=2.0,
            socket_connect_timeout=1.0,
            ssl=tls,
        )
        # No redis-py retries: they would send a timed-out PUBLISH twice (see redis.py).
        client = sentinel.master_for(
            master, db=db, username=user, password=password, retry=NO_RETRY
        )
        self.master_name = master
        super().__init__(url, client=client, **options)
        self._sentinel = sentinel
