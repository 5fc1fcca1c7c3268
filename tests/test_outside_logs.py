"""Log lines an outside tester attacked: credentials, close codes, control characters.

Every test runs the service as a real process and reads what it wrote to its log, as an
operator (or a log shipper) would.
"""

from __future__ import annotations

import json
import re
import signal
import time
from typing import Any

import aiohttp
import pytest

from .helpers import Service, account, free_port
from .jwtkit import OTHER_SECRET, SECRET, token

JWT_ENV = {
    "LUNA_SENDER_AUTH__MODE": "jwt",
    "LUNA_SENDER_AUTH__JWT_SECRET": SECRET,
    "LUNA_SENDER_LOG_ACCESS": "true",
}


def wait_log(svc: Service, pattern: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while not re.search(pattern, svc.log()):
        assert time.monotonic() < deadline, (pattern, svc.log()[-3000:])
        time.sleep(0.05)
    return svc.log()


async def _requests_with_tokens(svc: Service, good: str, forged: str) -> None:
    """Every route that takes ``?token=``, answered 101, 204, 400, 401 and 403."""
    async with aiohttp.ClientSession() as http:
        for path in ("/ws", "/ws/general", "/1/ws", "/viewer/ws"):
            ws = await http.ws_connect(f"{svc.ws_url}{path}?token={good}&sources=cam-1")
            await ws.close()
        for path, query in (
            ("/ws", f"token={good}&bogus=1"),  # 400 bad filter
            ("/ws", f"sources=cam-1&token={forged}"),  # 401 bad signature
            ("/viewer/validate", f"kind=face&token={good}"),
            ("/viewer/validate", f"kind=face&token={forged}"),
            ("/ws/general", f"token={good}&token={good}"),
            # Spellings the service refuses, still never logged in clear (an outside pass):
            ("/ws", f"jwt={good}"),
            ("/ws/general", f"token;={good}"),
            ("/ws/general", f"sources=a;token={good}"),
            ("/ws", f"api_key={forged}"),
        ):
            async with http.get(f"{svc.url}{path}?{query}") as resp:
                assert resp.status in (204, 400, 401, 403), (path, resp.status)
        for path in ("/publish", "/publish/general"):
            async with http.post(f"{svc.url}{path}?token={good}", json={}) as resp:
                assert resp.status >= 400
            async with http.post(f"{svc.url}{path}?x=1&token={forged}", json={}) as resp:
                assert resp.status >= 400


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_query_token_never_reaches_the_log(fmt: str) -> None:
    acc = account()
    good = token(acc, scope="publish")
    forged = token(acc, scope="admin publish", key=OTHER_SECRET)
    svc = Service("--log-format", fmt, env=JWT_ENV)
    try:
        await _requests_with_tokens(svc, good, forged)
        log = wait_log(svc, r"POST /publish/general\?x=1&token=\*{8} \d{3}")
    finally:
        assert svc.terminate() == 0
    log = svc.log()
    for secret in (good, forged):
        signature = secret.rsplit(".", 1)[1]
        assert signature not in log, log[-3000:]
        assert secret.split(".")[1] not in log  # the claims (account id) either
    # The lines are still there, with the parameter named and its value masked.
    masked = re.findall(r"\?(?:[^ \"]*&)?token=\*{8}", log)
    assert len(masked) >= 13, log[-3000:]
    assert re.search(r"GET /ws\?token=\*{8}&sources=cam-1 101", log)
    if fmt == "json":
        access = [
            r
            for r in map(json.loads, log.splitlines())
            if r["logger"] == "luna_sender.access" and "status" in r
        ]
        assert {r["status"] for r in access} >= {101, 204, 400, 401}


def _bus_urls(dead: int) -> list[str]:
    # A password in both the userinfo and ?password= is refused now (redis-py ignored the
    # query's): one URL each.
    return [
        f"redis://bususer:UsErInFoPw@127.0.0.1:{dead}/0",
        f"redis://127.0.0.1:{dead}/0?password=Q2uerypw",
        f"redis+sentinel://sentuser:SeNtUsErPw@127.0.0.1:{dead}/mymaster/0"
        "?sentinel_password=SeNtQuErYpw",  # ?password= is refused there: the backend ignores it
    ]


@pytest.mark.parametrize("index", [0, 1, 2])
async def test_bus_passwords_are_masked_in_every_log_line(index: int) -> None:
    url = _bus_urls(free_port())[index]  # nobody listens: the bus retries, logging its address
    for fmt in ("text", "json"):
        svc = Service("--log-format", fmt, "--redis-url", url)
        try:
            log = wait_log(svc, r"luna-sender ready")
            wait_log(svc, r"bus (?:connecting|unreachable)")
        finally:
            svc.terminate()
        log = svc.log()
        for secret in ("UsErInFoPw", "Q2uerypw", "SeNtUsErPw", "SeNtQuErYpw"):
            assert secret not in log, log
        if index:  # the userinfo never reaches a line; a query credential does, masked
            assert "password=********" in log, log


async def test_shutdown_close_lines_say_1001_like_the_clients_saw() -> None:
    for fmt in ("text", "json"):
        svc = Service("--log-format", fmt)
        async with aiohttp.ClientSession() as http:
            sockets = [
                await http.ws_connect(f"{svc.ws_url}/ws/general?sources=cam-{i}") for i in range(3)
            ]
            wait_log(svc, r"(?s)(opened.*){3}")
            svc.proc.send_signal(signal.SIGTERM)
            for ws in sockets:
                msg = await ws.receive(timeout=15)
                assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1001
                await ws.close()
        assert svc.proc.wait(15) == 0
        svc.terminate()
        log = svc.log()
        if fmt == "text":
            closed = re.findall(r"websocket \S+ closed: .* code=(\d+)", log)
        else:
            closed = [
                str(r["close_code"])
                for r in map(json.loads, log.splitlines())
                if "closed:" in r["message"] and "close_code" in r
            ]
        assert closed == ["1001"] * 3, log


async def test_client_close_and_drop_keep_their_own_codes() -> None:
    svc = Service("--log-format", "json")
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"{svc.ws_url}/ws/general")
            await ws.close(code=4000)
        codes = wait_log(svc, r'"close_code": 4000')
        assert '"close_code": 1001' not in codes
    finally:
        assert svc.terminate() == 0


