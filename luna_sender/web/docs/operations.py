"""The pieces every OpenAPI operation is built from: headers, parameters, error responses and
the three operation shapes (websocket upgrade, publish, plain GET).

Shared by the business routes (openapi.py) and the operator/viewer routes (paths.py), so one
response or parameter is worded once and every operation lists the same common errors.
"""

from __future__ import annotations

from typing import Any

from luna_sender.filters.base import UUID_RE
from luna_sender.web.middlewares import REQUEST_ID_RE

# The documents' only fact from the HTTP layer, taken here once (asyncapi.py uses it too).
REQUEST_ID_PATTERN = REQUEST_ID_RE.pattern
ERROR = {"$ref": "#/components/schemas/Error"}
REQUEST_ID_HEADER = {
    "Luna-Request-Id": {
        "description": "Request id, echoed or generated ({unix_ts},{uuid4}).",
        "schema": {"type": "string", "pattern": REQUEST_ID_PATTERN},
    },
}
# auth.mode none, the original's model: a trusted front door (luna-api) sets Luna-Account-Id;
# the service itself checks no credentials. Stated per operation so linters see it is deliberate.
# auth.mode jwt: the document served then lists the token (header or ``token`` parameter) as
# the security of every business route and /config (docs/security.md); probes stay open.
NO_AUTH: list[Any] = []
JWT_AUTH: list[Any] = [{"bearerAuth": []}, {"tokenQuery": []}]
SECURITY_SCHEMES = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "Claims: account_id, exp, scope ('publish', 'admin'). "
        "See /docs/dev/security.html.",
    },
    "tokenQuery": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "The same token as a query parameter, for browsers (they "
        "cannot set headers on a websocket). Exactly one of the two.",
    },
}
TAGS = [
    {"name": "events", "description": "Websocket event streams (see /docs/asyncapi)."},
    {"name": "publish", "description": "Publish events to every subscriber on the bus."},
    {"name": "service", "description": "Operator routes."},
    {"name": "viewer", "description": "The built-in live event viewer."},
]


def error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": REQUEST_ID_HEADER,
        "content": {"application/json": {"schema": ERROR}},
    }


def ok_json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": description,
        "headers": REQUEST_ID_HEADER,
        "content": {"application/json": {"schema": schema}},
    }


def schema_ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


REQUEST_ID_PARAM = {
    "name": "Luna-Request-Id",
    "in": "header",
    "required": False,
    "description": "External request id; a malformed one is rejected with 12012.",
    "schema": {"type": "string", "pattern": REQUEST_ID_PATTERN},
}
# A uuid as a *pattern*, not ``format: uuid``: openapi-python-client types a uuid-format header
# as ``UUID`` and hands the object to httpx unconverted (TypeError); a patterned string is sent
# as given by every generator (docs/compatibility.md "API documents").
UUID_SCHEMA = {
    "type": "string",
    "pattern": UUID_RE.pattern,
    "minLength": 36,
    "maxLength": 36,
    "example": "8b8b5937-2e9c-4e8b-a7a7-5caf86621b5a",
}


def account_param(jwt: bool) -> dict[str, Any]:
    if jwt:
        return {
            "name": "Luna-Account-Id",
            "in": "header",
            "required": False,
            "description": "Optional: the account is the token's. If sent (once), it must "
            "name the token's account: another is 403/12033, a malformed or "
            "repeated header 400/12012.",
            "schema": UUID_SCHEMA,
        }
    return {
        "name": "Luna-Account-Id",
        "in": "header",
        "required": True,
        "description": "Account whose events to receive/publish: a uuid (any case; the "
        "service lower-cases it), sent once. Missing: 403/29001; malformed "
        "or repeated: 400/12012.",
        "schema": UUID_SCHEMA,
    }


# auth.mode none accepts and ignores it (it is never a filter); jwt mode: securitySchemes.
TOKEN_PARAM = {
    "name": "token",
    "in": "query",
    "required": False,
    "description": "Ignored in auth.mode none (never a filter). See /docs/dev/security.html.",
    "schema": {"type": "string"},
}
UNAUTHORIZED = error("Missing or invalid token (29010); WWW-Authenticate: Bearer.")
COMMON_ERRORS = {
    "400": error(
        "Bad input (12012 bad parameter or header, 12046 invalid request, e.g. a raw "
        "'#' in the request target)."
    ),
    "404": error("Unknown route (12013)."),
    "405": error("Method not allowed (12021)."),
    "417": error("An Expect header other than 100-continue (12046); the connection is closed."),
    "500": error("Internal error (1)."),
}


def query_params(specs: dict[str, Any], extra: str) -> list[dict[str, Any]]:
    params = [
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": f"{spec.description} (reads `{', '.join(spec.fields)}`).",
            "schema": {"type": "string"},
        }
        for name, spec in specs.items()
    ]
    params.append(
        {
            "name": f"{extra}.<path>__<op>:<type>",
            "in": "query",
            "required": False,
            "description": "User-defined filters, see /docs/dev/filters.html "
            "(operators eq neq gt gte lt lte in nin like nlike; "
            "types string integer numeric boolean).",
            "schema": {"type": "string"},
            "x-luna-pattern-parameter": True,
        }
    )
    return params


