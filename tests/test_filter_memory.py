"""Filter memory: the service-wide budget on what websockets' compiled filters hold.

One socket's query may compile to megabytes (64 user-defined lists in a 139 KB request line) and
every socket keeps its own, so ``ws.max_connections`` such sockets could hold tens of GB. The
hub admits a socket only while the estimated sum over live sockets stays within
``limits.filter_memory_max_bytes`` (503/29013 beyond it). The estimate is only useful if it is
not below what a filter really holds: checked here with tracemalloc for the shapes a query can
take, then the budget over a real service.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import tracemalloc
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import aiohttp
import orjson
import pytest

from luna_sender.config.settings import Settings
from luna_sender.delivery.groups import GroupSet, face_index, general_index
from luna_sender.filters.base import INDEX_ITEM_BYTES, CompiledFilter, Limits
from luna_sender.filters.events import compile_face
from luna_sender.filters.general import compile_general
from luna_sender.web.httpd import request_line_max

from .helpers import UPGRADE, RedisServer, Service

LIMITS = Limits()
LINE = request_line_max(Settings())  # the longest request line the service reads
ACCOUNT = str(uuid.uuid4())
BUDGET = 4 * 1024 * 1024  # the live service's: room for about eight 1,000-source sockets


def _fill(names: list[str], item: Callable[[int], str]) -> list[tuple[str, str]]:
    """One list per name, as many items as the request line takes in all (each list within
    ``list_filter_max_items``): the largest query of that shape the service reads."""
    per = (LINE - 200) // len(names)
    query = []
    for name in names:
        items: list[str] = []
        size = len(name) + 2
        while len(items) < LIMITS.list_max_items and size + len(item(len(items))) + 1 < per:
            size += len(item(len(items))) + 1
            items.append(item(len(items)))
        query.append((name, ",".join(items)))
    return query


def _distinct(n: int, shift: int) -> str:
    return "".join(chr(0x4E00 + shift * 7 + k) for k in range(n))


SHAPES: dict[str, tuple[Callable[..., CompiledFilter], list[tuple[str, str]]]] = {
    "no filter": (compile_face, []),
    "one source": (compile_face, [("sources", "cam-1")]),
    "1,000 sources": (compile_face, [("sources", ",".join(f"cam-{i}" for i in range(1000)))]),
    "1,000 handler uuids": (
        compile_face,
        [("handler_ids", ",".join(str(uuid.UUID(int=i)) for i in range(1000)))],
    ),
    "64 one-value filters": (compile_face, [(f"meta.f{i}", "a") for i in range(64)]),
    "64 string lists filling the line": (
        compile_face,
        _fill([f"meta.f{i}__in" for i in range(64)], lambda n: f"{n:x}"),
    ),
    "64 numeric lists filling the line": (
        compile_face,
        _fill([f"meta.f{i}__in:numeric" for i in range(64)], lambda n: str(n)),
    ),
    "64 general string lists filling the line": (
        compile_general,
        _fill([f"event.f{i}__in" for i in range(64)], lambda n: f"{n:x}"),
    ),
    "8 like patterns": (compile_general, [(f"event.f{i}__like", "%a_b%c%") for i in range(8)]),
    # The shift-and table holds an entry per distinct character of a segment: the longest
    # patterns of distinct (non-ASCII) characters, with and without ``_``.
    "8 like patterns of 254 distinct characters": (
        compile_face,
        [(f"meta.f{i}__like", "%" + _distinct(254, i) + "%") for i in range(8)],
    ),
    "8 like patterns with 14 _ between distinct characters": (
        compile_face,
        [
            (f"meta.f{i}__like", "%" + _distinct(120, i) + "_" * 14 + _distinct(120, i + 1) + "%")
            for i in range(8)
        ],
    ),
    "100 ASCII items of 1,000 characters": (
        compile_face,
        [("meta.f__in", ",".join(f"{i:04d}" + "a" * 996 for i in range(100)))],
    ),
    "30 astral items of 1,000 characters": (
        compile_face,
        [("meta.f__in", ",".join(f"{i:04d}" + "\U0001f600" * 996 for i in range(30)))],
    ),
    # A name is kept as the query's text, split into a path and keyed (the outside pass: a
    # 138,000-character name held ~2x its length).
    "a 130,000-character filter name": (compile_general, [("event." + "k" * 130_000, "v")]),
    "a 16-segment name of 8,000-character segments": (
        compile_face,
        [("meta." + ".".join(chr(97 + k) * 8_000 for k in range(16)) + "__like", "%v%")],
    ),
    "1,000 items of one astral character": (
        compile_face,
        [("meta.f__in", ",".join(chr(0x1F600 + i) for i in range(1000)))],
    ),
}


def _measured(compiler: Callable[..., CompiledFilter], query: Iterable[tuple[str, str]]) -> Any:
    """The least of three compilations: whatever else the process allocates meanwhile (a free
    list refilled, a cache entry) is not the filter's and only ever adds."""
    query = list(query)
    results = []
    # Everything alive before the measurement is frozen out of the collector's reach: a
    # collection then walks only what the compilation made. In the full suite the heap holds
    # every earlier test's leftovers, and collecting all of them ~900 times took past the
    # per-test timeout (CI, stop 30).
    gc.collect()
    gc.freeze()
    try:
        for _ in range(3):
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                compiled = compiler(query, LIMITS)
                gc.collect()
                results.append((tracemalloc.get_traced_memory()[0] - before, compiled))
            finally:
                tracemalloc.stop()
    finally:
        gc.unfreeze()
    held, compiled = min(results, key=lambda r: r[0])
    return compiled, held


