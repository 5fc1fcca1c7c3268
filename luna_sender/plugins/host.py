"""Plugins: discovery by entry point or dotted path, lifecycle, and hooks off the hot path.

A plugin is whatever its factory returns. The factory is found by name in the
``luna_sender.plugins`` entry-point group, else as ``package.module:attr``. If the factory has a
``Settings`` attribute (a pydantic model), the plugin's block from ``plugin_settings`` is
validated with it and passed as the only argument; otherwise the block is passed as keywords.

Hooks (all optional, sync or async; see docs/plugins.md):

- ``start(context)`` / ``stop()``
- ``event_received(event: BusEvent)`` — every bus message, with its channel and account
- ``event_delivered(event: BusEvent)`` — when it went to at least one socket (``event.delivered``)
  Recovering sockets count like plain ones; replays to reconnecting sockets are not reported
  (docs/metrics.md, "Recovering sockets").
- ``request_finished(route, status, duration, error_code)``
- ``connection_opened(info)`` / ``connection_closed(info)``

Hooks never run on the delivery path: the hub and the middleware only append a tuple to a
bounded queue and one background task calls the plugins, so a slow plugin delays only itself.
When the queue is full the oldest notifications are dropped (counted in ``dropped``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from luna_sender.runtime.logs import Throttle

if TYPE_CHECKING:
    from luna_sender.web.context import Context

log = logging.getLogger("luna_sender.plugins")

ENTRY_POINT_GROUP = "luna_sender.plugins"
HOOKS = (
    "event_received",
    "event_delivered",
    "request_finished",
    "connection_opened",
    "connection_closed",
)
QUEUE_MAX = 10000
STOP_DRAIN = 2.0  # seconds the plugins get at shutdown for what is still queued
# Seconds all async stop() calls share: a fixed total, not per plugin, so the worker supervisor's
# kill deadline (ws.shutdown_timeout + 11 s, docs/deployment.md) holds however many are loaded.
STOP_BUDGET = 5.0
HOOK_FAILURE_LOG_INTERVAL = 60.0  # a failing hook's later tracebacks are summarised this often


class PluginError(Exception):
    pass


@dataclass(slots=True)
class BusEvent:
    """One bus message as plugins see it: raw bytes, decoded by the plugin if it cares."""

    channel: str
    kind: str  # "face" | "general"
    account_id: str | None  # from the channel for face events; general: inside the message
    data: bytes
    delivered: int  # frames written to sockets, plain and recovering (replays: never)
    transport_time: float  # seconds from bus receipt to hand-off to the sockets
    received_at: float = field(default_factory=time.time)


@dataclass
class LoadedPlugin:
    name: str
    obj: Any
    running: bool = False
    error: str | None = None


def resolve(name: str) -> Any:
    """Find a plugin factory: an entry point of the group, else ``package.module:attr``/dotted."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()
    module_name, _, attr = name.replace(":", ".").rpartition(".")
    if not module_name:
        raise PluginError(f"plugin {name!r} not found (no entry point, not a dotted path)")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise PluginError(f"plugin {name!r} not found: {exc}") from None


def construct(factory: Any, options: dict[str, Any]) -> Any:
    model = getattr(factory, "Settings", None)
    if isinstance(model, type) and issubclass(model, BaseModel):
        try:
            return factory(model.model_validate(options))
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(p) for p in first["loc"]) or "<root>"
            raise PluginError(f"invalid setting '{key}': {first['msg']}") from None
    return factory(**options) if callable(factory) else factory


