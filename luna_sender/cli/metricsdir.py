"""The supervisor's metrics folder: claimed for the run, and swept when a killed run left one.

A supervisor removes its folder when it exits, but one killed outright (SIGKILL, the OOM killer,
an orchestrator's deadline) cannot, and the folder with its workers' memory-mapped files stayed
in ``$TMPDIR`` for good: on a tmpfs that is memory, and a crash loop adds one per restart.

So the supervisor holds an exclusive ``flock`` on a file in its folder for as long as it lives.
The kernel drops the lock when the process dies, however it dies; the next supervisor started
with the same ``$TMPDIR`` removes every such folder whose lock it can take. A lock held by
another live supervisor (even one in another PID namespace sharing the folder) is not taken, so
only dead runs' folders go. Folders younger than :data:`STALE_AFTER` are left whatever their
lock says (their owner may be between creating the folder and locking it), and so are folders
without a lock file (another program's, or an older version's, whose owner cannot be known).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import stat
import tempfile
import time

log = logging.getLogger("luna_sender.workers")
PREFIX = "luna-sender-metrics-"
LOCK = ".supervisor.lock"
STALE_AFTER = 60.0  # seconds since the folder or its lock file last changed
SWEEP_EVERY = 120.0  # a running supervisor sweeps again: a restart within a minute left it
LISTED = 5  # folders named in the log line; the rest are counted


def claim() -> tuple[str, int]:
    """A fresh folder for this run, and the descriptor whose lock marks it as in use (keep it
    open until the folder is removed)."""
    wanted = os.environ.get("TMPDIR")
    parent = tempfile.gettempdir()
    if wanted and os.path.realpath(wanted) != os.path.realpath(parent):
        log.warning(
            "TMPDIR=%s is not a usable folder: the metrics folder goes to %s", wanted, parent
        )
    sweep(parent)
    path = tempfile.mkdtemp(prefix=PREFIX)
    fd = os.open(os.path.join(path, LOCK), os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # held until this process exits or release() runs
    return path, fd


def release(path: str, fd: int) -> None:
    shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.close(fd)


def sweep(parent: str, keep: str | None = None) -> list[str]:
    """Remove the folders in ``parent`` left by supervisors that died without removing them.

    Never raises: what cannot be checked or removed is left (and logged), and the service
    starts as it would have without the sweep."""
    removed: list[str] = []
    now = time.time()
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(PREFIX) or entry.path == keep:
            continue
        try:
            if _remove_if_dead(entry, now):
                removed.append(entry.path)
        except Exception as exc:  # e.g. a tree nested deeper than rmtree recurses
            log.warning("could not remove the stale metrics folder %s: %r", entry.path, exc)
    if removed:
        log.warning(
            "removed %d metrics folder(s) left by supervisors that were killed: %s%s",
            len(removed),
            ", ".join(removed[:LISTED]),
            f" and {len(removed) - LISTED} more" if len(removed) > LISTED else "",
        )
    return removed


def _remove_if_dead(entry: os.DirEntry[str], now: float) -> bool:
    try:
        st = entry.stat(follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            return False
        lock = os.path.join(entry.path, LOCK)
        # Non-blocking: a FIFO planted as the lock file blocked the open, and with it the start.
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:  # gone meanwhile, or no lock file: not known to be dead
        return False
    try:
        held = os.fstat(fd)
        if not stat.S_ISREG(held.st_mode):
            return False
        # Changed within the last minute (its owner may not have locked it yet); a time in the
        # future counts as old, or a clock set back would keep the folder for good.
        if 0 <= now - max(st.st_mtime, held.st_mtime) < STALE_AFTER:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # its supervisor is alive
            return False
        # Another sweeper may have removed it while this one waited for the lock.
        if os.stat(lock, follow_symlinks=False).st_ino != held.st_ino:
            return False
        shutil.rmtree(entry.path)
        return True
    except FileNotFoundError:
        return False
    finally:
        os.close(fd)
