"""Tokens for the access-control tests: good ones from PyJWT, bad ones built by hand.

The attacker's tokens (``alg: none``, HS256 keyed with the server's public key) are assembled
byte by byte, because a well-behaved library refuses to make them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import time
from functools import cache
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

SECRET = "luna-sender-test-secret-0123456789abcdef"
OTHER_SECRET = "an-attackers-guess-at-the-secret-0123456789"


def jwt_settings(**auth: Any) -> dict[str, Any]:
    return {"auth": {"mode": "jwt", "jwt_secret": SECRET, **auth}}


def claims(
    account: str | None, scope: str = "", exp_in: float = 300, **extra: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {"exp": int(time.time() + exp_in), **extra}
    if account is not None:
        data["account_id"] = account
    if scope:
        data["scope"] = scope
    return data


def token(
    account: str | None,
    scope: str = "",
    exp_in: float = 300,
    key: Any = SECRET,
    algorithm: str = "HS256",
    **extra: Any,
) -> str:
    return jwt.encode(claims(account, scope, exp_in, **extra), key, algorithm=algorithm)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segments(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(payload).encode())


def alg_none_token(account: str, scope: str = "admin publish") -> str:
    return _segments({"alg": "none", "typ": "JWT"}, claims(account, scope)) + "."


def hs256_keyed_with(secret: bytes, account: str, scope: str = "admin publish") -> str:
    """The algorithm-confusion attack: HS256 with the server's *public* key as the secret."""
    signing_input = _segments({"alg": "HS256", "typ": "JWT"}, claims(account, scope))
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(mac)


@cache
def rsa_pair() -> tuple[Any, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key, public_pem(key)


@cache
def ec_pair() -> tuple[Any, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    return key, public_pem(key)


def public_pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


async def raw_handshake(
    port: int, path_qs: str, headers: dict[str, str] | None = None, host: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    """A websocket handshake on a raw socket: status, headers and the refusal's body.

    aiohttp's client hides the body of a refused handshake; the tests need to see it.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        writer.write(
            (
                f"GET {path_qs} HTTP/1.1\r\nHost: {host or f'127.0.0.1:{port}'}\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"{extra}\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        got: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                got[name.strip().lower()] = value.strip()
        body = b""
        if status != 101:
            body = await asyncio.wait_for(
                reader.readexactly(int(got.get("content-length", "0"))), 10
            )
        return status, got, body
    finally:
        writer.close()
