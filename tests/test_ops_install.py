"""A normal (non-editable) install serves its own manual: pip install into a fresh venv."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from .helpers import REPO, free_port, wait_port

SKIP = shutil.ignore_patterns(
    ".venv",
    ".git",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "test-artifacts",
    ".schemathesis",
    ".peers",
)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.slow
def test_installed_wheel_serves_the_manual(tmp_path: Path) -> None:
    source = tmp_path / "src"  # a copy: an in-tree build would leave build/ in the checkout
    shutil.copytree(REPO, source, ignore=SKIP)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(source)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    shutil.rmtree(source)  # nothing may be read from the source tree after the install
    site = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import luna_sender, pathlib; print(pathlib.Path(luna_sender.__file__).parent)",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    package = Path(site.stdout.strip())
    assert str(package).startswith(str(venv)) and (package / "manual" / "index.md").is_file()
    assert not (package.parent / "docs").exists()  # the old lookup place stays empty

    custom = tmp_path / "custom-docs"
    custom.mkdir()
    (custom / "index.md").write_text("# Site manual\n\nOur own runbook.\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUNA_SENDER_")}
    env.pop("PYTHONPATH", None)
    for extra, expected in (
        ({}, (REPO / "docs" / "index.md").read_text().splitlines()[0][2:]),
        ({"LUNA_SENDER_DOCS_DIR": str(custom)}, "Our own runbook."),
    ):
        port = free_port()
        proc = subprocess.Popen(
            [str(venv / "bin" / "luna-sender"), "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path,
            env={**env, **extra},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_port(port, 30)
            status, body = get(f"http://127.0.0.1:{port}/docs/dev/index.html")
            assert status == 200 and expected in body
            status, body = get(f"http://127.0.0.1:{port}/docs/dev/deployment.html")
            assert status == (404 if extra else 200)
        finally:
            proc.terminate()
            assert proc.wait(15) == 0
