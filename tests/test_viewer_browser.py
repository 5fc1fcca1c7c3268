"""The live event viewer in a real headless Chromium (Debian's package) driven by Playwright."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from .helpers import REPO, Service, account, face_event

pytestmark = pytest.mark.slow
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    configured = os.environ.get("CHROMIUM_PATH")
    if configured:
        return configured
    found = shutil.which("chromium")
    if found is None:
        # The test setup installs the browser where it is missing (Debian's package).
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for step in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
            subprocess.run(
                [*sudo, *step],
                check=False,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=900,
            )
        found = shutil.which("chromium")
    if found is None:
        pytest.skip("chromium is not installed and apt-get could not install it")
    return found


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    svc = Service()
    yield svc
    svc.close()


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[object]:
    from playwright.async_api import async_playwright

    executable = chromium_path()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1400, "height": 900})
        yield page
        await browser.close()


async def _publish(svc: Service, acc: str, **fields: object) -> None:
    body = {
        "events": [face_event(**fields)],
        "handler_id": "8b8b5937-2e9c-4e8b-a7a7-5caf86621b5a",
        "event_create_time": "2026-01-01T00:00:00Z",
        "event_end_time": "2026-01-01T00:00:00Z",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(svc.url + "/publish", json=body, headers={"Luna-Account-Id": acc}) as resp,
    ):
        assert resp.status == 204


async def test_viewer_shows_exactly_matching_events(service: Service, page) -> None:
    acc = account()
    await page.goto(service.url + "/")
    await page.click("text=Live event viewer")
    await page.fill("#account_id", acc)
    await page.fill("#face-filters input[name=sources]", "cam-1")
    await page.click("#connect")
    await page.wait_for_selector("#status.open")
    await _publish(
        service,
        acc,
        source="cam-1",
        user_data="first",
        face_attributes={"basic_attributes": {"gender": 1, "age": 33}},
        matches=[{"label": "vip", "candidates": [{"similarity": 0.93}]}],
    )
    await _publish(service, acc, source="cam-2", user_data="other camera")
    await _publish(service, acc, source="cam-1", user_data="second")
    await page.wait_for_function("document.querySelectorAll('#events tbody tr').length >= 2")
    await page.wait_for_timeout(300)
    rows = await page.locator("#events tbody tr").all_inner_texts()
    assert len(rows) == 2 and all("cam-1" in r for r in rows) and "cam-2" not in " ".join(rows)
    assert "male, age 33" in rows[1] and "vip (0.930)" in rows[1]
    assert await page.inner_text("#total") == "2"
    await page.click("#events tbody tr:last-child summary")
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "viewer.png"), full_page=True)

    # Pause keeps counting without adding rows; clear empties the table.
    await page.click("#pause")
    await _publish(service, acc, source="cam-1")
    await page.wait_for_function("document.querySelector('#total').textContent === '3'")
    assert await page.locator("#events tbody tr").count() == 2
    await page.click("#clear")
    assert await page.locator("#events tbody tr").count() == 0
    await page.click("#disconnect")
    await page.wait_for_selector("#status.idle")


async def test_viewer_shows_the_luna_error_for_a_bad_filter(service: Service, page) -> None:
    await page.goto(service.url + "/viewer")
    await page.fill("#account_id", account())
    await page.fill("#extra", "gender=7")
    await page.click("#connect")
    await page.wait_for_selector("#error:not([hidden])")
    text = await page.inner_text("#error")
    assert "12012" in text and "gender" in text
    assert await page.inner_text("#status") == "rejected"
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "viewer-error.png"))


async def test_viewer_general_events(service: Service, page) -> None:
    await page.goto(service.url + "/viewer")
    await page.check("input[name=kind][value=general]")
    await page.fill("input[name=event_type]", "crowd")
    await page.click("#connect")
    await page.wait_for_selector("#status.open")
    async with aiohttp.ClientSession() as session:
        for event_type, n in (("queue", 1), ("crowd", 2)):
            async with session.post(
                service.url + "/publish/general",
                json={"event": {"n": n, "source": "hall"}, "event_type": event_type},
            ) as resp:
                assert resp.status == 204
    await page.wait_for_function("document.querySelectorAll('#events tbody tr').length >= 1")
    await page.wait_for_timeout(300)
    rows = await page.locator("#events tbody tr").all_inner_texts()
    assert len(rows) == 1 and "crowd" in rows[0] and "hall" in rows[0]


@pytest.fixture(scope="module")
def jwt_service() -> Iterator[Service]:
    from .jwtkit import SECRET

    svc = Service(env={"LUNA_SENDER_AUTH__MODE": "jwt", "LUNA_SENDER_AUTH__JWT_SECRET": SECRET})
    yield svc
    svc.close()


async def test_viewer_in_jwt_mode_takes_a_token(jwt_service: Service, page) -> None:
    from .jwtkit import token

    acc = account()
    await page.goto(jwt_service.url + "/viewer")
    # A bad token: the page shows the LUNA 401 (read from /viewer/validate, as browsers hide
    # the status of a refused handshake).
    await page.fill("#token", "not-a-token")
    await page.click("#connect")
    await page.wait_for_selector("#error:not([hidden])")
    assert "29010" in await page.inner_text("#error")
    # The token's account: no account id needed on the page.
    await page.fill("#token", token(acc))
    await page.click("#connect")
    await page.wait_for_selector("#status.open")
    body = {
        "events": [face_event(source="cam-7")],
        "handler_id": "h",
        "event_create_time": "2026-01-01T00:00:00Z",
        "event_end_time": "2026-01-01T00:00:00Z",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            jwt_service.url + "/publish",
            json=body,
            headers={"Authorization": "Bearer " + token(acc, "publish")},
        ) as resp,
    ):
        assert resp.status == 204
    await page.wait_for_function("document.querySelectorAll('#events tbody tr').length >= 1")
    assert "cam-7" in await page.inner_text("#events tbody")


async def test_a_tenant_token_watches_general_events_without_recovery(
    jwt_service: Service, page
) -> None:
    """Recovery on /ws/general needs an admin token: the page connects without it (its resume
    box is on by default) and says so, instead of failing the handshake."""
    from .jwtkit import token

    acc = account()
    await page.goto(jwt_service.url + "/viewer")
    await page.check("input[name=kind][value=general]")
    await page.fill("#token", token(acc))
    await page.click("#connect")
    await page.wait_for_selector("#status.open")
    assert "needs an admin token" in await page.inner_text("body")
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            jwt_service.url + "/publish/general",
            json={"event": {"n": 1, "source": "dock"}, "event_type": "t", "account_id": acc},
            headers={"Authorization": "Bearer " + token(acc, "publish")},
        ) as resp,
    ):
        assert resp.status == 204
    await page.wait_for_function("document.querySelectorAll('#events tbody tr').length >= 1")
    assert "dock" in await page.inner_text("#events tbody")


async def test_a_page_of_another_origin_cannot_open_a_stream(
    service: Service, jwt_service: Service, page
) -> None:
    """Cross-site websocket hijacking in a real browser: a page served from another origin (the
    other service's port) opens a socket to this one; the browser sends its Origin, we refuse."""
    await page.goto(jwt_service.url + "/viewer")  # any page of a different origin
    outcome = await page.evaluate(
        """(url) => new Promise((resolve) => {
        const ws = new WebSocket(url);
        ws.onopen = () => resolve("open");
        ws.onclose = (e) => resolve("closed " + e.code);
    })""",
        f"{service.ws_url}/ws/general",
    )
    assert outcome == "closed 1006"
    # The same script on the service's own page is let in.
    await page.goto(service.url + "/viewer")
    outcome = await page.evaluate(
        """(url) => new Promise((resolve) => {
        const ws = new WebSocket(url);
        ws.onopen = () => { resolve("open"); ws.close(); };
        ws.onclose = (e) => resolve("closed " + e.code);
    })""",
        f"{service.ws_url}/ws/general",
    )
    assert outcome == "open"
