"""encode/broadcaster on Starlette/uvicorn: one broadcaster subscription per websocket channel.

Routing is publisher-side: a subscriber listens on ``bench:{account}`` or ``bench:{account}:{src}``
and the publisher publishes each event to the channel(s) it belongs to.
"""

from __future__ import annotations

import argparse
import contextlib

import anyio
import uvicorn
from broadcaster import Broadcast
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


def build(redis_url: str) -> Starlette:
    broadcast = Broadcast(redis_url)

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        channel = websocket.query_params["channel"]

        async def forward() -> None:
            async with broadcast.subscribe(channel=channel) as subscriber:
                await websocket.send_text("subscribed")
                async for event in subscriber:
                    await websocket.send_text(event.message)

        async def drain() -> None:
            with contextlib.suppress(WebSocketDisconnect):
                while True:
                    await websocket.receive_text()

        async with anyio.create_task_group() as group:
            group.start_soon(forward)
            await drain()
            group.cancel_scope.cancel()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await broadcast.connect()
        yield
        await broadcast.disconnect()

    return Starlette(routes=[WebSocketRoute("/ws", endpoint)], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    args = parser.parse_args()
    uvicorn.run(
        build(args.redis_url),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        ws_ping_interval=20,
    )


if __name__ == "__main__":
    main()
