"""The floor: a naive aiohttp + redis-py fan-out, written the obvious way.

One Redis pub/sub subscription per websocket, and per connection: decode every message, run the
filter, serialise the envelope. It speaks luna-sender's /ws protocol (Luna-Account-Id header,
``sources`` filter, same envelope), so the same clients and publisher drive it.
"""

from __future__ import annotations

import argparse
import json

import redis.asyncio as aioredis
from aiohttp import web


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    account = request.headers["Luna-Account-Id"]
    sources = set(request.query["sources"].split(",")) if "sources" in request.query else None
    ws = web.WebSocketResponse(heartbeat=20)
    await ws.prepare(request)
    pubsub = request.app["redis"].pubsub()
    await pubsub.subscribe(f"luna-sender:{account}")
    try:
        async for message in pubsub.listen():
            if message["type"] != "message":
                continue
            msg = json.loads(message["data"])
            for event in msg["events"]:
                if sources is not None and event.get("source") not in sources:
                    continue
                await ws.send_str(
                    json.dumps(
                        {
                            "event": event,
                            "handler_id": msg.get("handler_id"),
                            "event-create-time": msg.get("event_create_time"),
                            "event-end-time": msg.get("event_end_time"),
                            "Luna-Request-id": msg.get("Luna-Request-Id"),
                        }
                    )
                )
    except (ConnectionResetError, RuntimeError):
        pass
    finally:
        await pubsub.aclose()
    return ws


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    args = parser.parse_args()
    app = web.Application()
    app["redis"] = aioredis.from_url(args.redis_url, max_connections=100_000)
    app.router.add_get("/ws", ws_handler)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
