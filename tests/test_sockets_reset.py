"""``runtime/sockets.reset`` on a transport already aborted, before its ``connection_lost`` ran.

In a full test run the hub's stall sweep reset a websocket that the close path had just reset:
uvloop's socket raised ValueError (a negative descriptor), the sweep task died, and the service
exited 1 at its stop. Such a reset must do nothing and count nothing, on both loops.
"""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from luna_sender.runtime import sockets


@pytest.mark.parametrize("make_loop", [asyncio.new_event_loop, uvloop.new_event_loop])
def test_a_second_reset_does_nothing(make_loop: object) -> None:
    async def main() -> None:
        accepted: asyncio.Future[asyncio.Transport] = asyncio.get_running_loop().create_future()

        class Server(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                accepted.set_result(transport)  # type: ignore[arg-type]

        server = await asyncio.get_running_loop().create_server(Server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        transport = await accepted
        sockets.RESETS.clear()
        sockets.reset(transport, "first")
        await asyncio.sleep(0)  # the descriptor closes; connection_lost may not have run yet
        sockets.reset(transport, "second")
        await asyncio.sleep(0.05)
        sockets.reset(transport, "third")
        assert dict(sockets.RESETS) == {"first": 1}
        sockets.RESETS.clear()
        writer.close()
        server.close()
        await server.wait_closed()

    loop = make_loop()  # type: ignore[operator]
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
