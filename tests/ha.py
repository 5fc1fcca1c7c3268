"""Redis high-availability topologies for scale-out tests: Sentinel and Cluster, on loopback.

Each node is a real ``redis-server`` process on a free port in a private temp dir; nothing here
touches the machine's shared Redis on 6379.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, TypeVar

import redis
from redis.cluster import key_slot

from .helpers import RedisServer, free_port


class SentinelSetup:
    """Master + replica + three sentinels watching master name ``mymaster``."""

    def __init__(self, master_name: str = "mymaster") -> None:
        self.master_name = master_name
        self.master = RedisServer()
        self.replica = RedisServer(extra=[])
        # Distinct, and none of the master's or replica's (chosen but not yet bound): two
        # nodes given one port left a sentinel unstarted and the others never met it.
        taken = {self.master.port, self.replica.port}
        self.sentinel_ports: list[int] = []
        while len(self.sentinel_ports) < 3:
            if (port := free_port()) not in taken:
                taken.add(port)
                self.sentinel_ports.append(port)
        self.sentinels: list[subprocess.Popen[bytes]] = []
        self.dir = Path(tempfile.mkdtemp(prefix="luna-sentinel-"))

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.master_name}/0"

    def start(self) -> None:
        self.master.start()
        self.replica.extra = ["--replicaof", "127.0.0.1", str(self.master.port)]
        self.replica.start()
        for port in self.sentinel_ports:
            conf = self.dir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {self.dir}\n"
                f"sentinel monitor {self.master_name} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {self.master_name} 1000\n"
                f"sentinel failover-timeout {self.master_name} 3000\n"
                f"sentinel parallel-syncs {self.master_name} 1\n"
            )
            self.sentinels.append(
                subprocess.Popen(
                    [shutil.which("redis-server") or "redis-server", str(conf), "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + 15
        for port in self.sentinel_ports:
            while True:
                try:
                    client = redis.Redis(port=port, socket_timeout=1)
                    info = client.sentinel_master(self.master_name)
                    if int(info.get("num-other-sentinels", 0)) >= 2:
                        break
                except redis.exceptions.RedisError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("sentinels did not discover each other")
                time.sleep(0.1)

    def current_master_port(self) -> int:
        client = redis.Redis(port=self.sentinel_ports[0], socket_timeout=1)
        _host, port = client.sentinel_get_master_addr_by_name(self.master_name)
        return int(port)

    async def new_master(self, old_port: int, timeout: float = 30) -> int:
        """The port of the master the sentinels name once it is another than ``old_port``."""
        deadline = time.monotonic() + timeout
        while (port := self.current_master_port()) == old_port:
            assert time.monotonic() < deadline, "sentinels did not promote the replica"
            await asyncio.sleep(0.05)
        return port

    def close(self) -> None:
        for proc in self.sentinels:
            proc.kill()
            proc.wait()
        self.master.close()
        self.replica.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def low_free_port() -> int:
    while True:
        port = random.randint(20000, 45000)
        if all(_port_free(p) for p in (port, port + 10000)):
            return port


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_state(node: RedisServer) -> str:
    info = node.client().execute_command("CLUSTER INFO")
    if isinstance(info, dict):
        return str(info.get("cluster_state"))
    text = info.decode() if isinstance(info, bytes) else str(info)
    return "ok" if "cluster_state:ok" in text else "fail"


def _synced(node: RedisServer) -> bool:
    """A master, or a replica that has its master's data (else it may never fail over)."""
    info = node.client().info("replication")
    return info.get("role") == "master" or info.get("master_link_status") == "up"


class ClusterSetup:
    """A three-master Redis Cluster created with ``redis-cli --cluster create``; with
    ``replicas=1``, six nodes: each master has a replica to fail over to."""

    def __init__(self, size: int = 3, node_timeout_ms: int = 2000, replicas: int = 0) -> None:
        self.node_timeout_ms = node_timeout_ms
        self.replicas = replicas
        size *= 1 + replicas
        # The cluster bus listens on port + 10000, so node ports must stay below 55536.
        self.nodes = [RedisServer(port=low_free_port(), extra=[]) for _ in range(size)]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.extra = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"{node.dir}/nodes.conf",
                "--cluster-node-timeout",
                str(self.node_timeout_ms),
            ]
            node.start()
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        deadline = time.monotonic() + 20
        for node in self.nodes:
            while _cluster_state(node) != "ok" or not _synced(node):
                if time.monotonic() > deadline:
                    raise TimeoutError("cluster did not become ok")
                time.sleep(0.1)

    def owner(self, key: str) -> RedisServer:
        """The master serving ``key``'s slot now."""
        slot = key_slot(key.encode())
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                continue
            with contextlib.suppress(Exception):
                for start, end, master, *_ in node.client().execute_command("CLUSTER SLOTS"):
                    if start <= slot <= end:
                        return next(n for n in self.nodes if n.port == int(master[1]))
        raise LookupError(f"no live node knows slot {slot}")

    def close(self) -> None:
        for node in self.nodes:
            node.close()


class _Setup(Protocol):
    def start(self) -> None: ...
    def close(self) -> None: ...


S = TypeVar("S", bound=_Setup)


@contextlib.contextmanager
def running(setup: S) -> Iterator[S]:
    """Started for the block and always closed: no process outlives a failed setup either."""
    try:
        setup.start()
        yield setup
    finally:
        setup.close()
