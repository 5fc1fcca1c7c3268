"""The viewer reconnects by itself and resumes with ``since`` (#18), in a real headless Chromium.

The service runs in-process on a real port over a private redis-server, so a test can cut the
page's TCP connection from the server side (no closing handshake, as a network blip or a load
balancer does) and publish while the page is away.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from luna_sender.web.context import CTX

from .conftest import LiveApp
from .faults import kill_pubsub
from .helpers import RedisServer, Service, account, face_event, face_message
from .test_viewer_browser import CHROMIUM_ARGS, chromium_path

pytestmark = pytest.mark.slow
# user_data of every row, oldest first (the page inserts new rows at the top).
ROW_TAGS = """() => Array.from(document.querySelectorAll('#events tbody tr pre'))
    .map((pre) => JSON.parse(pre.textContent).event.user_data).reverse()"""


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    executable = chromium_path()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield await browser.new_page(viewport={"width": 1400, "height": 900})
        await browser.close()


async def publish(app: LiveApp, acc: str, *tags: str, source: str = "cam-1") -> None:
    hub = app.app[CTX].hub
    events = [face_event(user_data=tag, source=source) for tag in tags]
    await hub.bus.publish(hub.face_channel(acc), face_message(events))


def cut(app: LiveApp, acc: str) -> int:
    """Abort the account's sockets: RST, no Close frame, so the page sees 1006."""
    conns = [c for c in app.app[CTX].hub.connections if c.account == acc]
    for conn in conns:
        conn.transport.abort()
    return len(conns)


async def rows(page: Any, count: int) -> list[str]:
    await page.wait_for_function(
        f"document.querySelectorAll('#events tbody tr').length >= {count}", timeout=15000
    )
    await asyncio.sleep(0.5)  # a duplicate would arrive right behind
    tags: list[str] = await page.evaluate(ROW_TAGS)
    return tags


async def open_viewer(page: Any, app: LiveApp, acc: str, extra: str = "") -> None:
    await page.goto(app.url("/viewer"))
    await page.fill("#account_id", acc)
    await page.fill("#face-filters input[name=sources]", "cam-1")
    if extra:
        await page.fill("#extra", extra)
    await page.click("#connect")
    await page.wait_for_selector("#status.open")


async def test_viewer_resumes_after_a_cut_with_every_missed_event_once(
    live_app_factory: Callable[..., Any], private_redis: RedisServer, page: Any
) -> None:
    app = await live_app_factory(redis_url=private_redis.url)
    acc = account()
    await open_viewer(page, app, acc)
    await publish(app, acc, "1", "2")
    await publish(app, acc, "other camera", source="cam-2")
    assert await rows(page, 2) == ["1", "2"]

    assert cut(app, acc) == 1
    # Published while the page is away (its first retry waits at least half a second).
    await publish(app, acc, "3")
    await publish(app, acc, "not mine", source="cam-2")
    await publish(app, acc, "4", "5")
    await page.wait_for_selector("#recovery.ok", timeout=15000)
    assert "3 missed events replayed" in await page.inner_text("#recovery")
    await page.wait_for_selector("#status.open")
    await publish(app, acc, "6")
    assert await rows(page, 6) == ["1", "2", "3", "4", "5", "6"]
    assert await page.inner_text("#total") == "6"

    # A second cut: the page resumes from the newest offset, not the first one.
    assert cut(app, acc) == 1
    await publish(app, acc, "7")
    await page.wait_for_function(
        "document.querySelector('#recovery').textContent.includes('1 missed event replayed')",
        timeout=15000,
    )
    assert await rows(page, 7) == ["1", "2", "3", "4", "5", "6", "7"]

    # Disconnect means disconnect: no retry behind the user's back.
    await page.click("#disconnect")
    await page.wait_for_selector("#status.idle")
    await asyncio.sleep(1.5)
    assert await page.inner_text("#status") == "disconnected"
    assert not [c for c in app.app[CTX].hub.connections if c.account == acc]


