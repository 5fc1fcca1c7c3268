"""Operator routes and LUNA conventions over real HTTP (spec Part 1 "Routes", "Errors")."""

from __future__ import annotations

import re

import pytest

from .conftest import LiveApp

RID = "1536751345,8b8b5937-2e9c-4e8b-a7a7-5caf86621b5a"
RID_RE = re.compile(r"^[0-9]{10},[0-9a-f-]{36}$")


async def test_version(memory_app: LiveApp) -> None:
    async with memory_app.session.get(memory_app.url("/version")) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["Version"]["api"] == 2
    assert set(body["Version"]) == {"api", "major", "minor", "patch"}


async def test_request_id_generated_and_echoed(memory_app: LiveApp) -> None:
    async with memory_app.session.get(memory_app.url("/version")) as resp:
        assert RID_RE.match(resp.headers["Luna-Request-Id"])
    async with memory_app.session.get(
        memory_app.url("/version"), headers={"Luna-Request-Id": RID}
    ) as resp:
        assert resp.headers["Luna-Request-Id"] == RID


@pytest.mark.parametrize(
    "bad",
    [
        "abc",
        "1536751345",
        "153675134,8b8b5937-2e9c-4e8b-a7a7-5caf86621b5a",
        "1536751345,8B8B5937-2E9C-4E8B-A7A7-5CAF86621B5A",
    ],
)
async def test_malformed_request_id(memory_app: LiveApp, bad: str) -> None:
    async with memory_app.session.get(
        memory_app.url("/version"), headers={"Luna-Request-Id": bad}
    ) as resp:
        assert resp.status == 400
        body = await resp.json()
        assert RID_RE.match(resp.headers["Luna-Request-Id"])
    assert body["error_code"] == 12012
    assert "Luna-Request-Id" in body["detail"]


async def test_unknown_route_and_wrong_method(memory_app: LiveApp) -> None:
    async with memory_app.session.get(memory_app.url("/nope")) as resp:
        assert resp.status == 404
        assert resp.content_type == "application/json"
        body = await resp.json()
        assert "Luna-Request-Id" in resp.headers
    assert body == {
        "error_code": 12013,
        "desc": "Resource not found",
        "detail": "Page not found",
        "link": body["link"],
    }
    async with memory_app.session.delete(memory_app.url("/version")) as resp:
        assert resp.status == 405
        assert (await resp.json())["error_code"] == 12021
    async with memory_app.session.get(memory_app.url("/publish")) as resp:
        assert resp.status == 405
        assert (await resp.json())["error_code"] == 12021
    async with memory_app.session.get(memory_app.url("/3/ws")) as resp:
        assert resp.status == 404


async def test_healthcheck_memory(memory_app: LiveApp) -> None:
    async with memory_app.session.get(memory_app.url("/healthcheck")) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert isinstance(body["execution_time"], float)


async def test_healthcheck_redis_down_then_up(live_app_factory, private_redis) -> None:
    private_redis.stop()
    app = await live_app_factory(redis_url=private_redis.url)
    async with app.session.get(app.url("/healthcheck")) as resp:
        assert resp.status == 502
        body = await resp.json()
    assert body["errors"][0]["component"] == "redis"
    assert {"error_code", "desc", "detail"} <= set(body["errors"][0]["error"])
    assert "execution_time" in body
    private_redis.start()
    import asyncio

    for _ in range(100):
        async with app.session.get(app.url("/healthcheck")) as resp:
            if resp.status == 200:
                break
        await asyncio.sleep(0.05)
    assert resp.status == 200


async def test_config_masks_secrets(live_app_factory) -> None:
    app = await live_app_factory(
        redis_url="redis://user:s3cret@127.0.0.1:1/0",
        plugin_settings={"x": {"token": "abc", "url": "u"}},
    )
    async with app.session.get(app.url("/config")) as resp:
        assert resp.status == 200
        text = await resp.text()
        body = await resp.json()
    assert "s3cret" not in text and "abc" not in text
    assert body["redis_url"] == "redis://user:********@127.0.0.1:1/0"
    assert body["plugin_settings"]["x"]["token"] == "********"
    async with app.session.get(app.url("/config"), headers={"Accept": "text/plain"}) as resp:
        assert resp.content_type == "text/plain"
        text = await resp.text()
    assert "port = " in text and "s3cret" not in text
    async with app.session.get(app.url("/config"), headers={"Accept": "image/png"}) as resp:
        assert resp.status == 415
        assert (await resp.json())["error_code"] == 12024


async def test_config_masks_a_webhooks_credentials(live_app_factory) -> None:
    """plugins.md gives ``headers`` for "an authorization token", and /config showed it, an API
    key header and a URL's ``api_key`` in clear (an outside pass)."""
    hook = {
        "url": "https://hooks.example.com/luna?api_key=k-123&sig=s-456&team=ops",
        "headers": {
            "Authorization": "Bearer t-789",
            "X-Api-Key": "k-abc",
            "Cookie": "session=c-def",
            "Content-Type": "application/json",
        },
        "jwt_public_key": "-----BEGIN PUBLIC KEY-----",
    }
    # A re-attack: a number or a mapping under a secret name, encoded or ';'-hidden names in a
    # query, and a password holding an '@' of its own were still shown.
    other = {
        "password": 918273,
        "token": {"inner": "n-147"},
        "url": "https://h/x?%74oken=e-258&a=1;token=f-369",
        "dsn": "redis://:p@ss-w0rd@127.0.0.1:1/0",
    }
    app = await live_app_factory(plugin_settings={"event-forwarder": hook, "other": other})
    async with app.session.get(app.url("/config")) as resp:
        text = await resp.text()
        shown = (await resp.json())["plugin_settings"]["event-forwarder"]
    for secret in ("k-123", "s-456", "t-789", "k-abc", "c-def"):
        assert secret not in text
    for secret in ("918273", "n-147", "e-258", "f-369", "ss-w0rd"):
        assert secret not in text
    assert shown["url"] == "https://hooks.example.com/luna?api_key=********&sig=********&team=ops"
    assert shown["headers"]["Content-Type"] == "application/json"  # not a credential
    assert shown["jwt_public_key"] == hook["jwt_public_key"]  # nor is a public key


async def test_plugins_empty(memory_app: LiveApp) -> None:
    async with memory_app.session.get(memory_app.url("/plugins")) as resp:
        assert await resp.json() == {"plugins": []}


async def test_metrics(memory_app: LiveApp) -> None:
    await memory_app.session.get(memory_app.url("/version"))
    await memory_app.session.get(memory_app.url("/nope"))
    async with memory_app.session.get(memory_app.url("/metrics")) as resp:
        assert resp.status == 200
        text = await resp.text()
    assert 'request_count_total{path="GET:/version",status_code="200"} 1.0' in text
    assert 'errors_count_total{error_code="12013",path="GET:unknown"} 1.0' in text
    for name in (
        "ws_connections",
        "events_received_total",
        "events_delivered_total",
        "requests_bucket",
    ):
        assert name in text


async def test_metrics_disabled(live_app_factory) -> None:
    app = await live_app_factory(metrics={"enabled": False})
    async with app.session.get(app.url("/metrics")) as resp:
        assert resp.status == 404
        assert (await resp.json())["error_code"] == 12013


async def test_ws_without_upgrade_is_luna_error(memory_app: LiveApp) -> None:
    async with memory_app.session.get(
        memory_app.url("/ws"), headers={"Luna-Account-Id": "8b8b5937-2e9c-4e8b-a7a7-5caf86621b5a"}
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["error_code"] == 12046