# Missed-event recovery (#18, docs/recovery.md): /ws, /ws/general and the viewer's routes.
RECOVERY_QUERY: list[dict[str, Any]] = [
    {
        "name": "recover",
        "in": "query",
        "required": False,
        "description": "true: each envelope carries one more key, offset (opaque); "
        "other values than true/false/1/0: 400/12012.",
        "schema": {"type": "string", "enum": ["true", "false", "1", "0"]},
    },
    {
        "name": "since",
        "in": "query",
        "required": False,
        "description": "An offset received before (implies recover=true): first frame "
        '{"recovery": {"recovered", "replayed"}}, then the missed events matching the '
        "filters, then live ones. Never an error: unrecognised means recovered false.",
        "schema": {"type": "string"},
    },
]


def auth_params(jwt: bool) -> list[dict[str, Any]]:
    """The token parameters an operation lists: in jwt mode the security schemes say it."""
    return [] if jwt else [TOKEN_PARAM]


def _business_operation(
    op_id: str, tag: str, summary: str, jwt: bool, account: bool, params: list[dict[str, Any]]
) -> dict[str, Any]:
    """The head every business operation shares: its security follows auth.mode, and the
    account header is listed where the route needs one."""
    return {
        "operationId": op_id,
        "tags": [tag],
        "summary": summary,
        "security": JWT_AUTH if jwt else NO_AUTH,
        "parameters": [
            REQUEST_ID_PARAM,
            *auth_params(jwt),
            *([account_param(jwt)] if account else []),
            *params,
        ],
    }


def ws_item(
    op_id: str, summary: str, params: list[dict[str, Any]], envelope: str, account: bool, jwt: bool
) -> dict[str, Any]:
    responses = {
        "101": {
            "description": f"Switching protocols; the server then pushes one text frame per "
            f"event: {envelope} (frames and close codes: /docs/asyncapi).",
            "headers": REQUEST_ID_HEADER,
            "content": {"application/json": {"schema": schema_ref(envelope)}},
        },
        **COMMON_ERRORS,
        "426": {
            **error("A Sec-WebSocket-Version other than 13, 8 or 7 (12046)."),
            "headers": {
                **REQUEST_ID_HEADER,
                "Sec-WebSocket-Version": {
                    "description": "The version spoken: 13.",
                    "schema": {"type": "string"},
                },
                "Upgrade": {
                    "description": "The protocol required: websocket.",
                    "schema": {"type": "string"},
                },
            },
        },
        "503": error(
            "Too many connections or shutting down (29005); too many costly "
            "like/nlike filters in the service (29012); filter memory full (29013)."
        ),
    }
    if jwt:
        responses["401"] = UNAUTHORIZED
        responses["403"] = error(
            "Foreign browser Origin (29011), token not allowed: another account"
            + ("" if account else ", or recovery without admin")
            + " (12033)."
        )
    else:
        responses["403"] = error(
            ("No Luna-Account-Id header (29001), " if account else "")
            + "foreign browser Origin (29011)."
        )
    return {
        "get": {
            **_business_operation(
                op_id,
                "events",
                summary,
                jwt,
                account,
                [p for p in params if not p.get("x-luna-pattern-parameter")],
            ),
            "x-luna-user-defined-filters": [
                p["name"] for p in params if p.get("x-luna-pattern-parameter")
            ],
            "responses": responses,
        }
    }


def publish_item(op_id: str, summary: str, schema: str, account: bool, jwt: bool) -> dict[str, Any]:
    responses = {
        "204": {"description": "Published to the bus.", "headers": REQUEST_ID_HEADER},
        **COMMON_ERRORS,
        "400": error(
            "No JSON (12002) or JSON failed validation (12022), bad header (12012), a body its "
            "Content-Encoding does not decode (12046)."
        ),
        "408": error("Body not received within limits.http_body_timeout (12046)."),
        "413": error("Body larger than limits.publish_body_max_bytes (12031)."),
        "415": error("Content-Type is not application/json (12024)."),
        "503": error("Bus unavailable (29006)."),
    }
    if jwt:
        responses["401"] = UNAUTHORIZED
        responses["403"] = error("Token without scope publish or for another account (12033).")
    elif account:
        responses["403"] = error("No Luna-Account-Id header (29001).")
    return {
        "post": {
            **_business_operation(op_id, "publish", summary, jwt, account, []),
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": schema_ref(schema)}},
            },
            "responses": responses,
        }
    }


def get_item(
    op_id: str,
    summary: str,
    responses: dict[str, Any],
    params: list[dict[str, Any]] | None = None,
    tag: str = "service",
    security: list[Any] | None = None,
) -> dict[str, Any]:
    return {
        "get": {
            "operationId": op_id,
            "tags": [tag],
            "summary": summary,
            "security": NO_AUTH if security is None else security,
            "parameters": [REQUEST_ID_PARAM, *(params or [])],
            "responses": {
                **responses,
                "404": COMMON_ERRORS["404"],
                "400": COMMON_ERRORS["400"],
                "405": COMMON_ERRORS["405"],
                "417": COMMON_ERRORS["417"],
                "500": COMMON_ERRORS["500"],
            },
        }
    }
