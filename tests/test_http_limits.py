"""HTTP parser limits agree with the filter limits; parser refusals are LUNA errors.

``list_filter_max_items`` of the longest item type must fit in the request line; what the parser
refuses is answered as JSON with a ``Luna-Request-Id`` and leaves no traceback in the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import aiohttp
import pytest

from luna_sender.config.settings import Settings
from luna_sender.runtime import metrics
from luna_sender.web.httpd import request_line_max

from .conftest import LiveApp
from .helpers import account


def _no_errors(caplog: pytest.LogCaptureFixture) -> None:
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not loud, [r.getMessage()[:200] for r in loud]


async def _luna_error(resp: aiohttp.ClientResponse, status: int, code: int) -> dict:
    assert resp.status == status, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.headers["Luna-Request-Id"]
    body = await resp.json()
    assert set(body) == {"error_code", "desc", "detail", "link"}
    assert body["error_code"] == code, body
    return body


async def test_full_uuid_lists_are_accepted(
    memory_app: LiveApp, caplog: pytest.LogCaptureFixture
) -> None:
    """1,000 stream_ids (about 37 KB with %2C separators) upgrade; 1,001 hit the filter limit."""
    caplog.set_level(logging.DEBUG)
    ids = [str(uuid.uuid4()) for _ in range(1000)]
    query = "stream_ids=" + "%2C".join(ids) + "&handler_ids=" + "%2C".join(ids)
    assert len(query) > 70_000
    async with memory_app.session.ws_connect(
        memory_app.url("/ws?" + query), headers={"Luna-Account-Id": account()}
    ) as ws:
        assert not ws.closed
    over = "stream_ids=" + ",".join([*ids, str(uuid.uuid4())])
    async with memory_app.session.get(
        memory_app.url("/ws?" + over), headers={"Luna-Account-Id": account()}
    ) as resp:
        body = await _luna_error(resp, 400, 12012)
        assert "stream_ids" in body["detail"]
    _no_errors(caplog)


async def test_full_event_type_lists_are_accepted(memory_app: LiveApp) -> None:
    """The longest bounded item: 1,000 event types of 128 characters each (about 131 KB)."""
    types = [f"{i:04d}" + "t" * 124 for i in range(1000)]
    query = "event_type=" + "%2C".join(types)
    async with memory_app.session.ws_connect(memory_app.url("/ws/general?" + query)) as ws:
        assert not ws.closed


async def test_request_line_over_the_limit_is_a_luna_error(
    live_app_factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app: LiveApp = await live_app_factory(limits={"list_filter_max_items": 10})
    limit = request_line_max(Settings(limits={"list_filter_max_items": 10}))
    query = "event_type=" + ",".join(["x" * 128] * 100)
    assert len(query) > limit
    async with app.session.get(app.url("/ws/general?" + query)) as resp:
        body = await _luna_error(resp, 414, 12012)
        assert f"request line longer than {limit} bytes" in body["detail"]
    # The service keeps serving.
    async with app.session.get(app.url("/healthcheck")) as resp:
        assert resp.status == 200
    _no_errors(caplog)


async def test_too_many_or_too_long_headers_are_luna_errors(
    memory_app: LiveApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    many = {f"X-Extra-{i}": "v" for i in range(200)}
    async with memory_app.session.get(memory_app.url("/healthcheck"), headers=many) as resp:
        body = await _luna_error(resp, 431, 12046)
        assert "more than 128 headers" in body["detail"]
    async with memory_app.session.get(
        memory_app.url("/healthcheck"), headers={"X-Long": "v" * 10_000}
    ) as resp:
        body = await _luna_error(resp, 431, 12046)
        assert "header longer than 8190 bytes" in body["detail"]
    # Within the limits: served.
    fewer = {f"X-Extra-{i}": "v" for i in range(100)}
    async with memory_app.session.get(memory_app.url("/healthcheck"), headers=fewer) as resp:
        assert resp.status == 200
    _no_errors(caplog)


async def test_header_limits_are_settings(live_app_factory) -> None:
    app: LiveApp = await live_app_factory(
        limits={"http_headers_max": 300, "http_header_max_bytes": 20_000}
    )
    many = {f"X-Extra-{i}": "v" for i in range(200)}
    async with app.session.get(
        app.url("/healthcheck"), headers={**many, "X-Long": "v" * 10_000}
    ) as resp:
        assert resp.status == 200


async def test_malformed_request_is_a_luna_error(
    memory_app: LiveApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = memory_app.server.port
    for bad in (
        b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
        b"GARBAGE\r\n\r\n",
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(bad)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)  # the connection is closed after it
        writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        # aiohttp's stand-in request is "GET / HTTP/1.0", and the answer was an HTTP/1.0 one
        assert head.startswith(b"HTTP/1.1 400 "), raw[:200]
        assert b"application/json" in head and b"Luna-Request-Id" in head
        assert b"Connection: close" in head
        assert b'"error_code":12046' in body
    _no_errors(caplog)


@pytest.mark.parametrize("version", ["2.0", "0.9"])
@pytest.mark.parametrize("path", ["/version", "/ws"])
async def test_a_request_line_in_another_http_version_is_answered_505_in_http_1_1(
    memory_app: LiveApp, caplog: pytest.LogCaptureFixture, version: str, path: str
) -> None:
    """aiohttp's parser takes "HTTP/2.0" and "HTTP/0.9" request lines, and the answer echoed
    them: "HTTP/2.0 200 OK" in HTTP/1.1 framing, which no HTTP/2 client reads. Now a LUNA 505
    in HTTP/1.1, the connection closed; an upgrade is refused the same way."""
    caplog.set_level(logging.DEBUG)
    upgrade = (
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nLuna-Account-Id: {uuid.uuid4()}\r\n"
    )
    head = f"GET {path} HTTP/{version}\r\nHost: x\r\n" + (upgrade if path == "/ws" else "")
    reader, writer = await asyncio.open_connection("127.0.0.1", memory_app.server.port)
    writer.write(head.encode() + b"\r\n")
    raw = await asyncio.wait_for(reader.read(), 10)  # closed after the answer
    writer.close()
    head_out, _, body = raw.partition(b"\r\n\r\n")
    assert head_out.startswith(b"HTTP/1.1 505 "), raw[:300]
    assert b"Luna-Request-Id" in head_out
    error = json.loads(body)
    assert error["error_code"] == 12046 and f"HTTP/{version}" in error["detail"], error
    _no_errors(caplog)
    for spoken in ("1.0", "1.1"):  # unchanged
        reader, writer = await asyncio.open_connection("127.0.0.1", memory_app.server.port)
        writer.write(f"GET /version HTTP/{spoken}\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert raw.startswith(f"HTTP/{spoken} 200 ".encode()), raw[:200]


async def test_an_expectation_other_than_100_continue_is_a_luna_417_that_changes_nothing(
    memory_app: LiveApp, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp answered ``Expect: weird`` with a plain-text 417 before any middleware ran: no
    LUNA error, no ``Luna-Request-Id``. 100-continue works as before; 404 still comes first."""
    event = {"event": {"n": 1}, "event_type": "t"}
    two = "POST /publish/general HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    two += "Expect: 100-continue\r\nExpect: weird\r\nContent-Length: 2\r\n\r\n{}"
    async with memory_app.ws("/ws/general") as ws:
        # two headers are one list (RFC 9110 §5.3): aiohttp looked at the first only
        reader, writer = await asyncio.open_connection("127.0.0.1", memory_app.server.port)
        writer.write(two.encode())
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 417 ") and b"100-continue, weird" in answer, answer
        for expect in ("weird", "100-continue, foo"):
            headers = {"Expect": expect}
            async with memory_app.session.post(
                memory_app.url("/publish/general"), json=event, headers=headers
            ) as resp:
                body = await _luna_error(resp, 417, 12046)
                assert expect in body["detail"] and resp.headers.get("Connection") == "close"
        async with memory_app.session.get(
            memory_app.url("/no-such"), headers={"Expect": "weird"}
        ) as resp:
            await _luna_error(resp, 404, 12013)
        async with memory_app.session.post(
            memory_app.url("/publish/general"), json=event, headers={"Expect": "100-Continue"}
        ) as resp:
            assert resp.status == 204
        got = await ws.receive_json(timeout=5)  # only the one accepted
        assert got["event"] == {"n": 1}
        with pytest.raises(asyncio.TimeoutError):
            await ws.receive(timeout=0.3)
    _no_errors(caplog)