HOSTILE = "cam\x1b[2J\x1b[31mFORGED\x0bvt\x0cff\x1ers\x85nel\u2028ls\u2029ps\x7fdel-камера-摄像头"


def _assert_no_raw_controls(log: str) -> None:
    for char in ("\x1b", "\x0b", "\x0c", "\x1e", "\x85", "\u2028", "\u2029", "\x7f"):
        assert char not in log, repr(char)
    assert "\r" not in log
    assert all(not line.startswith("FORGED") for line in log.split("\n"))


async def test_text_log_escapes_every_control_character_but_keeps_unicode_text() -> None:
    svc = Service("--log-format", "text")
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"{svc.ws_url}/ws/general", params={"sources": HOSTILE})
            await ws.close()
            async with http.get(f"{svc.ws_url}/ws/general", params={f"x{HOSTILE}": "1"}) as resp:
                assert resp.status == 400
        log = wait_log(svc, r"closed: .*FORGED")
        wait_log(svc, r"request failed")
    finally:
        assert svc.terminate() == 0
    log = svc.log()
    _assert_no_raw_controls(log)
    assert r"cam\x1b[2J\x1b[31mFORGED\x0bvt\x0cff\x1ers\x85nel\u2028ls\u2029ps\x7fdel" in log
    assert "-камера-摄像头" in log  # ordinary non-ASCII text stays readable
    # One record, one line: every line starts with a timestamp.
    lines = [line for line in log.split("\n") if line]
    assert all(re.match(r"\d{4}-\d\d-\d\d ", line) for line in lines), lines


async def test_json_log_escapes_line_separators() -> None:
    svc = Service("--log-format", "json")
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"{svc.ws_url}/ws/general", params={"sources": HOSTILE})
            await ws.close()
        wait_log(svc, r"closed: ")
    finally:
        assert svc.terminate() == 0
    log = svc.log()
    _assert_no_raw_controls(log)
    records: list[dict[str, Any]] = [json.loads(line) for line in log.splitlines()]
    opened = [r for r in records if "opened:" in r["message"]]
    assert HOSTILE in opened[0]["message"]  # the value itself survives, escaped only on the wire


async def test_a_100_kb_request_line_costs_a_line_of_a_few_kb() -> None:
    """A request line may hold 1,000 list items: a refused one was logged whole, twice (the
    refusal and the access line), so each request could write 200 KB of logs (an outside
    pass). The path is cut at 2,048 characters, with its length said."""
    svc = Service(env={"LUNA_SENDER_LOG_ACCESS": "true"})
    try:
        path = "/ws/" + "a" * 100_000
        async with aiohttp.ClientSession() as http, http.get(svc.url + path + "?q=1") as resp:
            assert resp.status == 404
        log = wait_log(svc, r"\(100004 characters\).* 404 ")
    finally:
        assert svc.terminate() == 0
    lines = [line for line in log.splitlines() if "aaaa" in line]
    assert len(lines) == 2 and all(len(line) < 4096 for line in lines), [len(x) for x in lines]
    assert all("(100004 characters)" in line or "(100008 characters)" in line for line in lines)
