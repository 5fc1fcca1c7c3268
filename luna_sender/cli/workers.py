"""Multi-process serving: ``--workers N`` runs N processes on one port, supervised as one service.

Each worker binds the port with SO_REUSEPORT, so the kernel spreads new connections across them,
and each holds its own single bus subscription (Redis fans events out to every worker). Workers
share no serving state — which is why more than one worker requires a Redis bus: with
``memory://`` an event published to one worker would never reach another's sockets.

What they do share is the metrics directory: the parent points prometheus-client's multiprocess
mode at a per-run temporary folder before spawning, so a scrape answered by any worker describes
the whole service (docs/metrics.md). A dead worker's counter files stay there, so totals never go
backwards when it is replaced; its live gauges are removed (``mark_process_dead``). A folder
left by a parent that was killed outright is removed by the next one (``metricsdir``).

The parent is a supervisor: a worker that dies (an OOM kill, a crash) is logged with its exit
status and replaced after a backoff; only when workers keep dying faster than the policy allows
does the parent stop the rest and exit 1, so the orchestrator sees a failed service instead of
one limping on a fraction of its capacity. SIGTERM/SIGINT/SIGHUP are forwarded to every worker
(each closes its sockets with 1001) and cancel any pending restart; a repeated signal is logged
and forwarded, and the workers ignore it (luna_sender/runtime/lifecycle.py).
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any, cast

from luna_sender.cli import metricsdir
from luna_sender.runtime import signals
from luna_sender.runtime.clock import STEP, RunningDeadline

log = logging.getLogger("luna_sender.workers")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CLEAN_EXITS = (0, -signal.SIGTERM, -signal.SIGINT, -signal.SIGHUP)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# A worker still importing has no handler yet: SIGTERM and SIGHUP end it quietly, SIGINT was a
# KeyboardInterrupt traceback and exit 1 (an outside pass: 4 of 8), so SIGINT goes on as SIGTERM.
FORWARDED: dict[int, int] = {signal.SIGINT: signal.SIGTERM}
PARENT_POLL = 1.0  # seconds between a worker's checks that its supervisor is alive


@dataclass(frozen=True)
class RestartPolicy:
    """When to replace a dead worker and when to give up (documented in docs/deployment.md)."""

    delay: float = 0.5  # first restart of a slot waits this long ...
    max_delay: float = 30.0  # ... doubling per quick death, up to this
    stable_after: float = 10.0  # a worker that lived this long resets its slot's delay
    window: float = 60.0  # give up when, within this many seconds,
    deaths_per_worker: int = 3  # workers x this many unexpected deaths happened
    stop_grace: float = 2.0  # seconds a stopping worker gets past its own deadline: SIGKILL


@dataclass
class _Slot:
    index: int
    process: BaseProcess | None = None
    started_at: float = 0.0
    delay: float = 0.0
    restart_at: float | None = None


def worker_main(target: Callable[..., int | None], args: tuple[Any, ...], parent: int) -> None:
    """A worker's entry point: serve, and stop by itself if the supervisor disappears."""
    signals.record_early()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # held since the spawn
    threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch", daemon=True).start()
    code = target(*args)
    if code:  # e.g. the port could not be bound: the supervisor sees a failed worker
        raise SystemExit(code)