async def test_viewer_says_events_may_be_missed_when_the_offset_is_unknown_or_expired(
    live_app_factory: Callable[..., Any], private_redis: RedisServer, page: Any
) -> None:
    app = await live_app_factory(redis_url=private_redis.url, history={"size": 3})
    acc = account()
    # An offset the service never gave (typed into the extra query): recovered false, then live.
    await open_viewer(page, app, acc, extra="since=not-an-offset")
    await page.wait_for_selector("#recovery.warn")
    assert "events may have been missed while disconnected" in await page.inner_text("#recovery")
    await publish(app, acc, "0")
    assert await rows(page, 1) == ["0"]

    # An offset older than the window (3 events): six events pass while the page is away.
    await page.click("#disconnect")
    await page.fill("#extra", "")
    await page.click("#connect")  # a fresh stream from the form: the notice is cleared
    await page.wait_for_selector("#status.open")
    assert await page.is_hidden("#recovery")
    await publish(app, acc, "a")
    assert (await rows(page, 2))[-1] == "a"
    assert cut(app, acc) == 1
    for n in range(6):
        await publish(app, acc, f"gone {n}")
    await page.wait_for_selector("#recovery.warn", timeout=15000)
    text = await page.inner_text("#recovery")
    assert "recovery failed" in text and "events may have been missed" in text
    await page.wait_for_selector("#status.open")
    await publish(app, acc, "live")
    assert await rows(page, 3) == ["0", "a", "live"]

    # A break before any event arrived: no offset to resume from, and the page says so.
    await page.click("#disconnect")
    await page.click("#connect")
    await page.wait_for_selector("#status.open")
    assert cut(app, acc) == 1
    await page.wait_for_selector("#recovery.warn", timeout=15000)
    assert "nothing to resume from" in await page.inner_text("#recovery")


async def test_viewer_is_told_when_the_services_event_stream_was_interrupted(
    live_app_factory: Callable[..., Any], private_redis: RedisServer, page: Any
) -> None:
    """The service's own Redis subscription is cut while the page is open: the page's socket
    is closed (1012), the page resumes by itself, and says that events may have been missed."""
    app = await live_app_factory(redis_url=private_redis.url)
    acc = account()
    await open_viewer(page, app, acc)
    await publish(app, acc, "1")
    assert await rows(page, 1) == ["1"]
    assert kill_pubsub(private_redis) == 1
    await page.wait_for_selector("#recovery.warn", timeout=15000)
    text = await page.inner_text("#recovery")
    assert "event stream was interrupted" in text and "events may have been missed" in text
    await page.wait_for_selector("#status.open")
    await publish(app, acc, "2")
    assert await rows(page, 2) == ["1", "2"]


async def publish_http(svc: Service, acc: str, *tags: str) -> None:
    body = {
        "events": [face_event(user_data=tag, source="cam-1") for tag in tags],
        "handler_id": "8b8b5937-2e9c-4e8b-a7a7-5caf86621b5a",
        "event_create_time": "2026-01-01T00:00:00Z",
        "event_end_time": "2026-01-01T00:00:00Z",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(svc.url + "/publish", json=body, headers={"Luna-Account-Id": acc}) as resp,
    ):
        assert resp.status == 204, await resp.text()


async def test_viewer_resumes_across_a_restart_of_its_service(
    private_redis: RedisServer, page: Any
) -> None:
    """The page's instance restarts (1001, then refused connections) while a second instance
    on the same Redis records the account (a recovering client of its own is there): the page
    retries, reaches the new process and resumes from the old process's offset."""
    acc = account()
    first = Service("--redis-url", private_redis.url)
    other = Service("--redis-url", private_redis.url)
    again: Service | None = None
    try:
        async with aiohttp.ClientSession() as session:
            keeper = await session.ws_connect(
                other.ws_url + "/ws", headers={"Luna-Account-Id": acc}, params={"recover": "true"}
            )
            await page.goto(first.url + "/viewer")
            await page.fill("#account_id", acc)
            await page.click("#connect")
            await page.wait_for_selector("#status.open")
            await publish_http(other, acc, "1")
            assert await rows(page, 1) == ["1"]
            assert first.terminate() == 0
            await page.wait_for_function(
                "document.querySelector('#status').textContent.includes('reconnecting')"
            )
            await publish_http(other, acc, "2", "3")
            again = Service("--redis-url", private_redis.url, port=first.port)
            await page.wait_for_selector("#recovery.ok", timeout=30000)
            assert "2 missed events replayed" in await page.inner_text("#recovery")
            await publish_http(other, acc, "4")
            assert await rows(page, 4) == ["1", "2", "3", "4"]
            await keeper.close()
    finally:
        for svc in (first, other, again):
            if svc is not None:
                svc.close()
