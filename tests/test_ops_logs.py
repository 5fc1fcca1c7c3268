"""Logs an operator can work from: failures, 404s, shutdown, access log, JSON keys (real process)."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp

from .helpers import Service, account, face_event

RID = "1700000000,0a1b2c3d-0000-4000-8000-00000000abcd"


def records(svc: Service) -> list[dict[str, Any]]:
    return [json.loads(line) for line in svc.log().splitlines() if line.startswith("{")]


def wait_for(svc: Service, predicate: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in records(svc) if predicate(r)]
        if found:
            return found
        assert time.monotonic() < deadline, svc.log()[-3000:]
        time.sleep(0.05)


def rid(n: int) -> str:
    return f"1700000000,0a1b2c3d-0000-4000-8000-{n:012d}"


async def test_failed_requests_and_404s_log_one_info_line_with_keys(private_redis) -> None:
    svc = Service("--log-format", "json", "--redis-url", private_redis.url)
    acc = account()
    try:
        async with aiohttp.ClientSession(svc.url) as http:
            cases = [  # (request id, method, path, headers, body, status, error_code)
                (1, "POST", "/publish", {"Luna-Account-Id": acc}, None, 400, 12002),
                (2, "POST", "/2/publish", {"Luna-Account-Id": acc}, {"events": []}, 400, 12022),
                (3, "POST", "/publish", {}, {"events": [face_event()]}, 403, 29001),
                (4, "GET", "/no/such/route", {}, None, 404, 12013),
            ]
            for n, method, path, headers, body, status, _code in cases:
                data = b"" if body is None else json.dumps(body).encode()
                async with http.request(
                    method,
                    path,
                    data=data,
                    headers={
                        **headers,
                        "Luna-Request-Id": rid(n),
                        "Content-Type": "application/json",
                    },
                ) as resp:
                    assert resp.status == status
            private_redis.stop()
            good = {
                "events": [face_event()],
                "handler_id": acc,
                "event_create_time": "2026-11-23T10:00:00+00:00",
                "event_end_time": "2026-11-23T10:00:01+00:00",
            }
            async with http.post(
                "/publish", json=good, headers={"Luna-Account-Id": acc, "Luna-Request-Id": rid(5)}
            ) as resp:
                assert resp.status == 503
            cases.append((5, "POST", "/publish", {"Luna-Account-Id": acc}, None, 503, 29006))
        failed = wait_for(
            svc, lambda r: r["message"].startswith("request failed") and r["request_id"] == rid(5)
        )
        for n, method, path, headers, _body, status, code in cases:
            lines = [
                r
                for r in records(svc)
                if r["message"].startswith("request failed") and r["request_id"] == rid(n)
            ]
            assert len(lines) == 1, (n, svc.log()[-3000:])
            line = lines[0]
            assert line["level"] == "INFO"
            assert (line["status"], line["error_code"], line["method"], line["path"]) == (
                status,
                code,
                method,
                path,
            )
            assert line["detail"] and line["route"].startswith(method + ":")
            assert line.get("account_id") == headers.get("Luna-Account-Id")
        assert failed[0]["route"] == "POST:/publish"
        assert records(svc)[-1]["message"].startswith("request failed")  # nothing after it
    finally:
        assert svc.terminate() == 0


async def test_access_log_is_off_by_default_and_on_by_switch() -> None:
    for switch, expected in (({}, 0), ({"LUNA_SENDER_LOG_ACCESS": "true"}, 1)):
        svc = Service("--log-format", "json", env=switch)
        try:
            async with (
                aiohttp.ClientSession(svc.url) as http,
                http.get("/version", headers={"Luna-Request-Id": RID}) as resp,
            ):
                assert resp.status == 200
            # The 404 is a second request: its access line must carry its own status.
            async with aiohttp.ClientSession(svc.url) as http, http.get("/nope") as resp:
                assert resp.status == 404
            wait_for(svc, lambda r: r["message"].startswith("request failed"))
        finally:
            assert svc.terminate() == 0
        access = [r for r in records(svc) if r["logger"] == "luna_sender.access"]
        assert len(access) == 2 * expected, svc.log()
        if expected:
            first, second = access
            assert first["request_id"] == RID and first["route"] == "GET:/version"
            assert first["status"] == 200 and first["duration_ms"] >= 0
            assert first["remote"] == "127.0.0.1"
            assert second["status"] == 404 and second["route"] == "GET:unknown"


async def test_websocket_lines_carry_json_keys_and_shutdown_counts_sockets() -> None:
    svc = Service("--log-format", "json", env={"LUNA_SENDER_LOG_ACCESS": "1"})
    acc = account()
    try:
        async with aiohttp.ClientSession() as http:
            ws1 = await http.ws_connect(
                svc.ws_url + "/2/ws?gender=1",
                headers={"Luna-Account-Id": acc, "Luna-Request-Id": rid(7)},
            )
            ws2 = await http.ws_connect(svc.ws_url + "/ws/general")
            opened = wait_for(
                svc,
                lambda r: (
                    r["message"].startswith("websocket")
                    and "opened" in r["message"]
                    and r.get("kind") == "face"
                ),
            )[0]
            assert opened["request_id"] == rid(7) and opened["account_id"] == acc
            assert opened["route"] == "GET:/2/ws" and opened["filters"] == "gender=1"
            await ws1.close(code=1000)
            closed = wait_for(
                svc,
                lambda r: (
                    "closed" in r["message"] and r.get("connection_id") == opened["connection_id"]
                ),
            )[0]
            assert closed["close_code"] == 1000 and closed["request_id"] == rid(7)
            assert closed["account_id"] == acc and closed["delivered"] == 0
            assert isinstance(closed["duration"], float)
            access = wait_for(
                svc, lambda r: r["logger"] == "luna_sender.access" and r["request_id"] == rid(7)
            )
            assert access[0]["status"] == 101
            assert svc.terminate() == 0
            msg = await ws2.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1001
    finally:
        svc.terminate()
    start = [r for r in records(svc) if r["message"].startswith("shutdown started")]
    end = [r for r in records(svc) if r["message"].startswith("shutdown finished")]
    assert len(start) == 1 and len(end) == 1, svc.log()
    assert start[0]["sockets"] == 1
    assert end[0]["sockets"] == 1 and end[0]["sockets_left"] == 0
    assert "1 websocket(s) closed" in end[0]["message"]


def test_text_format_keeps_readable_lines() -> None:
    svc = Service()
    try:
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(svc.url + "/missing", timeout=5)
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
        deadline = time.monotonic() + 10
        while "request failed" not in svc.log():
            assert time.monotonic() < deadline, svc.log()
            time.sleep(0.05)
    finally:
        assert svc.terminate() == 0
    line = next(x for x in svc.log().splitlines() if "request failed" in x)
    assert " INFO " in line and "GET /missing -> 404 error_code=12013" in line
    assert "shutdown finished" in svc.log()


async def test_client_text_cannot_forge_log_lines() -> None:
    svc = Service(env={"LUNA_SENDER_LOG_ACCESS": "on"})
    try:
        async with aiohttp.ClientSession(svc.url) as http:
            for path in ("/a%0AINFO%20forged", "/ws?gender%0Aforged=1"):
                async with http.get(
                    aiohttp.client.URL(path, encoded=True), headers={"Luna-Account-Id": account()}
                ) as resp:
                    assert resp.status in (400, 404)
        deadline = time.monotonic() + 10
        while svc.log().count("request failed") < 2:
            assert time.monotonic() < deadline, svc.log()
            time.sleep(0.05)
    finally:
        assert svc.terminate() == 0
    lines = svc.log().splitlines()
    assert lines and all(line[:4].isdigit() for line in lines), svc.log()  # each starts with a date
    assert "/a%0AINFO%20forged -> 404" in svc.log()
