"""The LUNA error catalogue and the JSON error body every route answers with.

Clients of the original branch on ``error_code``, so codes, ``desc`` texts and HTTP statuses are
part of the wire contract (spec Part 1 "Errors" and Part 2 §6.2).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from aiohttp import web

LINK_TEMPLATE = (
    "https://docs.visionlabs.ai/info/luna/troubleshooting/errors-description/code-{code}"
)


@dataclass(frozen=True, slots=True)
class ErrorKind:
    """One entry of the catalogue: the detail is a template with ``{}`` placeholders."""

    code: int
    desc: str
    detail: str
    status: int


INTERNAL = ErrorKind(1, "Internal server error", "Unknown error", 500)
NO_JSON = ErrorKind(12002, "Bad/incomplete input data", "Request does not contain json", 400)
BAD_QUERY = ErrorKind(12012, "Bad/incomplete input data", "Bad query parameters '{}'", 400)
BAD_HEADER = ErrorKind(12012, "Bad/incomplete input data", "Bad query parameters '{}'", 400)
NOT_FOUND = ErrorKind(12013, "Resource not found", "Page not found", 404)
METHOD_NOT_ALLOWED = ErrorKind(12021, "Method not allowed", "Method not allowed", 405)
BAD_JSON = ErrorKind(
    12022,
    "Bad/incomplete input data",
    "Failed to validate input json. Path: '{}',  message: '{}'",
    400,
)
UNSUPPORTED_MEDIA = ErrorKind(12024, "Bad/incomplete input data", "Unsupported media type", 415)
BODY_TOO_LARGE = ErrorKind(12031, "Bad/incomplete input data", "{}", 413)
# A request aiohttp or the handshake could not take as HTTP (parser errors, a '#' in the target,
# a websocket route without an upgrade); the status is the parser's own when it gave one.
INVALID_REQUEST = ErrorKind(12046, "Bad/incomplete input data", "Invalid http request: {}", 400)
NO_ACCOUNT = ErrorKind(
    29001,
    "Forbidden",
    "Cannot subscribe for events without 'Luna-Account-Id' header set",
    403,
)
TOO_MANY_CONNECTIONS = ErrorKind(
    29005, "Service unavailable", "Too many websocket connections (limit {})", 503
)
TOO_MANY_LIKE_FILTERS = ErrorKind(
    29012,
    "Service unavailable",
    "Too many costly like/nlike filters in the service (limit {})",
    503,
)
FILTER_MEMORY_FULL = ErrorKind(
    29013,
    "Service unavailable",
    "Too much memory held by the service's websocket filters (limit {} bytes)",
    503,
)
BUS_UNAVAILABLE = ErrorKind(29006, "Service unavailable", "Event bus is unavailable: {}", 503)
# Access control (docs/security.md). One detail per status whatever the reason, so a refusal tells
# a prober nothing about which check failed; the reason is logged with the request id.
UNAUTHORIZED = ErrorKind(29010, "Unauthorized", "Missing or invalid authorization token", 401)
ACCESS_DENIED = ErrorKind(
    12033, "Forbidden", "Access to this resource on the server is denied", 403
)
ORIGIN_FORBIDDEN = ErrorKind(29011, "Forbidden", "Cross-origin websocket handshake refused", 403)


class LunaError(Exception):
    """Raised anywhere in a handler; the error middleware renders it as the LUNA JSON body."""

    def __init__(
        self,
        kind: ErrorKind,
        *args: object,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.kind = kind
        self.detail = kind.detail.format(*args) if args else kind.detail
        self.status = status or kind.status
        self.headers = headers or {}
        super().__init__(f"{kind.code}: {self.detail}")

    def as_dict(self) -> dict[str, object]:
        return error_body(self.kind.code, self.kind.desc, self.detail)


def error_body(code: int, desc: str, detail: str) -> dict[str, object]:
    return {
        "error_code": code,
        "desc": desc,
        "detail": detail,
        "link": LINK_TEMPLATE.format(code=code),
    }


def error_response(err: LunaError) -> web.Response:
    return web.Response(
        status=err.status,
        body=orjson.dumps(err.as_dict()),
        content_type="application/json",
        headers=err.headers or None,
    )