@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_estimate_is_not_below_what_a_filter_holds(shape: str) -> None:
    compiler, query = SHAPES[shape]
    assert sum(len(k) + len(v) + 2 for k, v in query) < LINE
    # The query's own strings are made outside the measurement, as the request's are: count
    # them as held, since a socket keeps its parameters (CompiledFilter.params).
    text = sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in query)
    compiled, held = _measured(compiler, query)
    held += text
    print(f"{shape}: estimate {compiled.cost} B, measured {held} B")
    assert compiled.cost >= held
    if held > 100_000:  # big filters are what the budget is for: not wildly over-counted
        # (the share of the hub's index is charged too, but is not held by a lone filter)
        indexed = max(map(len, compiled.index.values()), default=0)
        assert compiled.cost - INDEX_ITEM_BYTES * indexed <= 3 * held


def _big_query(n: int) -> dict[str, str]:
    """About 500 KB of estimate each (filter and index share), distinct per socket: 1,000
    sources."""
    return {"sources": ",".join(f"s{n}-{i}" for i in range(1000))}


@pytest.fixture
def service(private_redis: RedisServer) -> Iterator[Service]:
    svc = Service(
        "--redis-url",
        private_redis.url,
        env={"LUNA_SENDER_LIMITS__FILTER_MEMORY_MAX_BYTES": str(BUDGET)},
    )
    yield svc
    svc.close()


async def _gauge(session: aiohttp.ClientSession, svc: Service) -> float:
    async with session.get(svc.url + "/metrics") as resp:
        text = await resp.text()
    (line,) = [x for x in text.splitlines() if x.startswith("ws_filter_memory_bytes")]
    return float(line.split()[-1])


async def _budget(svc: Service) -> None:
    compiled = compile_face(list(_big_query(0).items()), LIMITS)
    fit = BUDGET // compiled.cost  # sockets of this size the budget takes
    assert 5 <= fit <= 20, compiled.cost
    ws_url = svc.url.replace("http", "ws") + "/ws"
    headers = {"Luna-Account-Id": ACCOUNT}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        held = [
            await session.ws_connect(ws_url, params=_big_query(n), headers=headers)
            for n in range(fit)
        ]
        # Operators see what the budget counts: exactly the open sockets' estimates.
        costs = [compile_face(list(_big_query(n).items()), LIMITS).cost for n in range(fit)]
        assert await _gauge(session, svc) == sum(costs)
        # The socket past the budget: refused before the 101, with the LUNA body.
        async with session.get(
            svc.url + "/ws", params=_big_query(fit), headers={**UPGRADE, "Luna-Account-Id": ACCOUNT}
        ) as resp:
            assert resp.status == 503
            body = await resp.json()
        assert body["error_code"] == 29013
        assert body["detail"] == (
            f"Too much memory held by the service's websocket filters (limit {BUDGET} bytes)"
        )
        # Nothing else changed: the open sockets still get their events, once each.
        event = {"source": "s0-5", "event_id": "e1"}
        message = {
            "events": [event],
            "handler_id": "h",
            "event_create_time": "2026-01-01T00:00:00Z",
            "event_end_time": "2026-01-01T00:00:00Z",
        }
        async with session.post(
            svc.url + "/publish",
            data=orjson.dumps(message),
            headers={"Luna-Account-Id": ACCOUNT, "Content-Type": "application/json"},
        ) as resp:
            assert resp.status == 204, await resp.text()
        got = orjson.loads((await held[0].receive(timeout=10)).data)
        assert got["event"]["event_id"] == "e1"
        with pytest.raises(asyncio.TimeoutError):
            await held[1].receive(timeout=0.5)  # its sources do not include s0-5
        # A closed socket gives its share back at once: the refused one now gets in.
        await held.pop().close()
        late = None
        for _ in range(100):
            try:
                late = await session.ws_connect(ws_url, params=_big_query(fit), headers=headers)
                break
            except aiohttp.WSServerHandshakeError as exc:
                assert exc.status == 503
                await asyncio.sleep(0.05)
        assert late is not None
        for ws in [*held, late]:
            await ws.close()
        for _ in range(100):  # every share given back
            if await _gauge(session, svc) == 0:
                break
            await asyncio.sleep(0.05)
        assert await _gauge(session, svc) == 0


