"""Connections to one Cluster node of its own pool, apart from the cluster client.

Why: the cluster client's error handling is shared by everything it sends. A timeout on one
master marks the whole client for a slot-map reload, which every later caller waits for, and a
retry there could send a command twice. The bus's publishes, its probes of a lost shard and the
recovery history's per-master batches therefore go to the node that owns the slot on a
connection of that node's pool, and each caller decides what an error means.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from redis.asyncio.cluster import ClusterNode
from redis.cluster import PRIMARY
from redis.exceptions import MovedError, ResponseError


async def node_commands(node: ClusterNode, commands: list[tuple[Any, ...]]) -> list[Any]:
    """``commands`` as one pipeline on a connection of ``node``'s own pool, each reply or error
    reply in order (the recovery history's per-master batches, bus/lanes.py). A connection
    error or timeout raises; the connection is then dropped, not reused half-read."""
    pool = NodePool(node)
    connection = await pool.get_connection()
    try:
        await connection.send_packed_command(connection.pack_commands(commands))
        results: list[Any] = []
        for _ in commands:
            try:
                results.append(await connection.read_response())
            except ResponseError as exc:  # one command's answer: the rest follow
                results.append(exc)
        return results
    except AttributeError as exc:  # closed underneath (a slot-map reload closes old nodes)
        await connection.disconnect()
        raise ConnectionError(f"connection to {node.name} closed") from exc
    except BaseException:
        await connection.disconnect()
        raise
    finally:
        await pool.release(connection)


class NodePool:
    """A cluster node's connection pool, as :func:`publish_once` takes one (connect, release)."""

    def __init__(self, node: ClusterNode) -> None:
        self._node = node

    async def get_connection(self) -> Any:
        connection: Any = self._node.acquire_connection()
        try:
            await connection.connect()
        except BaseException:
            await connection.disconnect()
            self._node.release(connection)
            raise
        return connection

    async def release(self, connection: Any) -> None:
        self._node.release(connection)


async def redirected(client: Any, command: tuple[Any, ...], refusal: Exception) -> Any:
    """``command``'s reply (or error) from the node a MOVED or ASK ``refusal`` names, after
    ASKING for an ASK (the refusal itself when it names none). A refused command did not run,
    so running it there once cannot run it twice. Before, a failover or a slot migration
    failed the history's appends until the map was reloaded: events without offset, resumes
    ``false`` (an outside pass: 67 events in 3.5 s, 20 s after a failover)."""
    host, port = getattr(refusal, "node_addr", (None, 0))
    if not host:
        return refusal
    # A replica until just now is not in redis-py's map (it keeps masters): a node of its own
    known = client.get_node(host=host, port=port)
    node = known or ClusterNode(host, port, **client.nodes_manager.connection_kwargs)
    asking = not isinstance(refusal, MovedError)  # MovedError is an AskError
    try:
        async with asyncio.timeout(2.0):
            return (await node_commands(node, [("ASKING",), command] if asking else [command]))[-1]
    except Exception as exc:
        return exc
    finally:
        if known is None:
            await node.disconnect()


async def role(node: ClusterNode, within: float = 1.0) -> str | None:
    """What the node says it is (``ROLE``: "master", "slave"), None when it does not answer
    within ``within`` s."""
    try:
        async with asyncio.timeout(within):
            (reply,) = await node_commands(node, [("ROLE",)])
    except Exception:
        return None
    head = reply[0] if isinstance(reply, list) and reply else None
    return head.decode() if isinstance(head, bytes) else head


async def leads(node: ClusterNode, within: float = 1.0) -> bool:
    """Whether the node answers ``ROLE`` as a master within ``within`` s. A slot map read just
    after a failover may still name the demoted master, and Redis 7 takes SSUBSCRIBE on a
    replica: a subscription placed there heard nothing until the replica had synced, then
    overlapped the one on the real master (an outside pass: ~1 s of events lost per instance
    on a manual failover, then some delivered twice)."""
    return await role(node, within) == "master"


async def answers(node: ClusterNode, within: float = 1.0) -> bool:
    """Whether the node answers a PING within ``within`` s, connecting included (a connection
    of its pool, not the pub/sub one; the health check waits on it: bounded per step, a frozen
    node's answer took up to 3 s)."""
    pool = NodePool(node)
    connection, answered = None, False
    try:
        async with asyncio.timeout(within):
            connection = await pool.get_connection()
            await connection.send_command("PING")
            await connection.read_response()
        answered = True
    except Exception:
        pass
    finally:
        if connection is not None:
            if not answered:  # never back to the pool half-read (a timeout, a cancel)
                await connection.disconnect()
            await pool.release(connection)
    return answered


async def reload_slot_map(client: Any) -> None:
    """The cluster client's slot map reloaded, and the idle connections of nodes it now names
    replicas closed. redis-py keeps a demoted master's node and its pool, only marking the
    connections for a reconnect on their next use, which never comes: nothing is sent to a
    replica (an outside pass: 19-24 idle connections per instance left on a node after its
    failover, for good)."""
    await client.nodes_manager.initialize()
    idle = [node for node in client.get_nodes() if node.server_type != PRIMARY]
    with contextlib.suppress(TimeoutError):  # a frozen node: closing never waits on it long
        async with asyncio.timeout(1.0):
            await asyncio.gather(*(node.disconnect_free_connections() for node in idle))


SLOTS = ("CLUSTER SLOTS",)


def _differs(client: Any, slots: list[Any]) -> bool:
    """Whether a CLUSTER SLOTS reply names a primary for some slot range other than the map's
    (an empty host means the node asked, whose address the map already has)."""
    cache = client.nodes_manager.slots_cache
    for start, _end, primary, *_replicas in slots:
        host, port = primary[0], int(primary[1])
        host = host.decode() if isinstance(host, bytes) else str(host)
        owners = cache.get(int(start))
        if not owners or owners[0].port != port or host not in ("", "?", owners[0].host):
            return True
    return False


class SlotMapReload:
    """A cluster client's slot map reloaded in the background, at most once a second and one at
    a time: what calls on a node's own connections (above) do after a failure that may be a
    failover, since they bypass the client that would have reloaded it. The bus's publishes and
    the recovery history each hold one for their own client."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._task: asyncio.Task[Any] | None = None
        self._at = 0.0

    def soon(self) -> None:
        now = time.monotonic()
        if (self._task is not None and not self._task.done()) or now - self._at < 1:
            return
        self._at = now
        self._task = asyncio.ensure_future(reload_slot_map(self._client))
        self._task.add_done_callback(lambda task: task.cancelled() or task.exception())

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def follow(self, every: float) -> None:
        """Checks the map against the cluster every ``every`` s, reloading it when they differ.

        A failover that fails nothing leaves the map stale for good: a demoted master takes
        PUBLISH and SPUBLISH as a replica and forwards them, so no error ever triggers a
        reload, and the publishes went through it for as long as it lived (an outside pass:
        19-24 connections per instance on a replica; stopping it for maintenance then refused
        publishes). Reloading on a timer instead would cost every pooled connection a
        reconnect each time (redis-py recycles them on every reload)."""
        while True:
            await asyncio.sleep(every)
            try:
                async with asyncio.timeout(1.0):
                    slots = (await node_commands(self._client.get_default_node(), [SLOTS]))[0]
                if isinstance(slots, Exception) or _differs(self._client, slots):
                    self.soon()
            except Exception:  # unreachable or frozen: the default node may be the one gone
                self.soon()