def _watch_parent(parent: int) -> None:
    """A SIGKILLed supervisor cannot stop its workers; left alone they would keep the port (a
    restarted service would share it with them, SO_REUSEPORT) with nobody replacing or stopping
    them. So each worker stops itself — 1001 to its sockets — once its parent is gone."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL)
    log.error("supervisor (pid %d) is gone: stopping this worker", parent)
    os.kill(os.getpid(), signal.SIGTERM)


def describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class Supervisor:
    def __init__(
        self,
        count: int,
        target: Callable[..., int | None],
        args: tuple[Any, ...],
        policy: RestartPolicy | None = None,
        shutdown_timeout: float = 3.0,
    ) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        self.target = target
        self.args = args
        self.policy = policy or RestartPolicy()
        self.shutdown_timeout = shutdown_timeout
        self.slots = [_Slot(i, delay=self.policy.delay) for i in range(count)]
        self.deaths: collections.deque[float] = collections.deque()
        self.signals: list[int] = []  # received, not yet forwarded
        self.stop_signal: int | None = None
        self.metrics_dir: str | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)

    # --- signals ----------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # Only record and wake the loop: the handler may run in the middle of a start().
        self.signals.append(signum)
        try:
            os.write(self._wake_w, b"s")
        except BlockingIOError:
            pass

    # --- workers ----------------------------------------------------------------------------

    def _start(self, slot: _Slot) -> None:
        proc = self.ctx.Process(
            target=worker_main,
            args=(self.target, self.args, os.getpid()),
            name=f"luna-sender-worker-{slot.index}",
        )
        # Ctrl-C signals the whole process group, and a worker spends its first few hundred ms
        # importing, before any handler of ours: a KeyboardInterrupt traceback. A blocked
        # signal stays blocked across fork and exec, so the worker starts with SIGINT held and
        # takes it in worker_main, once it is only recorded. Ours is delivered on unblocking.
        # The spawn's resource tracker is started first: starting it unblocks SIGINT.
        resource_tracker.ensure_running()
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        slot.process, slot.started_at, slot.restart_at = proc, time.monotonic(), None
        log.info("started worker %d (pid %d)", slot.index, proc.pid)

    def _live(self) -> list[BaseProcess]:
        return [s.process for s in self.slots if s.process is not None and s.process.is_alive()]

    def _forget(self, pid: int | None) -> None:
        """Drop a dead worker's live gauges; its counters stay so totals never go backwards."""
        if self.metrics_dir is None or pid is None:
            return
        from prometheus_client import multiprocess

        # prometheus_client leaves this one unannotated; the cast states what it takes.
        mark_process_dead = cast("Callable[[int, str], None]", multiprocess.mark_process_dead)
        mark_process_dead(pid, self.metrics_dir)

    def _on_death(self, slot: _Slot, now: float) -> None:
        proc = slot.process
        assert proc is not None
        proc.join()
        code, pid = proc.exitcode, proc.pid
        slot.process = None
        self._forget(pid)
        if self.stop_signal is not None:
            log.info("worker %d (pid %s) %s", slot.index, pid, describe_exit(code))
            return
        if now - slot.started_at >= self.policy.stable_after:
            slot.delay = self.policy.delay
        self.deaths.append(now)
        while self.deaths and now - self.deaths[0] > self.policy.window:
            self.deaths.popleft()
        slot.restart_at = now + slot.delay
        log.error(
            "worker %d (pid %s) %s; restarting it in %.1f s",
            slot.index,
            pid,
            describe_exit(code),
            slot.delay,
        )
        slot.delay = min(slot.delay * 2, self.policy.max_delay)

    def _gave_up(self) -> bool:
        limit = len(self.slots) * self.policy.deaths_per_worker
        if len(self.deaths) < limit:
            return False
        log.error(
            "workers died %d times within %.0f s; giving up", len(self.deaths), self.policy.window
        )
        return True

    def _forward(self) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            if self.stop_signal is None:
                self.stop_signal = signum
                log.info(
                    "%s received: stopping %d workers",
                    signal.Signals(signum).name,
                    len(self._live()),
                )
                for slot in self.slots:
                    slot.restart_at = None
            else:
                log.warning(
                    "%s received again: already stopping, ignored", signal.Signals(signum).name
                )
            for proc in self._live():
                if proc.pid is not None:
                    os.kill(proc.pid, FORWARDED.get(signum, signum))

    # --- main loop --------------------------------------------------------------------------

    def _wait(self, timeout: float | None) -> None:
        objects: list[Any] = [self._wake_r]
        objects += [s.process.sentinel for s in self.slots if s.process is not None]
        if self._wake_r in wait(objects, timeout):
            os.read(self._wake_r, 4096)

    def _supervise(self) -> bool:
        """Run until stopped by a signal (True) or until workers cannot be kept alive (False)."""
        self._forward()  # a signal received while the service was still starting
        if self.stop_signal is not None:
            return True
        for slot in self.slots:
            self._start(slot)
        next_sweep = time.monotonic() + metricsdir.SWEEP_EVERY
        while True:
            self._forward()
            now = time.monotonic()
            if now >= next_sweep and self.metrics_dir is not None:  # a folder left by a run
                # killed just before this one started: on a thread, never delaying a signal
                metricsdir.sweep_soon(os.path.dirname(self.metrics_dir), self.metrics_dir)
                next_sweep = now + metricsdir.SWEEP_EVERY
            for slot in self.slots:
                if slot.process is not None and not slot.process.is_alive():
                    self._on_death(slot, now)
            if self.stop_signal is not None:
                return True
            if self._gave_up():
                return False
            for slot in self.slots:
                if slot.restart_at is not None and slot.restart_at <= now:
                    self._start(slot)
            due = [s.restart_at for s in self.slots if s.restart_at is not None] + [next_sweep]
            self._wait(max(0.0, min(due) - now))

    def _stop_all(self) -> bool:
        """Wait for every worker to finish its shutdown; SIGKILL the ones that overstay.

        True when every worker stopped cleanly. A worker killed by someone else's signal while
        the stop was under way counts like any other death (logged, not a failed stop): it
        cannot be told apart from one that died just before the stop, which supervision handles.
        """
        if self.stop_signal is None:
            self.stop_signal = signal.SIGTERM
            for proc in self._live():
                if proc.pid is not None:
                    os.kill(proc.pid, signal.SIGTERM)
        # In running time: a supervisor stopped with its workers (a paused VM) killed workers
        # that had stopped cleanly meanwhile (runtime/clock.py).
        deadline = RunningDeadline(self.shutdown_timeout + self.policy.stop_grace)
        clean = True
        for slot in self.slots:
            if slot.process is None:
                continue
            while slot.process.exitcode is None:
                self._forward()
                remaining = deadline.left()
                if remaining <= 0:
                    log.error(
                        "worker %d (pid %s) did not stop in time: killing it",
                        slot.index,
                        slot.process.pid,
                    )
                    slot.process.kill()
                    slot.process.join()
                    clean = False
                    break
                self._wait(min(remaining, STEP))
            code = slot.process.exitcode
            if code not in CLEAN_EXITS:
                log.error(
                    "worker %d (pid %s) %s while stopping",
                    slot.index,
                    slot.process.pid,
                    describe_exit(code),
                )
                clean = clean and code is not None and code < 0  # > 0: its shutdown failed
        return clean

    def run(self) -> int:
        """Supervise until stopped; 0 after a clean stop, 1 when workers failed."""
        try:
            self.metrics_dir, lock = metricsdir.claim()
        except OSError as exc:  # e.g. TMPDIR's path too long, or its file system out of inodes
            log.error("cannot create the metrics folder for --workers: %s", exc)
            os.close(self._wake_r)
            os.close(self._wake_w)
            return 1
        inherited = os.environ.get(MULTIPROC_ENV)
        os.environ[MULTIPROC_ENV] = self.metrics_dir  # inherited by every spawned worker
        previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        early = signals.early()  # recorded before this handler was installed (cli.main)
        if early is not None:
            self.signals.append(early)
        try:
            stopped = self._supervise()
            clean = self._stop_all()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if inherited is None:
                os.environ.pop(MULTIPROC_ENV, None)
            else:
                os.environ[MULTIPROC_ENV] = inherited
            metricsdir.release(self.metrics_dir, lock)
            os.close(self._wake_r)
            os.close(self._wake_w)
        if stopped and clean:
            return 0
        return 1


def run_workers(
    settings: Any, serve_one: Callable[..., int | None], policy: RestartPolicy | None = None
) -> int:
    """Serve ``settings.workers`` processes on one port until SIGTERM/SIGINT/SIGHUP; the exit
    code."""
    from luna_sender.runtime.lifecycle import stop_deadline

    # A worker ends its own stop at stop_deadline (its watchdog logs why); the kill comes after
    # that, so the worker's own line, not the kill, explains a stop that hung.
    supervisor = Supervisor(
        settings.workers,
        serve_one,
        (settings, True),
        policy,
        shutdown_timeout=stop_deadline(settings),
    )
    return supervisor.run()
