"""Access-control settings at start-up, and tokens kept out of logs and /config (real processes)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from .helpers import REPO, Service, account, run_cli
from .jwtkit import SECRET, ec_pair, raw_handshake, rsa_pair, token


def _short_rsa_pem() -> str:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from .jwtkit import public_pem

    return public_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"LUNA_SENDER_AUTH__MODE": "jwt"}, "auth.jwt_secret or auth.jwt_public_key"),
        (
            {
                "LUNA_SENDER_AUTH__MODE": "jwt",
                "LUNA_SENDER_AUTH__JWT_SECRET": SECRET,
                "LUNA_SENDER_AUTH__JWT_PUBLIC_KEY": "PEM",
            },
            "only one of auth.jwt_secret",
        ),
        (
            {"LUNA_SENDER_AUTH__MODE": "jwt", "LUNA_SENDER_AUTH__JWT_SECRET": "short"},
            "auth.jwt_secret must be at least 32 bytes",
        ),
        (
            {
                "LUNA_SENDER_AUTH__MODE": "jwt",
                "LUNA_SENDER_AUTH__JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----\nnope\n",
            },
            "auth.jwt_public_key is not a PEM public key",
        ),
        (
            {"LUNA_SENDER_AUTH__MODE": "jwt", "LUNA_SENDER_AUTH__JWT_PUBLIC_KEY": "/no/such.pem"},
            "auth.jwt_public_key: cannot read '/no/such.pem'",
        ),
        (
            {"LUNA_SENDER_AUTH__MODE": "jwt", "LUNA_SENDER_AUTH__JWT_PUBLIC_KEY": "not\na\nkey"},
            "auth.jwt_public_key: cannot read",
        ),
        ({"LUNA_SENDER_AUTH__MODE": "basic"}, "auth.mode"),
        ({"LUNA_SENDER_WS__ALLOWED_ORIGINS": "[evil.example]"}, "ws.allowed_origins"),
        ({"LUNA_SENDER_WS__ALLOWED_ORIGINS": "[null]"}, "ws.allowed_origins"),
        ({"LUNA_SENDER_WS__ALLOWED_ORIGINS": "[https://a.example/path]"}, "ws.allowed_origins"),
        # Exactly scheme://host[:port], as a browser sends it: no trailing slash (docs/security.md).
        ({"LUNA_SENDER_WS__ALLOWED_ORIGINS": "[https://a.example/]"}, "is not an origin"),
    ],
)
def test_bad_access_settings_stop_the_start_naming_the_key(env: dict[str, str], named: str) -> None:
    result = run_cli("check-config", env=env)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], lines
    assert SECRET not in result.stderr


def test_short_rsa_key_is_refused() -> None:
    result = run_cli(
        "check-config",
        env={"LUNA_SENDER_AUTH__MODE": "jwt", "LUNA_SENDER_AUTH__JWT_PUBLIC_KEY": _short_rsa_pem()},
    )
    assert result.returncode == 2 and "at least 2048 bits" in result.stderr


def test_check_config_masks_the_secret_and_accepts_both_key_kinds(tmp_path: Path) -> None:
    result = run_cli(
        "check-config",
        env={"LUNA_SENDER_AUTH__MODE": "jwt", "LUNA_SENDER_AUTH__JWT_SECRET": SECRET},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["auth"]["jwt_secret"] == "********"
    assert SECRET not in result.stdout
    for pem in (rsa_pair()[1], ec_pair()[1]):
        path = tmp_path / "key.pem"
        path.write_text(pem)
        config = tmp_path / "config.yaml"
        config.write_text(f"auth:\n  mode: jwt\n  jwt_public_key: {path}\n")
        result = run_cli("check-config", "--config", str(config))
        assert result.returncode == 0, result.stderr


def test_tokens_never_reach_the_log() -> None:
    """The filter summary, the rejections and the request ids are logged; tokens never are."""
    acc = account()
    good, expired = token(acc, "admin publish"), token(acc, exp_in=-3600)
    svc = Service(
        "--log-level",
        "DEBUG",
        env={"LUNA_SENDER_AUTH__MODE": "jwt", "LUNA_SENDER_AUTH__JWT_SECRET": SECRET},
    )

    async def drive() -> None:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(
                f"{svc.ws_url}/ws/general", params={"token": good, "event_type": "t"}
            ) as ws:
                assert not ws.closed
            async with session.ws_connect(
                f"{svc.ws_url}/ws", headers={"Authorization": "Bearer " + good}
            ) as ws:
                assert not ws.closed
            for path in (
                f"/ws/general?token={good}&bogus=1",
                f"/ws?token={expired}",
                f"/ws/general?token={good}&account_id=x&account_id=y",
            ):
                status, _h, _b = await raw_handshake(svc.port, path)
                assert status in (400, 401), path
            async with session.get(f"{svc.url}/config", params={"token": good}) as resp:
                assert resp.status == 200
                assert SECRET not in await resp.text()
            async with session.get(f"{svc.url}/nope", params={"token": good}) as resp:
                assert resp.status == 404

    try:
        asyncio.run(drive())
    finally:
        svc.terminate()
    log = svc.log()
    assert "opened: kind=general" in log and "event_type=t" in log  # the lines we mean to check
    assert "rejected websocket filter bogus" in log and "token rejected" in log
    for secret in (good, expired, SECRET, good.split(".")[2], expired.split(".")[2]):
        assert secret not in log


def test_cli_listen_and_publish_with_a_token() -> None:
    """``luna-sender listen/publish --token`` against a jwt-mode service, as a user runs them."""
    acc = account()
    svc = Service(env={"LUNA_SENDER_AUTH__MODE": "jwt", "LUNA_SENDER_AUTH__JWT_SECRET": SECRET})
    cli = [sys.executable, "-m", "luna_sender.cli"]
    try:
        listener = subprocess.Popen(
            [*cli, "listen", "--url", svc.ws_url, "--token", token(acc), "--count", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        assert listener.stderr is not None
        assert "listening on" in listener.stderr.readline()
        event = json.dumps({"event_id": "1", "source": "cam-9"})
        refused = subprocess.run(
            [*cli, "publish", "--url", svc.url, "--token", token(acc)],
            input=event,
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=30,
        )
        assert refused.returncode != 0 and "12033" in refused.stderr  # no publish scope
        published = subprocess.run(
            [*cli, "publish", "--url", svc.url, "--token", token(acc, "publish")],
            input=event,
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=30,
        )
        assert published.returncode == 0, published.stderr
        out, _ = listener.communicate(timeout=20)
        assert json.loads(out)["event"]["source"] == "cam-9"
    finally:
        svc.close()
