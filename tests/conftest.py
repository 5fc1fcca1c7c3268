"""Fixtures: a private redis-server per test session, the app in-process over real TCP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from aiohttp import ClientSession, TCPConnector
from aiohttp.test_utils import TestServer

from luna_sender.app import build_app
from luna_sender.config.settings import Settings

from .helpers import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, for fault tests that stop or kill it."""
    server = RedisServer()
    server.start()
    yield server
    server.close()


class LiveApp:
    """The application on a real loopback port with a client session."""

    def __init__(self, server: TestServer, session: ClientSession) -> None:
        self.server = server
        self.session = session
        self.app = server.app

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    def ws(
        self,
        path: str = "/ws",
        *,
        account: str | None = None,
        params: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Any:
        headers = dict(kwargs.pop("headers", {}) or {})
        if account is not None:
            headers["Luna-Account-Id"] = account
        return self.session.ws_connect(
            self.url(path), headers=headers, params=params, autoping=True, **kwargs
        )


@pytest.fixture
async def live_app_factory() -> AsyncIterator[Callable[..., Any]]:
    started: list[tuple[TestServer, ClientSession]] = []

    async def make(**settings: Any) -> LiveApp:
        server = TestServer(build_app(Settings(**settings)), host="127.0.0.1")
        await server.start_server()
        session = ClientSession(connector=TCPConnector(limit=0))
        started.append((server, session))
        return LiveApp(server, session)

    yield make
    for server, session in reversed(started):
        await session.close()
        await server.close()


@pytest.fixture
async def memory_app(live_app_factory: Callable[..., Any]) -> LiveApp:
    return await live_app_factory()


@pytest.fixture
async def redis_app(live_app_factory: Callable[..., Any], redis_server: RedisServer) -> LiveApp:
    return await live_app_factory(redis_url=redis_server.url)