def test_budget_refuses_the_socket_past_it_and_gives_back_on_close(service: Service) -> None:
    asyncio.run(_budget(service))
    assert "Traceback" not in service.log()


class _Socket:
    """What a GroupSet keeps of a connection: its filter (and identity)."""

    def __init__(self, compiled: CompiledFilter) -> None:
        self.filter = compiled


INDEXED = {
    "sources": (compile_face, face_index, lambda s, i: f"{s:x}-{i:x}"),
    "stream_ids": (compile_face, face_index, lambda s, i: str(uuid.UUID(int=s << 32 | i))),
    "handler_ids": (compile_face, face_index, lambda s, i: str(uuid.UUID(int=s << 32 | i))),
    "event_type": (compile_general, general_index, lambda s, i: f"t{s}-{i}"),
}


@pytest.mark.parametrize("name", list(INDEXED))
def test_the_estimate_covers_a_sockets_share_of_the_hubs_index(name: str) -> None:
    """An indexed field (the outside pass: ``sources``) puts each group under every one of its
    values: a bucket per distinct value, ~230 bytes each, that sockets with distinct values add
    on top of their filters (RSS reached 2.1x the budget before this was counted)."""
    compiler, index, item = INDEXED[name]
    groups = GroupSet(index())
    kept = []
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for s in range(20):
            query = [(name, ",".join(item(s, i) for i in range(LIMITS.list_max_items)))]
            sock = _Socket(compiler(query, LIMITS))
            groups.add(sock)  # type: ignore[arg-type]
            kept.append(sock)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    estimated = sum(sock.filter.cost for sock in kept)
    print(f"{name}: estimate {estimated // 20} B, measured {held // 20} B per socket")
    assert held <= estimated <= 3 * held


def test_the_estimate_covers_a_list_of_any_length() -> None:
    """A frozenset's table grows 4x at a time, so the slots per item depend on where its length
    falls: each length on either side of every growth, and every 50th, up to the item limit,
    with the shortest distinct texts (every 7th length took 40 s of CI's budget)."""

    def table(n: int) -> int:
        return sys.getsizeof(frozenset([f"{i:x}" for i in range(n)]))

    top = LIMITS.list_max_items
    grows = [n for n in range(2, top + 1) if table(n) != table(n - 1)]
    assert grows, "no growth seen: the sampling below would miss the lengths that matter"
    lengths = {1, top, *range(1, top + 1, 50)}
    lengths |= {m for n in grows for m in (n - 2, n - 1, n, n + 1) if 1 <= m <= top}
    for n in sorted(lengths):
        query = [("meta.f__in", ",".join(f"{i:x}" for i in range(n)))]
        compiled, held = _measured(compile_face, query)
        assert compiled.cost >= held, (n, compiled.cost, held)


def test_the_api_documents_list_the_refusal_this_test_gets() -> None:
    """/docs/spec and /docs/asyncapi name every 503 a websocket handshake may get, 29013 too."""
    from luna_sender.web.docs.asyncapi import build_asyncapi
    from luna_sender.web.docs.openapi import build_document

    doc = build_document((1, 2))
    for path in ("/ws", "/2/ws", "/ws/general"):
        described = doc["paths"][path]["get"]["responses"]["503"]["description"]
        for code in ("29005", "29012", "29013"):
            assert code in described, (path, described)
    assert "503/29013" in str(build_asyncapi((1, 2)))
