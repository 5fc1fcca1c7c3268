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

Only what a supervisor creates is removed: a folder holding regular files (and links) and
nothing else, at most :data:`ENTRIES_MAX` of them, the lock file last, so an interrupted removal
is finished by a later sweep. A folder with a subfolder (a mount point, a planted tree) is
logged and left whole. Sweeps run on a thread of their own, so that a slow file system never
delays the supervisor's answer to a stop signal or a worker's death.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import tempfile
import threading
import time

log = logging.getLogger("luna_sender.workers")
PREFIX = "luna-sender-metrics-"
LOCK = ".supervisor.lock"
STALE_AFTER = 60.0  # seconds since the folder or its lock file last changed
SWEEP_EVERY = 120.0  # a running supervisor sweeps again: a restart within a minute left it
LISTED = 5  # folders named in the log line; the rest are counted
ENTRIES_MAX = 10_000  # a run's folder holds a few files per worker process that ever ran


def claim() -> tuple[str, int]:
    """A fresh folder for this run, and the descriptor whose lock marks it as in use (keep it
    open until the folder is removed). Raises OSError when no folder can be made."""
    wanted = os.environ.get("TMPDIR")
    parent = tempfile.gettempdir()
    if wanted and os.path.realpath(wanted) != os.path.realpath(parent):
        log.warning(
            "TMPDIR=%s is not a usable folder: the metrics folder goes to %s", wanted, parent
        )
    path = tempfile.mkdtemp(prefix=PREFIX)
    try:
        fd = os.open(os.path.join(path, LOCK), os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    except OSError:
        os.rmdir(path)  # a folder without its lock file would never be swept
        raise
    fcntl.flock(fd, fcntl.LOCK_EX)  # held until this process exits or release() runs
    sweep_soon(parent, path)
    return path, fd


def release(path: str, fd: int) -> None:
    """Remove the folder at a stop. Already gone (a tmp cleaner, another supervisor's sweep
    given the same TMPDIR) is fine: a stop that went well exited 1 on FileNotFoundError."""
    try:
        _remove_files(path)
    except FileNotFoundError:
        log.warning("the metrics folder %s was already removed", path)
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


def sweep_soon(parent: str, keep: str) -> threading.Thread:
    thread = threading.Thread(
        target=sweep, args=(parent, keep), name="metrics-folder-sweep", daemon=True
    )
    thread.start()
    return thread


def sweep(parent: str, keep: str | None = None) -> list[str]:
    """Remove the folders in ``parent`` left by supervisors that died without removing them.

    Never raises: what cannot be checked or removed is left (and logged)."""
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
        except Exception as exc:
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
    uid = os.getuid()
    lock = os.path.join(entry.path, LOCK)
    try:
        st = entry.stat(follow_symlinks=False)
        # Checked before opening: opening a planted FIFO blocked, and a device node may act.
        ls = os.stat(lock, follow_symlinks=False)
    except OSError:  # gone meanwhile, or no lock file: not known to be dead
        return False
    if not stat.S_ISDIR(st.st_mode) or not stat.S_ISREG(ls.st_mode):
        return False
    if st.st_uid != uid or ls.st_uid != uid:  # another user's, or a lock file planted by one
        return False
    # Changed within the last minute (its owner may not have locked it yet); a time in the
    # future counts as old, or a clock set back would keep the folder for good.
    if 0 <= now - max(st.st_mtime, ls.st_mtime) < STALE_AFTER:
        return False
    try:
        fd = _open_regular(lock, (ls.st_dev, ls.st_ino))
    except OSError:
        return False
    if fd is None:  # replaced since the check
        return False
    try:
        held = os.fstat(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # its supervisor is alive
            return False
        # Another sweeper may have removed it while this one waited for the lock.
        if os.stat(lock, follow_symlinks=False).st_ino != held.st_ino:
            return False
        return _remove_files(entry.path, strict=True)
    except FileNotFoundError:
        return False
    finally:
        os.close(fd)


def _open_regular(path: str, expected: tuple[int, int]) -> int | None:
    """``path`` opened for reading only if it is still the regular file ``expected`` (device,
    inode): a handle on the name that opens nothing (O_PATH) is checked first, then reopened
    through /proc. A lock file swapped for a FIFO between a check and an open was opened."""
    handle = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(handle)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != expected:
            return None
        return os.open(f"/proc/self/fd/{handle}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    finally:
        os.close(handle)


def _remove_files(path: str, strict: bool = False) -> bool:
    """Unlink the files of ``path`` (the lock file last), then the folder. With ``strict``, a
    folder holding anything but files and links, or too many entries, is left whole (logged)."""
    dirfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        with os.scandir(dirfd) as it:
            names: list[str] = []
            for entry in it:
                if len(names) >= ENTRIES_MAX or entry.is_dir(follow_symlinks=False):
                    if strict:
                        log.warning(
                            "left the stale metrics folder %s: it holds %s",
                            path,
                            "too many entries" if len(names) >= ENTRIES_MAX else "a folder",
                        )
                        return False
                    continue
                names.append(entry.name)
        names.sort(key=lambda name: name == LOCK)  # the lock file last
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dirfd)
    finally:
        os.close(dirfd)
    try:
        os.rmdir(path)
    except OSError:
        if strict:
            raise
        return False
    return True
