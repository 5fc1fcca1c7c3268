"""Who may open a stream or publish: browser Origin checks (always on) and opt-in JWT auth.

Every check runs once, when a handshake or request starts, and what it decides is compiled into
the connection (its account; on /ws/general an extra AND-ed ``account_id`` filter), so the
fan-out never sees a token. Refusals carry one fixed LUNA body per status, whatever the reason:
the reason goes to the log (never the token), so a prober learns nothing about which check
failed. The policy and its reasons are in docs/security.md.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
from aiohttp import hdrs, web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from yarl import URL

from luna_sender import errors
from luna_sender.errors import LunaError
from luna_sender.filters.base import parse_uuid

if TYPE_CHECKING:
    from luna_sender.config import AuthSettings, Settings

log = logging.getLogger("luna_sender.access")

ACCOUNT_HEADER = "Luna-Account-Id"
TOKEN_PARAM = "token"
SCOPE_PUBLISH = "publish"
SCOPE_ADMIN = "admin"
ACCOUNT_CLAIM_MAX = 256
TIME_CLAIMS = ("exp", "nbf", "iat")
SECRET_MIN_BYTES = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash output
DEFAULT_PORTS = {"http": 80, "https": 443}
OriginKey = tuple[str, str, int]
# scheme "://" host [":" port], nothing else: a reg-name or IPv4 (no delimiters, no user info)
# or a bracketed IPv6 literal, and a port only as a browser writes it (digits, no leading 0).
ORIGIN_RE = re.compile(r"(?i)https?://(?:[^\s/?#@%\[\]:\\]+|\[[0-9a-f:.]+\])(?::[1-9][0-9]{0,4})?")


@dataclass(frozen=True, slots=True)
class Principal:
    """The verified token: whose events, and which extra rights (``scope``)."""

    account_id: str
    scopes: frozenset[str]

    @property
    def admin(self) -> bool:
        return SCOPE_ADMIN in self.scopes


def origin_key(value: str) -> OriginKey | None:
    """``scheme://host[:port]`` -> a comparable (scheme, host, port); None if not an origin.

    Case-insensitive, default ports made explicit, so ``HTTP://Host:80`` equals
    ``http://host``. ``null`` (sandboxed frames, file: pages) and anything else, down to a
    trailing ``/`` or an empty ``?`` (which a URL parser would normalise away; no browser sends
    them, RFC 6454 §6.2), is not an origin, hence never allowed.
    """
    if not ORIGIN_RE.fullmatch(value.strip()):
        return None
    try:
        url = URL(value.strip())
    except (ValueError, TypeError):
        return None
    scheme = (url.scheme or "").lower()
    if scheme not in DEFAULT_PORTS or not url.host:
        return None
    try:
        port = url.port
    except ValueError:
        return None
    return scheme, url.host.lower(), port or DEFAULT_PORTS[scheme]


def load_verification_key(auth: AuthSettings) -> tuple[Any, list[str]]:
    """The key and the one algorithm it may verify; ValueError naming the setting otherwise.

    Pinning the algorithm to the key type closes the algorithm-confusion attacks (a token
    signed HS256 with the public key as secret, ``alg: none``).
    """
    secret, pem = auth.jwt_secret or None, auth.jwt_public_key or None
    if secret and pem:
        raise ValueError("set only one of auth.jwt_secret and auth.jwt_public_key")
    if secret:
        if len(secret.encode()) < SECRET_MIN_BYTES:
            raise ValueError(f"auth.jwt_secret must be at least {SECRET_MIN_BYTES} bytes")
        return secret.encode(), ["HS256"]
    if not pem:
        raise ValueError("auth.mode jwt needs auth.jwt_secret or auth.jwt_public_key")
    text = pem
    if not pem.lstrip().startswith("-----BEGIN"):
        try:
            text = Path(pem).read_text(encoding="utf-8")
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or "not a file"
            raise ValueError(f"auth.jwt_public_key: cannot read {pem[:120]!r}: {reason}") from None
    try:
        key = load_pem_public_key(text.encode())
    except (ValueError, TypeError):
        raise ValueError("auth.jwt_public_key is not a PEM public key") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ValueError("auth.jwt_public_key: RSA keys need at least 2048 bits")
        return key, ["RS256"]
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key, ["ES256"]
    raise ValueError("auth.jwt_public_key must be an RSA or EC P-256 public key")


class AccessPolicy:
    """The settings in the form the checks use, built once per application."""

    def __init__(self, settings: Settings) -> None:
        self.allowed = frozenset(k for k in map(origin_key, settings.ws.allowed_origins) if k)
        auth = settings.auth
        self.jwt = auth.mode == "jwt"
        self.key: Any = None
        self.algorithms: list[str] = []
        if self.jwt:
            self.key, self.algorithms = load_verification_key(auth)
        self.audience = auth.jwt_audience or None
        self.leeway = auth.jwt_leeway


POLICY: web.AppKey[AccessPolicy] = web.AppKey("luna_sender_access_policy", AccessPolicy)


def _first(value: str | None) -> str | None:
    """The first hop of a proxy header (``https, http`` -> ``https``)."""
    if not value:
        return None
    return value.split(",", 1)[0].strip() or None


def own_origins(request: web.Request) -> set[OriginKey]:
    """The origin(s) the client used to reach this service: scheme + ``Host``.

    ``X-Forwarded-Proto``/``X-Forwarded-Host`` (set by a TLS-terminating proxy) also count: a
    browser page cannot set them on a websocket handshake, and a client that is not a browser
    can omit ``Origin`` anyway, so trusting them lets nothing in that was kept out.
    """
    host = request.headers.get(hdrs.HOST)
    fproto = _first(request.headers.get("X-Forwarded-Proto"))
    fhost = _first(request.headers.get("X-Forwarded-Host"))
    candidates = [(request.scheme, host)]
    if fproto or fhost:
        candidates.append((fproto or request.scheme, fhost or host))
    keys = {origin_key(f"{scheme}://{h}") for scheme, h in candidates if h}
    return {k for k in keys if k is not None}


def check_origin(request: web.Request) -> None:
    """403/29011 unless every ``Origin`` is this service's own or in ``ws.allowed_origins``."""
    origins = request.headers.getall(hdrs.ORIGIN, [])
    if not origins:
        return  # not a browser: servers, CLI tools, the platform's client library
    allowed = request.app[POLICY].allowed
    own: set[OriginKey] | None = None
    for origin in origins:
        key = origin_key(origin)
        if key is not None and key in allowed:
            continue
        if own is None:
            own = own_origins(request)
        if key is None or key not in own:
            log.info("refused websocket handshake from origin %r", origin[:200])
            raise LunaError(errors.ORIGIN_FORBIDDEN)


