"""`luna-sender listen` / `publish`, structured logs and --workers, as a user runs them."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time

import aiohttp

from .helpers import REPO, Service, account, face_event, publish_face, recv_json

CLI = [sys.executable, "-m", "luna_sender.cli"]


def cli(*args: str, stdin: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args], input=stdin, capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def start_listen(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "listen", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    )


def wait_listening(proc: subprocess.Popen[str]) -> None:
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "listening on" in line, line


def test_listen_and_publish_round_trip() -> None:
    acc = account()
    with_svc = Service()
    try:
        listener = start_listen(
            "--url", with_svc.ws_url, "--account-id", acc, "--sources", "cam-1", "--count", "1"
        )
        wait_listening(listener)
        bad = cli(
            "publish",
            "--url",
            with_svc.url,
            "--account-id",
            acc,
            stdin=json.dumps(face_event(source="cam-2")),
        )
        good = cli(
            "publish",
            "--url",
            with_svc.url,
            "--account-id",
            acc,
            stdin=json.dumps([face_event(source="cam-1", n=1)]),
        )
        assert bad.returncode == 0 and good.returncode == 0, good.stderr
        out, _ = listener.communicate(timeout=20)
        assert listener.returncode == 0
        lines = out.strip().splitlines()
        assert len(lines) == 1
        envelope = json.loads(lines[0])
        assert envelope["event"]["source"] == "cam-1" and envelope["event"]["n"] == 1
    finally:
        with_svc.close()


def test_bad_input_and_unreachable_service() -> None:
    svc = Service()
    try:
        result = cli("listen", "--url", svc.ws_url, "--account-id", account(), "--gender", "7")
        assert result.returncode == 2
        assert "12012" in result.stderr and "gender" in result.stderr
        result = cli("listen", "--url", svc.ws_url, "--general", "--filter", "event.a__zz=1")
        assert result.returncode == 2 and "event.a__zz" in result.stderr
        result = cli("listen", "--url", svc.ws_url)  # face events need an account
        assert result.returncode == 2 and "--account-id" in result.stderr
        # A query in the base URL swallows the route: an HTTP 200, retried for ever before.
        result = cli("listen", "--url", svc.ws_url + "?x=1", "--general")
        assert result.returncode == 2 and "is not a websocket (HTTP 200)" in result.stderr
        result = cli("publish", "--url", svc.url, "--account-id", account(), stdin="{oops")
        assert result.returncode == 2 and "bad input" in result.stderr
        result = cli(
            "publish",
            "--url",
            svc.url,
            "--account-id",
            account(),
            stdin=json.dumps({"events": [], "handler_id": "h"}),
        )
        assert result.returncode == 2 and "12022" in result.stderr
        result = cli("publish", "--url", svc.url, "--general", stdin=json.dumps({"a": 1}))
        assert result.returncode == 2 and "--event-type" in result.stderr
    finally:
        svc.close()
    dead = f"http://127.0.0.1:{svc.port}"
    result = cli("publish", "--url", dead, "--general", "--event-type", "t", stdin="{}")
    assert result.returncode == 1 and "unreachable" in result.stderr
    result = cli("listen", "--url", dead.replace("http", "ws"), "--general")
    assert result.returncode == 1 and "unreachable" in result.stderr


def test_listen_reconnects_with_backoff() -> None:
    first = Service()
    port = first.port
    listener = start_listen("--url", first.ws_url, "--general", "--event-type", "t", "--count", "2")
    try:
        wait_listening(listener)
        assert (
            cli(
                "publish",
                "--url",
                first.url,
                "--general",
                "--event-type",
                "t",
                stdin=json.dumps({"n": 1}),
            ).returncode
            == 0
        )
        first.terminate()
        second = Service(port=port)
        try:
            deadline = time.monotonic() + 20
            while listener.poll() is None and time.monotonic() < deadline:
                cli(
                    "publish",
                    "--url",
                    second.url,
                    "--general",
                    "--event-type",
                    "t",
                    stdin=json.dumps({"n": 2}),
                )
                time.sleep(0.5)
            out, err = listener.communicate(timeout=10)
            assert listener.returncode == 0, err
            assert [json.loads(x)["event"]["n"] for x in out.splitlines()] == [1, 2]
            assert "reconnecting" in err
        finally:
            second.close()
    finally:
        if listener.poll() is None:
            listener.kill()
        first.close()


async def test_json_logs_carry_request_ids_and_connection_lines() -> None:
    svc = Service("--log-format", "json")
    rid = "1700000000,8b8b5937-2e9c-4e8b-a7a7-5caf86621b5a"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(
                svc.ws_url + "/ws?sources=a,b&gender=1",
                headers={"Luna-Account-Id": account(), "Luna-Request-Id": rid},
            ) as ws:
                await asyncio.sleep(0.1)
            await ws.close()
            async with session.get(
                svc.url + "/ws?gender=9", headers={"Luna-Account-Id": account()}
            ) as resp:
                bad_rid = resp.headers["Luna-Request-Id"]
        await asyncio.sleep(0.3)
    finally:
        svc.terminate()
    records = [json.loads(line) for line in svc.log().splitlines() if line.startswith("{")]
    assert records and all({"time", "level", "request_id", "message"} <= set(r) for r in records)
    opened = [r for r in records if "opened" in r["message"]]
    closed = [r for r in records if "closed" in r["message"] and "websocket" in r["message"]]
    assert opened[0]["request_id"] == rid and "filters=gender=1&sources=a,b" in opened[0]["message"]
    assert closed[0]["request_id"] == rid
    assert "duration=" in closed[0]["message"] and "code=1000" in closed[0]["message"]
    rejected = [r for r in records if "rejected websocket filter" in r["message"]]
    assert rejected[0]["request_id"] == bad_rid and "gender" in rejected[0]["message"]


async def test_workers_share_the_port_and_the_bus(redis_server) -> None:
    svc = Service("--workers", "2", "--redis-url", redis_server.url)
    acc = account()
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            sockets = [
                await session.ws_connect(svc.ws_url + "/ws", headers={"Luna-Account-Id": acc})
                for _ in range(12)
            ]
            await asyncio.sleep(0.5)
            await publish_face(session, svc.url, acc, [face_event(w=1)])
            for ws in sockets:
                assert (await recv_json(ws))["event"]["w"] == 1
            for ws in sockets:
                await ws.close()
    finally:
        svc.proc.send_signal(signal.SIGTERM)
        assert svc.proc.wait(15) == 0, svc.log()[-3000:]
        svc.close()
    workers = {line.split("[")[0] for line in svc.log().splitlines() if "ready" in line}
    assert len(workers) >= 1


def test_listen_prints_frames_python_json_cannot_take_as_received(redis_server) -> None:
    """A face event goes out as its producer wrote it, so a frame may hold a number Python's
    json refuses (5,000 digits) or reads as inf (1e999). An outside pass: ``listen`` died on the
    first (exit 1) and printed the second as the non-JSON ``Infinity``."""
    acc = account()
    svc = Service("--redis-url", redis_server.url)
    try:
        listener = start_listen("--url", svc.ws_url, "--account-id", acc, "--count", "3")
        wait_listening(listener)
        big = "9" * 5000
        for event in (f'{{"event_id":"a","n":{big}}}', '{"event_id":"b","n":1e999}', "{}"):
            body = '{"handler_id":"h","events":[' + event + "]}"
            redis_server.client().publish(f"luna-sender:{acc}", body)
        out, err = listener.communicate(timeout=20)
        assert listener.returncode == 0, err
        lines = out.strip().splitlines()
        assert lines[0].startswith('{"event":{"event_id":"a","n":' + big + "}")
        assert lines[1].startswith('{"event":{"event_id":"b","n":1e999}')
        assert json.loads(lines[2])["event"] == {}
    finally:
        svc.close()
