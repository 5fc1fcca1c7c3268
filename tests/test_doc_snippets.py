"""Every ``sh`` block of README.md and docs/quickstart.md runs verbatim against a live service.

Rules (also stated in the documents):

- the set-up commands ``make run`` / ``make test`` are not run (the test starts the service
  itself, on the documented port 5080, memory bus); a block fenced as ```` ```sh long-running ````
  starts a server and is skipped;
- a block holding a listener (``luna-sender listen`` or ``websocat``) runs in the background:
  all of them are started first and must be connected before the other blocks run; each must
  then print what it waited for and exit 0 — so a publish example that does not match the
  subscribe example beside it fails here;
- a ``python`` block is a listener that runs until interrupted: it runs in the background with
  the checkout's interpreter beside the others, and must print the line the sentence before it
  promises ("... prints `<line>`.") once the publish blocks have run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass

import pytest

from .helpers import REPO, Service

DOCS = ("README.md", "docs/quickstart.md")
FENCE_RE = re.compile(r"^```sh([^\n]*)\n(.*?)^```", re.S | re.M)
PYTHON_RE = re.compile(r"(?:prints `([^`\n]+)`\.\n\n)?^```python\n(.*?)^```", re.S | re.M)
SETUP = {"make run", "make test"}
LISTENER_RE = re.compile(r"luna-sender listen|websocat ")
PORT = 5080
TIMEOUT = 60


@dataclass
class Block:
    doc: str
    info: str
    text: str

    @property
    def commands(self) -> list[str]:
        return [ln.strip() for ln in self.text.splitlines() if ln.strip()]

    @property
    def runnable(self) -> bool:
        return "long-running" not in self.info and not set(self.commands) <= SETUP

    @property
    def listener(self) -> bool:
        return bool(LISTENER_RE.search(self.text))


def blocks(doc: str) -> list[Block]:
    text = (REPO / doc).read_text()
    return [Block(doc, m.group(1).strip(), m.group(2)) for m in FENCE_RE.finditer(text)]


def python_blocks(doc: str) -> list[tuple[str | None, str]]:
    """(the line the text says it prints, the code) of every ``python`` block."""
    text = (REPO / doc).read_text()
    return [(m.group(1), m.group(2)) for m in PYTHON_RE.finditer(text)]


def test_python_blocks_say_what_they_print() -> None:
    found = [b for doc in DOCS for b in python_blocks(doc)]
    assert found, "the quickstart's 'From code' example is gone"
    assert all(expected for expected, _code in found), found


def _first_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _w, _x = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


def test_readme_keeps_exactly_two_setup_commands() -> None:
    setup = [c for b in blocks("README.md") for c in b.commands if c.startswith("make ")]
    assert setup == ["make run", "make test"]
    assert all(b.runnable or set(b.commands) <= SETUP for b in blocks("README.md"))


def test_every_listener_block_waits_for_one_event() -> None:
    for doc in DOCS:
        for block in blocks(doc):
            if block.runnable and block.listener:
                assert len(LISTENER_RE.findall(block.text)) == 1, block.text
                assert "--count 1" in block.text or " -1 " in block.text, block.text


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        # As the server does: TIME_WAIT left by an earlier run does not make the port busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _connections(url: str) -> int:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return int(sum(float(m) for m in re.findall(r"^ws_connections\{[^}]*\} (\S+)$", text, re.M)))


def _run(block: Block, background: bool) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", block.text],
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL if background else None,
    )


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS)
def test_shell_snippets_run_verbatim(doc: str) -> None:
    if not (REPO / ".venv" / "bin" / "luna-sender").exists():
        pytest.skip("the documents use the checkout's .venv (make install)")
    if not _port_free(PORT):
        pytest.skip(f"port {PORT} (the documented one) is busy")
    runnable = [b for b in blocks(doc) if b.runnable]
    listeners = [b for b in runnable if b.listener]
    others = [b for b in runnable if not b.listener]
    assert listeners and others, f"{doc}: no subscribe/publish example found"
    programs = python_blocks(doc)
    svc = Service(port=PORT)
    started: list[tuple[Block, subprocess.Popen[str]]] = []
    codes: list[tuple[str | None, subprocess.Popen[str]]] = []
    try:
        started = [(b, _run(b, background=True)) for b in listeners]
        codes = [
            (
                expected,
                subprocess.Popen(
                    [str(REPO / ".venv" / "bin" / "python"), "-c", code],
                    cwd=REPO,
                    text=True,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                ),
            )
            for expected, code in programs
        ]
        deadline = time.monotonic() + TIMEOUT
        while _connections(svc.url) < len(listeners) + len(codes):
            dead = [(b.text, p.communicate()) for b, p in started if p.poll() is not None]
            dead += [p.communicate() for _e, p in codes if p.poll() is not None]
            assert not dead, dead
            assert time.monotonic() < deadline, "listeners did not connect"
            time.sleep(0.2)
        for block in others:
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", block.text],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
            )
            assert result.returncode == 0, (block.text, result.stdout, result.stderr)
        for block, proc in started:
            out, err = proc.communicate(timeout=TIMEOUT)
            assert proc.returncode == 0, (block.text, out, err)
            event = json.loads(
                out.strip().splitlines()[-1] if "--pretty" not in block.text else out
            )
            assert "event" in event, out
        for expected, proc in codes:
            line = _first_line(proc, TIMEOUT)
            if proc.poll() is not None or line.strip() != expected:
                proc.kill()
                raise AssertionError((expected, line, proc.communicate()))
    finally:
        for _expected, proc in codes:
            if proc.poll() is None:
                proc.kill()
                with contextlib.suppress(Exception):
                    proc.communicate(timeout=5)
        for _block, proc in started:
            if proc.poll() is None:
                proc.kill()
                with contextlib.suppress(Exception):
                    proc.communicate(timeout=5)
        assert svc.terminate() == 0, svc.log()