def _unauthorized(reason: str, token_given: bool) -> LunaError:
    log.info("refused request: %s", reason)
    challenge = 'Bearer realm="luna-sender"'
    if token_given:
        challenge += ', error="invalid_token"'
    return LunaError(errors.UNAUTHORIZED, headers={"WWW-Authenticate": challenge})


def _token(request: web.Request) -> str | None:
    header = request.headers.getall(hdrs.AUTHORIZATION, [])
    params = request.query.getall(TOKEN_PARAM, [])
    if len(header) + len(params) > 1:
        raise _unauthorized("more than one token", True)
    if header:
        scheme, _, token = header[0].strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("Authorization is not a Bearer token", True)
        return token.strip()
    return params[0] if params else None


def authenticate(request: web.Request) -> Principal | None:
    """The verified token's principal; None in ``auth.mode: none``; 401/29010 otherwise."""
    policy = request.app[POLICY]
    if not policy.jwt:
        return None
    token = _token(request)
    if token is None:
        raise _unauthorized("no token", False)
    try:
        claims = jwt.decode(
            token,
            policy.key,
            algorithms=policy.algorithms,
            audience=policy.audience,
            leeway=policy.leeway,
            options={"require": ["exp", "account_id"]},
        )
    except jwt.PyJWTError as exc:
        # The class names the reason (expired, bad signature, ...) without echoing the token.
        raise _unauthorized(f"token rejected ({type(exc).__name__})", True) from None
    # RFC 7519 §4.1.4-6: NumericDate is a JSON number; PyJWT also takes "1999999999".
    for name in TIME_CLAIMS:
        value = claims.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _unauthorized(f"token {name} is not a number", True)
    account, scope = claims.get("account_id"), claims.get("scope", "")
    if not isinstance(account, str) or not 0 < len(account) <= ACCOUNT_CLAIM_MAX:
        raise _unauthorized("token account_id is not a non-empty string", True)
    if not isinstance(scope, str):
        raise _unauthorized("token scope is not a string", True)
    # RFC 8693 §4.2 / RFC 6749 §3.3: space-delimited; "admin\tpublish" is one unknown scope.
    return Principal(account, frozenset(s for s in scope.split(" ") if s))


