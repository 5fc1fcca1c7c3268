"""Plugins: discovery by entry point or dotted path, lifecycle, and hooks off the hot path.

A plugin is an object with optional async ``start(app_context)`` / ``stop()`` and any of the hook
methods below. Hooks are never called on the delivery path: the hub and the middleware only put a
tuple on a bounded queue, and one background task calls the plugins. A slow plugin therefore
delays only itself; when the queue is full the oldest notifications are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
from collections import deque
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

log = logging.getLogger("luna_sender.plugins")

ENTRY_POINT_GROUP = "luna_sender.plugins"
HOOKS = ("event_received", "event_delivered", "request_finished", "connection_opened",
         "connection_closed")
QUEUE_MAX = 10000


class PluginError(Exception):
    pass


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


class PluginManager:
    def __init__(self, names: list[str], settings: dict[str, dict[str, Any]]) -> None:
        self.names = list(names)
        self.settings = settings
        self.plugins: list[LoadedPlugin] = []
        self._queue: deque[tuple[str, tuple[Any, ...]]] = deque(maxlen=QUEUE_MAX)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._active: dict[str, list[Any]] = {hook: [] for hook in HOOKS}
        self.enabled = False
        self.dropped = 0

    async def start(self, context: Any) -> None:
        for name in self.names:
            plugin = LoadedPlugin(name=name, obj=None)
            self.plugins.append(plugin)
            try:
                factory = resolve(name)
                options = self.settings.get(name, {})
                plugin.obj = factory(**options) if callable(factory) else factory
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
                getattr(p.obj, hook) for p in self.plugins
                if p.running and callable(getattr(p.obj, hook, None))
            ]
        self.enabled = any(self._active.values())
        if self.enabled:
            self._task = asyncio.create_task(self._pump(), name="plugin-hooks")

    async def stop(self) -> None:
        if self._task is not None:
            self._wake.set()
            await asyncio.sleep(0)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for plugin in self.plugins:
            stop = getattr(plugin.obj, "stop", None)
            if plugin.running and stop is not None:
                try:
                    result = stop()
                    if inspect.isawaitable(result):
                        await asyncio.wait_for(result, 5)
                except Exception as exc:
                    log.warning("plugin %s failed to stop cleanly: %s", plugin.name, exc)
            plugin.running = False

    def status(self) -> list[dict[str, Any]]:
        return [{"name": p.name, "running": int(p.running)} for p in self.plugins]

    # --- hooks: cheap to call, never block -------------------------------------------------

    def _notify(self, hook: str, args: tuple[Any, ...]) -> None:
        if not self._active.get(hook):
            return
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append((hook, args))
        self._wake.set()

    def event_received(self, channel: str, kind: str, data: bytes | None, delivered: int) -> None:
        if self.enabled:
            self._notify("event_received", (channel, kind, data))
            if delivered:
                self._notify("event_delivered", (channel, kind, delivered))

    def request_finished(self, route: str, status: int, duration: float) -> None:
        if self.enabled:
            self._notify("request_finished", (route, status, duration))

    def connection_opened(self, info: dict[str, Any]) -> None:
        if self.enabled:
            self._notify("connection_opened", (info,))

    def connection_closed(self, info: dict[str, Any]) -> None:
        if self.enabled:
            self._notify("connection_closed", (info,))

    async def _pump(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                hook, args = self._queue.popleft()
                for fn in self._active[hook]:
                    try:
                        result = fn(*args)
                        if inspect.isawaitable(result):
                            await result
                    except Exception:
                        log.exception("plugin hook %s failed", hook)
