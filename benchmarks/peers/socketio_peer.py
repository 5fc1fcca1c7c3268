"""python-socketio with AsyncRedisManager: the usual Python answer to "fan out over Redis".

No content filters: clients join a room named after what they want (account, or account+source)
and the publisher routes each event to its room ("publisher-side routing", whose CPU the
benchmark reports separately).
"""

from __future__ import annotations

import argparse

import socketio
from aiohttp import web


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    args = parser.parse_args()
    manager = socketio.AsyncRedisManager(args.redis_url, channel="bench-socketio")
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=manager,
        cors_allowed_origins="*",
        ping_interval=20,
        ping_timeout=20,
    )

    @sio.on("join")
    async def join(sid: str, room: str) -> None:
        await sio.enter_room(sid, room)
        await sio.emit("joined", room, to=sid)

    app = web.Application()
    sio.attach(app)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
