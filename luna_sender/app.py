"""Builds the aiohttp application: routes, middleware, start-up and shutdown order.

Shutdown order matters for the delivery promise: stop accepting, let already-published events
reach the sockets, close every socket with 1001, then stop the bus and the plugins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

from aiohttp import web

from luna_sender.bus import Bus, BusOptions, SelfHealing, create_bus, log_address
from luna_sender.bus.history import History, Window, create_history
from luna_sender.cli.workers import MULTIPROC_ENV
from luna_sender.config import Settings, plugin_setup
from luna_sender.delivery.hub import Hub
from luna_sender.plugins.host import PluginManager
from luna_sender.runtime import fdlimit
from luna_sender.runtime.gcpolicy import GcPolicy
from luna_sender.runtime.metrics import Metrics
from luna_sender.web import access, httpd, publish, service, stalls, streams, viewer
from luna_sender.web.context import CTX, Context
from luna_sender.web.middlewares import luna_middleware

log = logging.getLogger("luna_sender.app")
GC_POLICY: web.AppKey[GcPolicy] = web.AppKey("luna_sender_gc_policy", GcPolicy)
FD_WATCH = fdlimit.FD_WATCH
# Monotonic time and open websockets when shutdown began, for the "shutdown finished" line
# (a dict set at build time: a started application's keys must not change).
SHUTDOWN: web.AppKey[dict[str, float]] = web.AppKey("luna_sender_shutdown", dict)
BUS_GAUGE: web.AppKey[asyncio.Task[None]] = web.AppKey("luna_sender_bus_gauge", asyncio.Task)
BUS_GAUGE_INTERVAL = 1.0


def business_prefixes(settings: Settings) -> list[str]:
    return ["", *(f"/{v}" for v in settings.api_versions)]


def build_app(settings: Settings) -> web.Application:
    # The supervisor of --workers sets the shared metrics folder (luna_sender/cli/workers.py).
    shared = os.environ.get(MULTIPROC_ENV) if settings.workers > 1 else None
    metrics = Metrics(settings.metrics.extra_labels, multiprocess_dir=shared)
    bus = create_bus(settings.redis_url, BusOptions(publish_timeout=settings.bus_publish_timeout))
    plugins = PluginManager(*plugin_setup(settings))
    hub = Hub(bus, settings, metrics, hooks=plugins, history=_history(settings, bus))
    if isinstance(bus, SelfHealing):
        _observe(bus, hub, metrics)
    app = web.Application(
        middlewares=[luna_middleware],
        client_max_size=settings.limits.publish_body_max_bytes,
        handler_args=httpd.handler_args(settings),
    )
    httpd.install(app)
    app[CTX] = Context(settings=settings, bus=bus, hub=hub, metrics=metrics, plugins=plugins)
    app[FD_WATCH] = fdlimit.FdWatch()
    app[access.POLICY] = access.AccessPolicy(settings)
    app[SHUTDOWN] = {}
    app[GC_POLICY] = GcPolicy(
        settings.gc, metrics, live=lambda: len(hub.connections), closed=lambda: hub.closed_total
    )

    for prefix in business_prefixes(settings):
        app.router.add_get(prefix + "/ws", streams.face_ws, allow_head=False)
        app.router.add_get(prefix + "/ws/general", streams.general_ws, allow_head=False)
        app.router.add_post(prefix + "/publish", publish.publish_events)
        app.router.add_post(prefix + "/publish/general", publish.publish_general)
    app.router.add_get("/version", service.version)
    app.router.add_get("/healthcheck", service.healthcheck)
    app.router.add_get("/config", service.config)
    app.router.add_get("/plugins", service.plugins)
    app.router.add_get("/metrics", service.metrics)
    app.router.add_get("/docs/spec", service.docs_spec)
    app.router.add_get("/docs/asyncapi", service.docs_asyncapi)
    app.router.add_get("/docs/dev", service.docs_dev)
    app.router.add_get("/docs/dev/{page:[^/]*}", service.docs_dev_page)  # "" is the folder
    viewer.add_routes(app)

    app.on_startup.append(_on_startup)
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    return app


def _history(settings: Settings, bus: Bus) -> History | None:
    """The recovery history (#18) on the bus's Redis (plain, Sentinel or Cluster), or in memory
    for memory://. A bus it cannot live on would serve recovering sockets without offsets;
    every bus create_bus builds has one today. It records under the bus connection's presence
    name (bus/presence.py), where the bus has one."""
    h = settings.history
    window = Window(h.size, h.ttl, h.max_bytes, h.dedupe, h.meta_ttl)
    announcer = getattr(bus, "announcer", None)
    presence = (lambda: announcer.name) if announcer is not None else None
    try:
        return create_history(settings.redis_url, window, presence=presence)
    except ValueError as exc:
        log.warning("missed-event recovery unavailable: %s", exc)
        return None


def _observe(bus: SelfHealing, hub: Hub, metrics: Metrics) -> None:
    """Counts reconnects and repairs, and tells the recorder of a reconnect: what was published
    while the subscription was gone (a lost connection, a Sentinel failover) reached nobody
    here, so the history must not claim to hold it (docs/recovery.md)."""

    def reconnected() -> None:
        metrics.reconnected.inc()
        hub.interrupted()

    def repaired(missing: int, extra: int) -> None:
        metrics.repaired.inc(missing + extra)

    def cut(channels: frozenset[str], reconnected: bool) -> None:
        # Channels that heard nothing for a while and are subscribed again: one shard of a
        # sharded Cluster lost, or the self-check found them unsubscribed (a failover moved
        # their slot). The same as a reconnect, for them only (before, a repair marked every
        # recorded channel: an outside pass saw every healthy account's resumes answer false).
        if reconnected:
            metrics.reconnected.inc()
        hub.interrupted(channels)

    bus.observe(reconnected=reconnected, repaired=repaired, cut=cut)


async def _on_startup(app: web.Application) -> None:
    context = app[CTX]
    await context.plugins.start(context)
    await context.hub.start()
    app[GC_POLICY].start()
    app[fdlimit.CAPACITY] = fdlimit.connection_capacity(context.settings.ws)
    app[FD_WATCH].start()
    if context.metrics.multiprocess:
        app[BUS_GAUGE] = asyncio.create_task(_bus_gauge(context), name="bus-gauge")


def log_ready(app: web.Application, addresses: list[Any]) -> None:
    """Called once the listening sockets accept connections (luna_sender/runtime/lifecycle.py);
    names the addresses bound, so a service told ``--port 0`` can be found from its log."""
    context = app[CTX]
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    listen = ",".join(f"[{a[0]}]:{a[1]}" if ":" in a[0] else f"{a[0]}:{a[1]}" for a in addresses)
    log.info(
        "luna-sender ready: listen=%s bus=%s api_versions=%s loop=%s pid=%d",
        listen,
        log_address(context.bus.url),
        context.settings.api_versions,
        loop,
        os.getpid(),
    )


async def _on_shutdown(app: web.Application) -> None:
    context = app[CTX]
    sockets = len(context.hub.connections)
    app[SHUTDOWN].update(started=time.monotonic(), sockets=sockets)
    log.info(
        "shutdown started: closing %d websocket(s) with 1001", sockets, extra={"sockets": sockets}
    )
    context.hub.shutting_down = True
    stalls.reset_stalled()
    # Events published before the signal reach their sockets before the close frames, which
    # are written after them on the same transports.
    await context.bus.flush(1.0)
    await context.hub.close_all()


async def _bus_gauge(context: Context) -> None:
    """Keep this worker's ``bus_connected`` and delivery counts current: a scrape answered by
    another worker reads them from the shared files and cannot ask this worker."""
    while True:
        service.refresh_bus_gauge(context)
        context.metrics.fold()
        await asyncio.sleep(BUS_GAUGE_INTERVAL)


async def _on_cleanup(app: web.Application) -> None:
    context = app[CTX]
    task = app.get(BUS_GAUGE)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await app[GC_POLICY].stop()
    await app[FD_WATCH].stop()
    await context.hub.stop()
    context.metrics.fold()  # with --workers, the last second's counts reach the shared files
    await context.plugins.stop()
    sockets = int(app[SHUTDOWN].get("sockets", 0))
    took = time.monotonic() - app[SHUTDOWN].get("started", time.monotonic())
    left = len(context.hub.connections)
    log.info(
        "shutdown finished in %.3fs: %d websocket(s) closed, %d left open",
        took,
        sockets - left,
        left,
        extra={"sockets": sockets, "sockets_left": left, "duration": round(took, 3)},
    )