@pytest.mark.parametrize(("version", "status"), [("12", 426), ("14", 426), ("8", 101), ("13", 101)])
async def test_an_unspoken_websocket_version_is_426_naming_13(
    memory_app: LiveApp, version: str, status: int
) -> None:
    """RFC 6455 §4.2.2: a version the server does not speak gets 426 and the versions it does;
    it was a 400 "websocket upgrade expected". Drafts 7-8 frame as 13 does: accepted."""
    head = (
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Version: {version}\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Luna-Account-Id: {uuid.uuid4()}\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", memory_app.server.port)
    writer.write(head.encode())
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.close()
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer
    if status == 426:
        assert b"\r\nSec-WebSocket-Version: 13\r\n" in answer
        assert b"Luna-Request-Id: " in answer
        # RFC 9110 §15.5.22 and §7.8: the protocol required, and the option naming it
        assert b"\r\nUpgrade: websocket\r\n" in answer
        assert b"\r\nConnection: Upgrade\r\n" in answer


KEY = "dGhlIHNhbXBsZSBub25jZQ=="


async def _refused(port: int, head: str) -> tuple[bytes, Any]:
    """The status head and the JSON body of the answer to a raw request ``head``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode())
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(answer.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    body = json.loads(await asyncio.wait_for(reader.readexactly(length), 10))
    writer.close()
    return answer, body


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("Sec-WebSocket-Version", "\r\nSec-WebSocket-Version: 99"),
        ("Sec-WebSocket-Key", "\r\nSec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA=="),
        # one line, two values: aiohttp took "13, 13" for a version it lacks (426), and
        # "K, K" for a key (101)
        ("Sec-WebSocket-Version", ", 13"),
        ("Sec-WebSocket-Key", f", {KEY}"),
    ],
)
async def test_a_handshake_header_given_twice_is_a_400_naming_it(
    memory_app: LiveApp, name: str, extra: str
) -> None:
    """RFC 6455 allows each once in a request; aiohttp judged the first copy alone, so
    "13" then "99" opened a socket (an outside pass)."""
    lines = {"Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": KEY}
    lines[name] += extra
    head = (
        "GET /ws/general HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in lines.items())
        + "\r\n"
    )
    answer, body = await _refused(memory_app.server.port, head)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert body["error_code"] == 12046 and f"{name} is given more than once" in body["detail"]


@pytest.mark.parametrize("key", ["K", "dGhlIHNhbXBsZSBub25jZQ===", "dGhlIHNhbXBsZSBub25j", "a b"])
async def test_a_key_that_is_not_16_bytes_in_base64_is_a_400(memory_app: LiveApp, key: str) -> None:
    """RFC 6455 §4.1: the key is a base64-encoded 16-byte value. aiohttp's decoder skips what is
    not base64, so "K" or a key with stray characters opened a socket (an outside pass)."""
    head = (
        "GET /ws/general HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
    )
    answer, body = await _refused(memory_app.server.port, head)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert body["error_code"] == 12046 and "Sec-WebSocket-Key" in body["detail"]


@pytest.mark.parametrize(
    "header",
    [
        "Sec-WebSocket-Version: 13\xb3",
        "Sec-WebSocket-Key: \xff",
        "Sec-WebSocket-Extensions: permessage-deflate\xe9",
    ],
)
async def test_a_non_ascii_handshake_header_is_a_400_not_a_500(
    memory_app: LiveApp, caplog: pytest.LogCaptureFixture, header: str
) -> None:
    """aiohttp's refusal of such a header failed to encode its own message: a 500 and a logged
    traceback (an outside pass)."""
    base = {
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    name, _, value = header.partition(": ")
    base[name] = value
    head = "GET /ws/general HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in base.items()) + "\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", memory_app.server.port)
    writer.write(head.encode("latin-1"))
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    _no_errors(caplog)


async def test_refused_heads_and_redirects_are_counted(live_app_factory) -> None:
    """request_count_total missed the parser's refusals (414, 431) and /docs/dev's 302: an
    operator counting requests saw none of an attack on the parser (an outside pass)."""
    metrics.REFUSED.clear()  # the tally is the process's: earlier tests' refusals are theirs
    app: LiveApp = await live_app_factory(limits={"list_filter_max_items": 10})
    query = "event_type=" + ",".join(["x" * 128] * 100)
    async with app.session.get(app.url("/ws/general?" + query)) as resp:
        assert resp.status == 414
    for _ in range(2):
        many = {f"X-Extra-{i}": "v" for i in range(200)}
        async with app.session.get(app.url("/healthcheck"), headers=many) as resp:
            assert resp.status == 431
    async with app.session.get(app.url("/docs/dev"), allow_redirects=False) as resp:
        assert resp.status == 302
    async with app.session.delete(app.url("/publish/general")) as resp:
        assert resp.status == 405
    async with app.session.get(app.url("/metrics")) as resp:
        text = await resp.text()
    for line in (
        'request_count_total{path="unknown",status_code="414"} 1.0',
        'errors_count_total{error_code="12012",path="unknown"} 1.0',
        'request_count_total{path="unknown",status_code="431"} 2.0',
        'errors_count_total{error_code="12046",path="unknown"} 2.0',
        'request_count_total{path="GET:/docs/dev",status_code="302"} 1.0',
        'request_count_total{path="DELETE:unknown",status_code="405"} 1.0',
    ):
        assert line in text, (line, [m for m in text.splitlines() if "unknown" in m or "302" in m])