class PluginManager:
    def __init__(self, names: list[str], settings: dict[str, dict[str, Any]]) -> None:
        self.names = list(names)
        self.settings = settings
        self.plugins: list[LoadedPlugin] = []
        self._queue: deque[tuple[str, tuple[Any, ...]]] = deque(maxlen=QUEUE_MAX)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._active: dict[str, list[Any]] = {hook: [] for hook in HOOKS}
        self._face_prefix = ""
        self.enabled = False
        self.dropped = 0
        self._failures: dict[tuple[str, int], Throttle] = {}

    async def start(self, context: Context) -> None:
        self._face_prefix = context.settings.channel_prefix + ":"
        for name in self.names:
            plugin = LoadedPlugin(name=name, obj=None)
            self.plugins.append(plugin)
            try:
                plugin.obj = construct(resolve(name), dict(self.settings.get(name, {})))
                start = getattr(plugin.obj, "start", None)
                if start is not None:
                    result = start(context)
                    if inspect.isawaitable(result):
                        await result
                plugin.running = True
                log.info("plugin %s started", name)
            except Exception as exc:  # a broken plugin is reported, never fatal
                plugin.error = f"{type(exc).__name__}: {exc}"
                log.error("plugin %s failed to start: %s", name, plugin.error)
        for hook in HOOKS:
            self._active[hook] = [
                getattr(p.obj, hook)
                for p in self.plugins
                if p.running and callable(getattr(p.obj, hook, None))
            ]
        self.enabled = any(self._active.values())
        if self.enabled:
            self._task = asyncio.create_task(self._pump(), name="plugin-hooks")

    async def stop(self) -> None:
        if self._task is not None:
            # Let queued notifications reach the plugins before they stop (bounded wait): a
            # plugin that cannot keep up must not hold the shutdown, and what it loses is said.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._drained(), STOP_DRAIN)
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=1.0)  # a hook may refuse to be cancelled
            left = len(self._queue)
            if left:
                self.dropped += left
                self._queue.clear()
                log.warning(
                    "plugins: %d notification(s) not delivered at shutdown: the plugins did"
                    " not take them within %.0f s",
                    left,
                    STOP_DRAIN,
                    extra={"notifications": left},
                )
        deadline = time.monotonic() + STOP_BUDGET
        for plugin in self.plugins:
            stop = getattr(plugin.obj, "stop", None)
            if plugin.running and stop is not None:
                try:
                    result = stop()
                    if inspect.isawaitable(result):
                        budget = max(0.1, deadline - time.monotonic())  # past it: a step each
                        task = asyncio.ensure_future(result)
                        await asyncio.wait({task}, timeout=budget)
                        if not task.done():  # cancelled, not awaited: it may ignore that
                            task.cancel()
                            raise TimeoutError(
                                f"stop() did not return within the {STOP_BUDGET:.0f} s"
                                " all plugins share"
                            )
                        task.result()
                except Exception as exc:
                    reason = str(exc) or type(exc).__name__
                    log.warning("plugin %s failed to stop cleanly: %s", plugin.name, reason)
            plugin.running = False

    async def _drained(self) -> None:
        while self._queue:
            await asyncio.sleep(0.01)

    def status(self) -> list[dict[str, Any]]:
        return [{"name": p.name, "running": int(p.running)} for p in self.plugins]

    # --- hooks: cheap to call, never block -------------------------------------------------

    def _notify(self, hook: str, args: tuple[Any, ...]) -> None:
        wanted = self._active.get(hook)
        if hook == "event_received":
            wanted = wanted or self._active["event_delivered"]
        if not wanted:
            return
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append((hook, args))
        self._wake.set()

    def event_received(
        self, channel: str, kind: str, data: bytes, delivered: int, transport_time: float
    ) -> None:
        if self.enabled:
            self._notify("event_received", (channel, kind, data, delivered, transport_time))

    def request_finished(
        self, route: str, status: int, duration: float, error_code: int | None = None
    ) -> None:
        if self.enabled:
            self._notify("request_finished", (route, status, duration, error_code))

    def connection_opened(self, info: dict[str, Any]) -> None:
        if self.enabled:
            self._notify("connection_opened", (info,))

    def connection_closed(self, info: dict[str, Any]) -> None:
        if self.enabled:
            self._notify("connection_closed", (info,))

    async def _call(self, hook: str, *args: Any) -> None:
        for fn in self._active[hook]:
            try:
                result = fn(*args)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                self._hook_failed(hook, fn)

    def _hook_failed(self, hook: str, fn: Any) -> None:
        """A broken hook fails on every notification: one traceback, then a count of the
        failures since it at most once a minute, so the log stays readable."""
        key = (hook, id(fn))
        throttle = self._failures.get(key)
        if throttle is None:
            throttle = self._failures[key] = Throttle(HOOK_FAILURE_LOG_INTERVAL)
        quiet = throttle.due()
        if quiet is None:
            return
        more = f" ({quiet} more failure(s) since its last traceback)" if quiet else ""
        log.exception("plugin hook %s failed%s", hook, more)

    async def _pump(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                hook, args = self._queue.popleft()
                if hook == "event_received":
                    channel, kind, data, delivered, transport_time = args
                    account = (
                        channel[len(self._face_prefix) :]
                        if channel.startswith(self._face_prefix)
                        else None
                    )
                    event = BusEvent(channel, kind, account, data, delivered, transport_time)
                    await self._call("event_received", event)
                    if delivered:
                        await self._call("event_delivered", event)
                else:
                    await self._call(hook, *args)
