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
import tempfile
import time

log = logging.getLogger("luna_sender.workers")
PREFIX = "luna-sender-metrics-"
LOCK = ".supervisor.lock"
STALE_AFTER = 60.0  # seconds since the folder last changed


def claim() -> tuple[str, int]:
    """A fresh folder for this run, and the descriptor whose lock marks it as in use (keep it
    open until the folder is removed)."""
    sweep(tempfile.gettempdir())
    path = tempfile.mkdtemp(prefix=PREFIX)
    fd = os.open(os.path.join(path, LOCK), os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # held until this process exits or release() runs
    return path, fd


def release(path: str, fd: int) -> None:
    shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.close(fd)


def sweep(parent: str) -> list[str]:
    """Remove the folders in ``parent`` left by supervisors that died without removing them."""
    removed: list[str] = []
    now = time.time()
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(PREFIX):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not entry.is_dir(follow_symlinks=False) or st.st_uid != os.getuid():
                continue
            if now - st.st_mtime < STALE_AFTER:
                continue
            fd = os.open(os.path.join(entry.path, LOCK), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:  # gone meanwhile, or no lock file: not known to be dead
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # its supervisor is alive
            os.close(fd)
            continue
        try:
            shutil.rmtree(entry.path, ignore_errors=True)
        finally:
            os.close(fd)
        removed.append(entry.path)
    if removed:
        log.warning(
            "removed %d metrics folder(s) left by supervisors that were killed: %s",
            len(removed),
            ", ".join(removed),
        )
    return removed
