"""One serving process from binding its port to its exit code.

aiohttp's ``run_app`` starts the application (bus, plugins, the "ready" line) before it binds,
prints a traceback when the port is taken, and exits 1 without a word on a second SIGTERM. Here
the port is bound first, so a busy port is one ERROR line and exit status 1 before anything
starts, and "ready" is logged once the sockets listen, after start-up (so a client that can
connect is served at once; docs/deployment.md, "Signals and exit codes"). SIGTERM, SIGINT and
SIGHUP all stop gracefully (1001 to every socket, exit 0); a repeated signal during that stop is
logged and ignored — the stop is bounded (:func:`stop_deadline`) — so a process group that gets
the signal twice (Ctrl-C, systemd's control-group kill with ``--workers``) still closes cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from typing import Any

from luna_sender.plugins.host import STOP_BUDGET, STOP_DRAIN
from luna_sender.runtime import signals
from luna_sender.runtime.clock import STEP, RunningDeadline
from luna_sender.runtime.fdlimit import Listener

log = logging.getLogger("luna_sender.app")
EXIT_OK = 0
EXIT_LISTEN = 1
EXIT_STUCK = 1  # the stop outran its deadline (as when the worker supervisor has to kill)
# The kernel caps it at net.core.somaxconn (4096 on current Linux). aiohttp's default of 128 made
# 2,000 sockets reconnecting at once (a load balancer reload, W5 in docs/performance.md) wait on
# SYN retransmission: seconds, not milliseconds, before the first replayed event.
BACKLOG = 4096


def bind(host: str, port: int, reuse_port: bool) -> list[socket.socket]:
    """Bound sockets for every address ``host`` resolves to, as asyncio would bind them; they
    listen once start-up is over (``SockSite.start``)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[Any] = set()
    try:
        for family, kind, proto, _name, address in infos:
            if address in seen:
                continue
            seen.add(address)
            sock = Listener(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.setblocking(False)
    except OSError:
        for bound in sockets:
            bound.close()
        raise
    return sockets


def stop_deadline(settings: Any) -> float:
    """What a stop may take: the sockets' closing handshakes (``ws.shutdown_timeout`` + 1 s), the
    plugins' queued notifications and their ``stop()`` (plugins.host), and a second to spare.
    The worker supervisor kills a worker ``RestartPolicy.stop_grace`` after it."""
    return float(settings.ws.shutdown_timeout) + 1 + STOP_DRAIN + STOP_BUDGET + 1


class Watchdog:
    """Exits the process once a stop outruns :func:`stop_deadline`.

    Everything in the stop is bounded by a timeout, but a timeout cancels, and a plugin that
    catches ``CancelledError`` and goes on (or a sync hook that blocks the loop) would keep the
    process alive until an orchestrator kills it, with nothing in the log. A thread does not
    depend on the event loop being free, so the exit and its ERROR line still come.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._disarmed = threading.Event()

    def arm(self, seconds: float) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._watch, args=(seconds,), name="stop-watchdog", daemon=True
            )
            self._thread.start()

    def disarm(self) -> None:
        self._disarmed.set()

    def _watch(self, seconds: float) -> None:
        """Counts running time (runtime/clock.py): a process stood still during its stop (a
        paused VM) exited 1 on waking, its sockets cut without their 1001."""
        deadline = RunningDeadline(seconds)
        while (left := deadline.left()) > 0:
            if self._disarmed.wait(min(STEP, left)):
                return
        self._overdue(seconds)

    @staticmethod
    def _overdue(seconds: float) -> None:
        log.error(
            "shutdown did not finish within %.0f s: exiting now",
            seconds,
            extra={"deadline": seconds},
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(EXIT_STUCK)


def run(settings: Any, reuse_port: bool = False) -> int:
    """Serve until a stop signal; the process's exit status."""
    early = signals.early()
    if early is not None:
        log.info(
            "%s received during start-up: exiting",
            signals.name(early),
            extra={"signal": signals.name(early)},
        )
        return EXIT_OK
    try:
        sockets = bind(settings.host, settings.port, reuse_port)
    except OSError as exc:
        log.error(
            "cannot listen on %s:%d: %s",
            settings.host,
            settings.port,
            exc.strerror or exc,
            extra={"errno": exc.errno},
        )
        return EXIT_LISTEN
    watchdog = Watchdog()
    try:
        return asyncio.run(_serve(settings, sockets, watchdog))
    finally:
        watchdog.disarm()


async def _serve(settings: Any, sockets: list[socket.socket], watchdog: Watchdog) -> int:
    from aiohttp import web

    from luna_sender.app import build_app, log_ready

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    stopping: list[int] = []

    deadline = stop_deadline(settings)

    def on_signal(signum: int) -> None:
        if stopping and signum == early and loop.time() < echo_until:
            # The one signal recorded before the handlers, seen again by the loop (the wake-up
            # descriptor had it too): not a second one (7 of 8 stops at 0.3-0.4 s said so).
            return
        if stopping:
            log.warning(
                "%s received again: already stopping (within %.0f s), ignored",
                signals.name(signum),
                deadline,
                extra={"signal": signals.name(signum)},
            )
            return
        stopping.append(signum)
        watchdog.arm(deadline)
        log.info(
            "%s received: stopping", signals.name(signum), extra={"signal": signals.name(signum)}
        )
        stop.set()

    for signum in signals.STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    early = signals.early()  # one that came while the sockets were being bound
    echo_until = loop.time() + 0.5
    if early is not None:
        on_signal(early)
    app = build_app(settings)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=settings.ws.shutdown_timeout + 1,
    )
    try:
        await runner.setup()  # on_startup: plugins, bus, hub
        for sock in sockets:
            await web.SockSite(runner, sock, backlog=BACKLOG).start()
        if not stopping:
            log_ready(app, [sock.getsockname() for sock in sockets])
        await stop.wait()
    finally:
        await runner.cleanup()
        for sock in sockets:
            sock.close()
    return EXIT_OK
