"""schemathesis against the service's own /docs/spec: zero 5xx, zero schema violations."""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from .helpers import Service

pytestmark = pytest.mark.slow
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_headers_conformance,response_schema_conformance,unsupported_method"
)


def test_schemathesis_finds_nothing(tmp_path: Path) -> None:
    binary = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert binary, "schemathesis is a test dependency (pyproject [test])"
    svc = Service()
    try:
        request = urllib.request.Request(
            svc.url + "/docs/spec", headers={"Accept": "application/x-yaml"}
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            spec = tmp_path / "spec.yaml"
            spec.write_bytes(resp.read())
        result = subprocess.run(
            [
                binary,
                "run",
                str(spec),
                "--url",
                svc.url,
                "--checks",
                CHECKS,
                "--max-examples",
                "40",
                "--seed",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        assert " passed" in result.stdout
    finally:
        assert svc.terminate() == 0