def denied(reason: str) -> LunaError:
    log.info("refused request: %s", reason)
    return LunaError(errors.ACCESS_DENIED)


def admit_ws(request: web.Request) -> Principal | None:
    """The checks of every websocket handshake: Origin first, then the token."""
    check_origin(request)
    return authenticate(request)


def admit(request: web.Request, scope: str | None = None) -> Principal | None:
    """An HTTP route's checks: the token, and ``scope`` when the route needs one (403)."""
    principal = authenticate(request)
    if principal is not None and scope is not None and scope not in principal.scopes:
        raise denied(f"token lacks scope {scope!r}")
    return principal


def single_header(request: web.Request, name: str) -> str | None:
    """The one value of header ``name``, None if absent; sent twice -> 400/12012 naming it.

    Two values are ambiguous: a front door that appends its header instead of replacing the
    client's would otherwise let whichever comes first (the client's) choose the account.
    """
    values = request.headers.getall(name, [])
    if len(values) > 1:
        raise LunaError(errors.BAD_HEADER, name)
    return values[0] if values else None


def single_param(request: web.Request, name: str) -> str | None:
    """The one value of query parameter ``name``; repeated -> 400/12012 naming it."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise LunaError(errors.BAD_QUERY, name)
    return values[0] if values else None


def account_header(request: web.Request) -> str:
    """The required ``Luna-Account-Id`` of auth mode none: missing -> 403/29001, malformed or
    repeated -> 400 (a repeated one is a front door appending instead of replacing)."""
    raw = single_header(request, ACCOUNT_HEADER)
    if raw is None:
        raise LunaError(errors.NO_ACCOUNT)
    try:
        return parse_uuid(raw.strip())
    except ValueError:
        raise LunaError(errors.BAD_HEADER, ACCOUNT_HEADER) from None


def token_account(request: web.Request, principal: Principal, param: str | None = None) -> str:
    """The face/body account of a jwt-mode request: the token's, never another.

    A ``Luna-Account-Id`` header (or the viewer's ``account_id`` parameter) may still be sent,
    but must name the same account: 403 otherwise, ``admin`` included (admin widens general
    events only).
    """
    try:
        account = parse_uuid(principal.account_id)
    except ValueError:
        raise denied("token account_id is not a uuid (face/body accounts are)") from None
    given = single_param(request, param) if param else single_header(request, ACCOUNT_HEADER)
    if given is not None:
        try:
            claimed = parse_uuid(given.strip())
        except ValueError:
            kind = errors.BAD_QUERY if param else errors.BAD_HEADER
            raise LunaError(kind, param or ACCOUNT_HEADER) from None
        if claimed != account:
            raise denied("account differs from the token's")
    return account


def filter_query(request: web.Request, drop: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """The query the filter compilers see: without ``token`` (never a filter, never logged)."""
    return [(k, v) for k, v in request.query.items() if k != TOKEN_PARAM and k not in drop]


def general_query(
    request: web.Request, principal: Principal | None, drop: frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    """/ws/general's query; a non-admin token adds its own ``account_id`` filter.

    The pair goes to the compiler like a client's own, so the restriction is one more AND-ed
    predicate compiled at connect time. A client-given ``account_id`` that is not exactly the
    token's is refused (403) instead of silently narrowed to nothing.
    """
    query = filter_query(request, drop)
    if principal is None or principal.admin:
        return query
    given = [v for k, v in query if k == "account_id"]
    if any(v != principal.account_id for v in given):
        raise denied("account_id differs from the token's")
    if not given:
        query.append(("account_id", principal.account_id))
    return query


def general_recovery(principal: Principal | None, recover: bool) -> None:
    """Recovery on /ws/general needs an admin token. The general channel's offsets number every
    account's general events in one sequence, so a non-admin socket's offsets told it how many
    events other accounts published and when, and a ``since`` probe confirmed their ids (an
    outside pass). Offsets of their own per account are not built (docs/security.md)."""
    if recover and principal is not None and not principal.admin:
        raise denied("recovery on the general stream needs an admin token")


def own_general_account(principal: Principal | None, account_id: str | None) -> None:
    """/publish/general: a non-admin token publishes into its own account only."""
    if principal is not None and not principal.admin and account_id != principal.account_id:
        raise denied("general event account_id differs from the token's")
