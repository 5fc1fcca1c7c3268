"""``luna-sender listen`` and ``luna-sender publish``: see events flow without writing code.

``listen`` prints matching events as JSON lines and reconnects with backoff when the connection
drops; a rejected filter (HTTP 4xx on the handshake) prints the service's LUNA error and exits 2.
With ``--recover`` it asks for offsets and reconnects with ``since=<the last offset seen>`` so the
events sent while it was away are replayed (docs/recovery.md); when the service answers
``recovered: false`` it says so on stderr, since events may then have been missed. Its backoff is
jittered: after a restart every recovering client would otherwise come back in the same instant.
``publish`` sends a test event from a file or stdin.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import uuid
from datetime import UTC, datetime
from typing import Any, TextIO

import aiohttp

from luna_sender.filters.events import FACE_SPECS
from luna_sender.filters.general import GENERAL_SPECS

EXIT_BAD_INPUT = 2
EXIT_UNREACHABLE = 1


def flag_name(param: str) -> str:
    """``age__gte`` -> ``--age-gte``."""
    return "--" + param.replace("__", "-").replace("_", "-")


def add_filter_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filters (as on the websocket query string)")
    # account_id is --account-id itself: the header on /ws, the filter on /ws/general.
    for name in sorted({*FACE_SPECS, *GENERAL_SPECS} - {"account_id"}):
        group.add_argument(
            flag_name(name),
            dest=f"filter__{name}",
            metavar="VALUE",
            help=f"{name} (see docs/filters.md)",
        )
    group.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any parameter, e.g. --filter 'event.count__gte:integer=5'",
    )


def collect_filters(args: argparse.Namespace) -> list[tuple[str, str]]:
    params = [
        (key[len("filter__") :], value)
        for key, value in vars(args).items()
        if key.startswith("filter__") and value is not None
    ]
    for item in args.filter:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"luna-sender: --filter expects KEY=VALUE, got {item!r}")
        params.append((key, value))
    return params


def _print_error(status: int, body: bytes, out: TextIO) -> None:
    try:
        err = json.loads(body)
        text = f"{err.get('error_code')}: {err.get('desc')}. {err.get('detail')}"
    except ValueError:
        text = body.decode(errors="replace")[:500]
    print(f"luna-sender: HTTP {status}: {text}", file=out)


def _auth_headers(args: argparse.Namespace) -> dict[str, str]:
    """auth.mode jwt: the token goes in the header (never the URL, which proxies may log)."""
    token = getattr(args, "token", None)
    return {"Authorization": f"Bearer {token}"} if token else {}


def _shown(text: str, pretty: bool) -> tuple[Any, str]:
    """A frame as the listener prints it, and its value (None when Python's json cannot take it).

    A face event is forwarded as its producer wrote it (docs/compatibility.md), so a frame may
    hold a number Python's json refuses (4,301+ digits) or reads as inf (``1e999``), which it
    would print as the non-JSON ``Infinity``: such a frame is printed as received, never
    re-written, and the listener goes on (an outside pass: it died on the first one).
    """
    try:
        data = json.loads(text)
        return data, json.dumps(
            data, indent=2 if pretty else None, ensure_ascii=False, allow_nan=False
        )
    except ValueError:
        return None, text


async def listen(
    args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    path = "/ws/general" if args.general else "/ws"
    url = args.url.rstrip("/") + path
    headers = _auth_headers(args)
    if not args.general:
        if not args.account_id and not args.token:
            print(
                "luna-sender: --account-id (or --token) is required for face/body events "
                "(or use --general)",
                file=err,
            )
            return EXIT_BAD_INPUT
        if args.account_id:
            headers["Luna-Account-Id"] = args.account_id
    params = collect_filters(args)
    if args.general and args.account_id:
        params.append(("account_id", args.account_id))
    received = 0
    backoff = 0.5
    connected_once = False
    recover = getattr(args, "recover", False)
    resume = Resume() if recover else None
    async with aiohttp.ClientSession() as session:
        while True:
            query = params if resume is None else resume.params(params)
            try:
                async with session.ws_connect(
                    url, params=query, headers=headers, heartbeat=30
                ) as ws:
                    connected_once = True
                    backoff = 0.5
                    print(f"luna-sender: listening on {url}", file=err)
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            continue
                        data, shown = _shown(msg.data, args.pretty)
                        if resume is not None and data is not None and not resume.seen(data, err):
                            continue
                        print(shown, file=out, flush=True)
                        received += 1
                        if args.count and received >= args.count:
                            return 0
                    reason = f"closed with code {ws.close_code}"
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status < 400:  # answered, but not as a websocket: a wrong --url
                    print(f"luna-sender: {url} is not a websocket (HTTP {exc.status})", file=err)
                    return EXIT_BAD_INPUT
                if 400 <= exc.status < 500:
                    http_url = url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)
                    async with session.get(http_url, params=query, headers=headers) as resp:
                        _print_error(resp.status, await resp.read(), err)
                    return EXIT_BAD_INPUT
                reason = f"handshake failed with HTTP {exc.status}"
            except (aiohttp.ClientError, OSError) as exc:
                if not connected_once:
                    print(f"luna-sender: service unreachable at {args.url}: {exc}", file=err)
                    return EXIT_UNREACHABLE
                reason = str(exc)
            delay = backoff if resume is None else random.uniform(backoff / 2, backoff)
            print(
                f"luna-sender: connection lost ({reason}); reconnecting in {delay:.1f}s", file=err
            )
            await asyncio.sleep(delay)
            backoff = min(backoff * 2, 10.0)


class Resume:
    """What ``listen --recover`` remembers across connections: the last offset it printed."""

    def __init__(self) -> None:
        self.offset: str | None = None

    def params(self, filters: list[tuple[str, str]]) -> list[tuple[str, str]]:
        extra = [("recover", "true")]
        if self.offset is not None:
            extra.append(("since", self.offset))
        return [*filters, *extra]

    def seen(self, frame: Any, err: TextIO) -> bool:
        """Note a frame's offset; False for the recovery report, which is not an event."""
        if not isinstance(frame, dict):
            return True
        report = frame.get("recovery")
        if isinstance(report, dict) and len(frame) == 1:
            replayed = report.get("replayed")
            if report.get("recovered") is True:
                print(f"luna-sender: resumed, {replayed} missed event(s) replayed", file=err)
            else:
                # The socket is not told why (docs/recovery.md lists the causes: the window,
                # a gap marker after a bus cut or a restart of the only recorder, ...).
                print(
                    "luna-sender: not recovered (the offset is outside the history, or behind "
                    "a gap): events may have been missed while disconnected",
                    file=err,
                )
            return False
        offset = frame.get("offset")
        if isinstance(offset, str):
            self.offset = offset
        return True


def _now() -> str:
    return datetime.now(UTC).isoformat()


def build_publish_body(doc: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Accept a full publish body, or a bare event (or list of events) and fill the rest."""
    if args.general:
        if isinstance(doc, dict) and "event" in doc and "event_type" in doc:
            return doc
        if not isinstance(doc, dict):
            raise ValueError("a general event must be a JSON object")
        if not args.event_type:
            raise ValueError("--event-type is required when the file holds a bare event")
        body: dict[str, Any] = {"event": doc, "event_type": args.event_type}
        if args.account_id:
            body["account_id"] = args.account_id
        return body
    if isinstance(doc, dict) and "events" in doc:
        return doc
    events = doc if isinstance(doc, list) else [doc]
    return {
        "events": events,
        "handler_id": args.handler_id or str(uuid.uuid4()),
        "event_create_time": _now(),
        "event_end_time": _now(),
    }


async def publish(
    args: argparse.Namespace, stdin: TextIO = sys.stdin, err: TextIO = sys.stderr
) -> int:
    try:
        if args.file in (None, "-"):
            text = stdin.read()
        else:
            with open(args.file, encoding="utf-8") as handle:
                text = handle.read()
        body = build_publish_body(json.loads(text), args)
    except (OSError, ValueError) as exc:
        print(f"luna-sender: bad input: {exc}", file=err)
        return EXIT_BAD_INPUT
    headers = _auth_headers(args)
    if not args.general:
        if not args.account_id and not args.token:
            print(
                "luna-sender: --account-id (or --token) is required for face/body events", file=err
            )
            return EXIT_BAD_INPUT
        if args.account_id:
            headers["Luna-Account-Id"] = args.account_id
    url = args.url.rstrip("/") + ("/publish/general" if args.general else "/publish")
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, json=body, headers=headers) as resp,
        ):
            if resp.status == 204:
                print(
                    f"luna-sender: published (request {resp.headers.get('Luna-Request-Id')})",
                    file=err,
                )
                return 0
            _print_error(resp.status, await resp.read(), err)
            return EXIT_BAD_INPUT if resp.status < 500 else EXIT_UNREACHABLE
    except (aiohttp.ClientError, OSError) as exc:
        print(f"luna-sender: service unreachable at {args.url}: {exc}", file=err)
        return EXIT_UNREACHABLE
