"""A stop during which the service's processes stood still (SIGSTOP here; a paused VM in the
field). Its deadlines count running time now (runtime/clock.py): before, the stop watchdog exited
1 on waking, the worker supervisor killed workers that had stopped cleanly, and a client that
answered its 1001 meanwhile was reset. Each test fails on the code before (checked).
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from luna_sender.delivery.frames import CLOSE

from .faults import process_stopped
from .helpers import Service
from .rawws import RawWS
from .test_workers import ready_pids, wait_for, worker_pids

pytestmark = pytest.mark.slow


async def test_a_close_answered_while_the_service_stood_still_is_not_reset() -> None:
    svc = Service(env={"LUNA_SENDER_WS__SHUTDOWN_TIMEOUT": "1"})
    try:
        ws = await RawWS.connect(svc.port, "/ws/general")
        svc.proc.terminate()
        frame = await asyncio.wait_for(ws.recv(), 5)
        assert frame.opcode == CLOSE and frame.close_code == 1001
        with process_stopped(svc.proc.pid):
            ws.send(CLOSE, frame.payload[:2])  # answered at once, while the service stands still
            await ws.writer.drain()
            await asyncio.sleep(2.5)  # past the 1 s wait for it
        # A clean end of the connection, not a reset
        assert await asyncio.wait_for(ws.reader.read(), 5) == b""
        ws.close()
        assert await asyncio.to_thread(svc.proc.wait, 20) == 0
        assert "ws_close_timeout" not in svc.log()
    finally:
        assert svc.terminate() == 0, svc.log()[-3000:]


async def test_a_stop_that_stood_still_past_the_watchdog_still_exits_0() -> None:
    # The watchdog's deadline is ws.shutdown_timeout + 9 s: 9.5 s here
    svc = Service(env={"LUNA_SENDER_WS__SHUTDOWN_TIMEOUT": "0.5"})
    try:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(svc.ws_url + "/ws/general")
            svc.proc.terminate()
            # The stop under way (its 1001 not answered: nothing reads it yet), then it stands still
            while "shutdown started" not in svc.log():
                await asyncio.sleep(0.001)
            with process_stopped(svc.proc.pid):
                await asyncio.sleep(11)
            msg = await asyncio.wait_for(ws.receive(), 10)
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1001, msg
        assert await asyncio.to_thread(svc.proc.wait, 20) == 0
        assert "did not finish" not in svc.log()
    finally:
        assert svc.terminate() == 0, svc.log()[-3000:]


def test_workers_and_their_supervisor_stood_still_during_a_stop_exit_0(redis_server) -> None:
    # The supervisor kills a worker at ws.shutdown_timeout + 11 s: 11.5 s here
    svc = Service(
        "--workers",
        "2",
        "--redis-url",
        redis_server.url,
        env={"LUNA_SENDER_WS__SHUTDOWN_TIMEOUT": "0.5"},
    )
    try:
        wait_for(lambda: len(ready_pids(svc)) >= 2, svc, "two workers ready")
        pids = [svc.proc.pid, *worker_pids(svc)]
        svc.proc.terminate()
        time.sleep(0.05)
        with process_stopped(*pids):
            time.sleep(12.5)
        assert svc.proc.wait(20) == 0, svc.log()[-3000:]
        assert "did not stop in time" not in svc.log()
    finally:
        svc.terminate()
