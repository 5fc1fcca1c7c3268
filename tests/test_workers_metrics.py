"""What the event counters count with ``--workers 2`` (docs/metrics.md, "Event counts").

Each worker is its own bus subscriber, so receipt counters are per worker and sum to more than
the producer's messages; publish and per-socket delivery counters do not. Real processes, a real
redis-server, raw websockets.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from luna_sender.cli import metricsdir

from .helpers import Service, account
from .rawws import RawWS
from .test_workers import get, ready_pids, sample, start, ws_owner

N = 7


@pytest.fixture
def redis_url(private_redis) -> Iterator[str]:
    yield private_redis.url


def publish(port: int, path: str, body: dict[str, object], acc: str | None = None) -> None:
    headers = {"Content-Type": "application/json"}
    if acc is not None:
        headers["Luna-Account-Id"] = acc
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(), headers, method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 204


async def sockets_on_both_workers(
    svc: Service, path: str, headers: dict[str, str], pids: set[int]
) -> list[RawWS]:
    """Open sockets until the kernel has handed at least one to every worker."""
    sockets: list[RawWS] = []
    while {ws_owner(svc, ws) for ws in sockets} != pids:
        assert len(sockets) < 64, "the kernel never spread the sockets over both workers"
        sockets.append(await RawWS.connect(svc.port, path, headers=headers))
    return sockets


async def test_event_counters_count_receipts_per_worker(redis_url: str) -> None:
    svc = start(redis_url)
    try:
        pids = set(ready_pids(svc))
        watched, unwatched = account(), account()
        general = await sockets_on_both_workers(svc, "/ws/general?event_type=mc", {}, pids)
        face = await sockets_on_both_workers(svc, "/ws", {"Luna-Account-Id": watched}, pids)
        await asyncio.sleep(0.5)  # both workers' face subscriptions confirmed by Redis
        for i in range(N):
            publish(svc.port, "/publish/general", {"event": {"i": i}, "event_type": "mc"})
            for acc in (watched, unwatched):
                publish(
                    svc.port,
                    "/publish",
                    {
                        "events": [{"event_id": f"m{i}"}],
                        "handler_id": "h",
                        "event_create_time": "t",
                        "event_end_time": "t",
                    },
                    acc,
                )
        for ws in general + face:
            for _ in range(N):
                frame = await asyncio.wait_for(ws.recv_data(), 20)
                assert frame.opcode == 0x1
        expected = {
            'events_received_total{kind="general"}': 2 * N,
            'events_received_total{kind="face"}': 2 * N,  # the unwatched account: no worker
            'event_delivery_seconds_count{kind="general"}': 2 * N,
            'event_delivery_seconds_count{kind="face"}': 2 * N,
            'events_published_total{kind="general"}': N,
            'events_published_total{kind="face"}': 2 * N,
            'events_delivered_total{kind="general"}': len(general) * N,
            'events_delivered_total{kind="face"}': len(face) * N,
        }
        deadline = time.monotonic() + 20
        while True:  # the last observation may land just after the client's read
            text = get(svc, "/metrics")[1]
            got = {series: sample(text, series) for series in expected}
            if got == expected or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert got == expected
        for ws in general + face:
            ws.close()
    finally:
        assert svc.terminate() == 0, svc.log()[-3000:]


def test_a_killed_supervisors_metrics_folder_is_swept_by_the_next(redis_url: str) -> None:
    """A supervisor killed outright cannot remove its folder of memory-mapped files; the next
    one started with the same TMPDIR does, and leaves every folder it cannot prove dead."""
    tmp = Path(tempfile.mkdtemp(prefix="luna-sweep-"))
    old = time.time() - 3600
    # A live supervisor's folder (its lock held here), and one without a lock file (another
    # program's, or a version before the lock): both older than a minute, both must stay.
    live = tmp / "luna-sender-metrics-live"
    live.mkdir()
    holder = os.open(live / ".supervisor.lock", os.O_CREAT | os.O_WRONLY, 0o600)
    fcntl.flock(holder, fcntl.LOCK_EX)
    unknown = tmp / "luna-sender-metrics-unknown"
    unknown.mkdir()
    for folder in (live, unknown):
        os.utime(folder, (old, old))
    first = start(redis_url, env={"TMPDIR": str(tmp)})
    try:
        workers = [psutil.Process(pid) for pid in ready_pids(first)]
        (killed,) = set(tmp.iterdir()) - {live, unknown}
        assert any(p.suffix == ".db" for p in killed.iterdir())  # the workers' files
        first.proc.kill()  # no chance to clean up
        psutil.wait_procs(workers, 20)  # they notice the parent is gone and stop
        assert killed.exists()
        # A minute unchanged: younger folders are left whatever their lock says.
        for path in (killed, killed / ".supervisor.lock"):
            os.utime(path, (old, old))
        second = start(redis_url, env={"TMPDIR": str(tmp)})
        try:
            (fresh,) = set(tmp.iterdir()) - {live, unknown}
            assert fresh != killed and not killed.exists()
            assert (
                f"removed 1 metrics folder(s) left by supervisors that were killed: {killed}"
                in (second.log())
            )
            # The live one was older than a minute but locked: it is still whole.
            assert (live / ".supervisor.lock").exists() and unknown.exists()
        finally:
            assert second.terminate() == 0, second.log()[-3000:]
        assert set(tmp.iterdir()) == {live, unknown}  # a clean stop removes its own at once
    finally:
        first.close()
        os.close(holder)
        shutil.rmtree(tmp)


def _stale(parent: Path, name: str) -> Path:
    """A folder as a killed supervisor leaves it: its lock file unlocked, both over a minute old."""
    folder = parent / f"luna-sender-metrics-{name}"
    folder.mkdir()
    (folder / ".supervisor.lock").touch()
    return folder


def _age(*paths: Path, seconds: float = -3600) -> None:
    when = time.time() + seconds
    for path in paths:
        os.utime(path, (when, when), follow_symlinks=False)


def test_the_sweep_survives_planted_traps(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Found by two outside passes: a stale folder nested 3,000 deep made every start fail
    (RecursionError), then was left for good; a FIFO as the lock file hung the start; a bind
    mount inside a stale folder had its files deleted. Only a folder of plain files is removed
    now, and what is left is logged."""
    deep = _stale(tmp_path, "deep")
    fd = os.open(deep, os.O_RDONLY)
    for _ in range(3000):  # relative to a descriptor: the path would pass PATH_MAX
        os.mkdir("d", dir_fd=fd)
        fd, parent = os.open("d", os.O_RDONLY, dir_fd=fd), fd
        os.close(parent)
    os.close(fd)
    try:
        mount = _stale(tmp_path, "mount")  # a subfolder stands for any mount point
        (mount / "mnt").mkdir()
        (mount / "mnt" / "precious").write_text("x")
        fifo = tmp_path / "luna-sender-metrics-fifo"
        fifo.mkdir()
        os.mkfifo(fifo / ".supervisor.lock")
        future = _stale(tmp_path, "future")  # a clock set back must not keep it for good
        plain = _stale(tmp_path, "plain")
        for k in range(3):
            (plain / f"counter_{k}.db").write_bytes(b"\0" * 64)
        os.symlink("/etc/hostname", plain / "link")  # unlinked, never followed
        for folder in (deep, mount, fifo, plain):
            _age(folder, folder / ".supervisor.lock")
        _age(future, future / ".supervisor.lock", seconds=+7200)
        with caplog.at_level(logging.WARNING, "luna_sender.workers"):
            removed = metricsdir.sweep(str(tmp_path))
        assert sorted(removed) == sorted([str(future), str(plain)])
        assert (mount / "mnt" / "precious").read_text() == "x"
        assert (mount / ".supervisor.lock").exists() and fifo.exists() and deep.exists()
        assert Path("/etc/hostname").exists()
        left = [r.getMessage() for r in caplog.records if "left the stale" in r.getMessage()]
        assert sorted(left) == sorted(
            f"left the stale metrics folder {f}: it holds a folder" for f in (deep, mount)
        )
    finally:  # coreutils' rm walks any depth; pytest's clean-up would recurse
        subprocess.run(["rm", "-rf", str(deep)], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="planting another user's lock file needs root")
def test_a_lock_file_of_another_user_is_not_taken(tmp_path: Path) -> None:
    folder = _stale(tmp_path, "planted")
    os.chown(folder / ".supervisor.lock", 65534, 65534)
    _age(folder, folder / ".supervisor.lock")
    assert metricsdir.sweep(str(tmp_path)) == []
    assert (folder / ".supervisor.lock").exists()


def test_a_folder_that_cannot_get_its_lock_file_is_not_left_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outside pass filled the file system's inodes: creating the lock file failed, and the
    folder it left had no lock file, so no sweep would ever remove it."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    real_open = os.open

    def full(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if str(path).endswith(".supervisor.lock") and flags & os.O_CREAT:
            raise OSError(28, "No space left on device")
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", full)
    with pytest.raises(OSError):
        metricsdir.claim()
    monkeypatch.setattr(os, "open", real_open)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_removed_by_one_sweeper_is_not_counted_by_another(tmp_path: Path) -> None:
    """Three supervisors starting together on 5,000 stale folders reported 5,061 removals: one
    that waited for the lock, held by the sweeper removing the folder, counted it again."""
    folder = _stale(tmp_path, "raced")
    _age(folder, folder / ".supervisor.lock")
    waiting = os.open(folder / ".supervisor.lock", os.O_RDONLY)  # the other sweeper's view
    try:
        assert metricsdir.sweep(str(tmp_path)) == [str(folder)]
        # What the second sweeper does next on its descriptor: the lock is free, the folder gone
        fcntl.flock(waiting, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert metricsdir.sweep(str(tmp_path)) == []
    finally:
        os.close(waiting)


def test_a_lock_file_swapped_for_a_fifo_is_not_opened(tmp_path: Path) -> None:
    """Third outside pass: swapping the lock file for a FIFO between the sweep's check and its
    open got the FIFO opened. The open now goes through a handle that opens nothing."""
    fifo, regular = tmp_path / "fifo", tmp_path / "regular"
    os.mkfifo(fifo)
    regular.touch()
    was = os.stat(regular)
    os.replace(fifo, regular)  # the name the check saw now names a FIFO
    started = time.monotonic()
    assert metricsdir._open_regular(str(regular), (was.st_dev, was.st_ino)) is None
    now = os.stat(regular)
    assert metricsdir._open_regular(str(regular), (now.st_dev, now.st_ino)) is None
    assert time.monotonic() - started < 1  # nothing blocked on the FIFO
    ok = tmp_path / "ok"
    ok.touch()
    st = os.stat(ok)
    fd = metricsdir._open_regular(str(ok), (st.st_dev, st.st_ino))
    assert fd is not None
    os.close(fd)


def test_releasing_a_folder_already_removed_is_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tmp cleaner, or another supervisor's sweep given the same TMPDIR, removed the folder
    first: the stop's release raised FileNotFoundError and the parent exited 1 (an outside
    pass)."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    path, lock = metricsdir.claim()
    shutil.rmtree(path)
    metricsdir.release(path, lock)
    assert not os.path.exists(path)
