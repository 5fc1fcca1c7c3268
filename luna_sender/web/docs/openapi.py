"""The service's own OpenAPI 3 document, built from the same tables the service runs on.

Hand-kept documents drift; this one is generated from the filter specs and the configured API
versions, so every query parameter and every versioned path it lists is one the service
actually serves (a test compares it with the router). Integrators generate clients from it, so
every operation has a stable ``operationId`` (versioned copies get a ``V<n>`` suffix), every body
and envelope is typed (``api_schemas``), and the YAML has no anchors: several generators and
linters mishandle YAML aliases.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import yaml

from luna_sender import __version__
from luna_sender.filters.base import UUID_RE
from luna_sender.filters.events import FACE_SPECS
from luna_sender.filters.general import GENERAL_SPECS
from luna_sender.web.docs.schemas import schemas_copy
from luna_sender.web.middlewares import REQUEST_ID_RE

ERROR = {"$ref": "#/components/schemas/Error"}
REQUEST_ID_HEADER = {
    "Luna-Request-Id": {
        "description": "Request id, echoed or generated ({unix_ts},{uuid4}).",
        "schema": {"type": "string", "pattern": REQUEST_ID_RE.pattern},
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


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": REQUEST_ID_HEADER,
        "content": {"application/json": {"schema": ERROR}},
    }


def _ok_json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": description,
        "headers": REQUEST_ID_HEADER,
        "content": {"application/json": {"schema": schema}},
    }


def _schema(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


REQUEST_ID_PARAM = {
    "name": "Luna-Request-Id",
    "in": "header",
    "required": False,
    "description": "External request id; a malformed one is rejected with 12012.",
    "schema": {"type": "string", "pattern": REQUEST_ID_RE.pattern},
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


def _account_param(jwt: bool) -> dict[str, Any]:
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
UNAUTHORIZED = _error("Missing or invalid token (29010); WWW-Authenticate: Bearer.")
COMMON_ERRORS = {
    "400": _error(
        "Bad input (12012 bad parameter or header, 12046 invalid request, e.g. a raw "
        "'#' in the request target)."
    ),
    "404": _error("Unknown route (12013)."),
    "405": _error("Method not allowed (12021)."),
    "500": _error("Internal error (1)."),
}


def _query_params(specs: dict[str, Any], extra: str) -> list[dict[str, Any]]:
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


# Missed-event recovery (#18, docs/recovery.md): /ws and /ws/general only.
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


def _auth(jwt: bool) -> list[dict[str, Any]]:
    """The token parameters an operation lists: in jwt mode the security schemes say it."""
    return [] if jwt else [TOKEN_PARAM]


def _ws(
    op_id: str, summary: str, params: list[dict[str, Any]], envelope: str, account: bool, jwt: bool
) -> dict[str, Any]:
    responses = {
        "101": {
            "description": f"Switching protocols; the server then pushes one text frame per "
            f"event: {envelope} (frames and close codes: /docs/asyncapi).",
            "headers": REQUEST_ID_HEADER,
            "content": {"application/json": {"schema": _schema(envelope)}},
        },
        **COMMON_ERRORS,
        "503": _error(
            "Too many connections or shutting down (29005); too many costly "
            "like/nlike filters in the service (29012)."
        ),
    }
    if jwt:
        responses["401"] = UNAUTHORIZED
        responses["403"] = _error(
            "Foreign browser Origin (29011), token not allowed: another account (12033)."
        )
    else:
        responses["403"] = _error(
            ("No Luna-Account-Id header (29001), " if account else "")
            + "foreign browser Origin (29011)."
        )
    return {
        "get": {
            "operationId": op_id,
            "tags": ["events"],
            "summary": summary,
            "security": JWT_AUTH if jwt else NO_AUTH,
            "parameters": [
                REQUEST_ID_PARAM,
                *_auth(jwt),
                *([_account_param(jwt)] if account else []),
                *[p for p in params if not p.get("x-luna-pattern-parameter")],
            ],
            "x-luna-user-defined-filters": [
                p["name"] for p in params if p.get("x-luna-pattern-parameter")
            ],
            "responses": responses,
        }
    }


def _publish(op_id: str, summary: str, schema: str, account: bool, jwt: bool) -> dict[str, Any]:
    responses = {
        "204": {"description": "Published to the bus.", "headers": REQUEST_ID_HEADER},
        **COMMON_ERRORS,
        "400": _error("No JSON (12002) or JSON failed validation (12022), bad header (12012)."),
        "413": _error("Body larger than limits.publish_body_max_bytes (12031)."),
        "415": _error("Content-Type is not application/json (12024)."),
        "503": _error("Bus unavailable (29006)."),
    }
    if jwt:
        responses["401"] = UNAUTHORIZED
        responses["403"] = _error("Token without scope publish or for another account (12033).")
    elif account:
        responses["403"] = _error("No Luna-Account-Id header (29001).")
    return {
        "post": {
            "operationId": op_id,
            "tags": ["publish"],
            "summary": summary,
            "security": JWT_AUTH if jwt else NO_AUTH,
            "parameters": [
                REQUEST_ID_PARAM,
                *_auth(jwt),
                *([_account_param(jwt)] if account else []),
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _schema(schema)}},
            },
            "responses": responses,
        }
    }


def _get(
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
                "500": COMMON_ERRORS["500"],
            },
        }
    }


def _versioned(item: dict[str, Any], suffix: str) -> dict[str, Any]:
    """A copy of a path item whose operationIds carry the version suffix (ids are unique)."""
    item = copy.deepcopy(item)
    for operation in item.values():
        operation["operationId"] += suffix
    return item


def _business(api_versions: tuple[int, ...], jwt: bool) -> dict[str, Any]:
    routes = {
        "/ws": _ws(
            "subscribeFaceEvents",
            "Face/body event stream (websocket).",
            _query_params(FACE_SPECS, "meta") + RECOVERY_QUERY,
            "FaceEnvelope",
            True,
            jwt,
        ),
        "/ws/general": _ws(
            "subscribeGeneralEvents",
            "General event stream (websocket)."
            + (" A token without scope admin sees its own account's events only." if jwt else ""),
            _query_params(GENERAL_SPECS, "event") + RECOVERY_QUERY,
            "GeneralEnvelope",
            False,
            jwt,
        ),
        "/publish": _publish(
            "publishEvents",
            "Publish user events in the producers' format.",
            "PublishEvents",
            True,
            jwt,
        ),
        "/publish/general": _publish(
            "publishGeneralEvent", "Publish one general event.", "PublishGeneral", False, jwt
        ),
    }
    paths: dict[str, Any] = {}
    for prefix, suffix in [("", ""), *((f"/{v}", f"V{v}") for v in api_versions)]:
        for path, item in routes.items():
            paths[prefix + path] = _versioned(item, suffix)
    return paths


# A YAML body is a mapping once parsed (schemathesis parses it to check the schema).
YAML_DOC = {"type": "object", "additionalProperties": True}


def _service(jwt: bool) -> dict[str, Any]:
    accept = {"name": "Accept", "in": "header", "required": False, "schema": {"type": "string"}}
    text = {"text/plain": {"schema": {"type": "string"}}}
    html = {
        "200": {
            "description": "HTML page.",
            "headers": REQUEST_ID_HEADER,
            "content": {"text/html": {"schema": {"type": "string"}}},
        }
    }
    return {
        "/version": _get(
            "getVersion", "Versions.", {"200": _ok_json("Versions.", _schema("Version"))}
        ),
        "/healthcheck": _get(
            "getHealth",
            "Bus health.",
            {
                "200": _ok_json("Healthy.", _schema("Health")),
                "502": {
                    "description": "Bus unreachable.",
                    "headers": REQUEST_ID_HEADER,
                    "content": {"application/json": {"schema": _schema("HealthFailure")}},
                },
            },
        ),
        "/config": _get(
            "getConfig",
            "Settings, secrets masked.",
            {
                "200": {
                    "description": "Settings.",
                    "headers": REQUEST_ID_HEADER,
                    "content": {"application/json": {"schema": _schema("Config")}, **text},
                },
                **(
                    {"401": UNAUTHORIZED, "403": _error("The token lacks scope admin (12033).")}
                    if jwt
                    else {}
                ),
                "415": _error("Unsupported Accept (12024)."),
            },
            [accept],
            security=JWT_AUTH if jwt else None,
        ),
        "/plugins": _get(
            "getPlugins", "Plugins.", {"200": _ok_json("Plugins.", _schema("Plugins"))}
        ),
        "/metrics": _get(
            "getMetrics",
            "Prometheus metrics.",
            {
                "200": {
                    "description": "Prometheus text format.",
                    "headers": REQUEST_ID_HEADER,
                    "content": text,
                }
            },
        ),
        "/docs/spec": _get(
            "getOpenApiDocument",
            "This document.",
            {
                "200": {
                    "description": "OpenAPI YAML or HTML.",
                    "headers": REQUEST_ID_HEADER,
                    "content": {
                        "application/x-yaml": {"schema": YAML_DOC},
                        "text/html": {"schema": {"type": "string"}},
                    },
                },
                "415": _error("Unsupported Accept (12024)."),
            },
            [accept],
        ),
        "/docs/asyncapi": _get(
            "getAsyncApiDocument",
            "AsyncAPI document of the websockets.",
            {
                "200": {
                    "description": "AsyncAPI 2.6 YAML or JSON.",
                    "headers": REQUEST_ID_HEADER,
                    "content": {
                        "application/x-yaml": {"schema": YAML_DOC},
                        "application/json": {"schema": YAML_DOC},
                    },
                },
                "415": _error("Unsupported Accept (12024)."),
            },
            [accept],
        ),
        "/docs/dev": _get(
            "getDevManual",
            "Developer manual.",
            {
                "302": {
                    "description": "Redirect to /docs/dev/index.html.",
                    "headers": REQUEST_ID_HEADER,
                }
            },
        ),
        "/docs/dev/{page}": _get(
            "getDevManualPage",
            "A page of the developer manual (/docs/dev/ redirects to index.html).",
            html,
            [{"name": "page", "in": "path", "required": True, "schema": {"type": "string"}}],
        ),
    }


def _viewer(jwt: bool) -> dict[str, Any]:
    html = {
        "200": {
            "description": "HTML page.",
            "headers": REQUEST_ID_HEADER,
            "content": {"text/html": {"schema": {"type": "string"}}},
        }
    }
    viewer_ws = _ws(
        "subscribeViewerEvents",
        "Face/body stream for the viewer: the account "
        "comes from the query (browsers cannot set headers).",
        _query_params(FACE_SPECS, "meta"),
        "FaceEnvelope",
        False,
        jwt,
    )
    viewer_ws["get"]["tags"] = ["viewer"]
    viewer_ws["get"]["parameters"].append(
        {
            "name": "account_id",
            "in": "query",
            "required": not jwt,
            "description": "Optional: the token's account; if sent it must name it (403/12033)."
            if jwt
            else "The account (missing: 403/29001).",
            "schema": {"type": "string", "format": "uuid"},
        }
    )
    viewer_ws["get"]["responses"]["403"] = _error(
        "Foreign browser Origin (29011), another account than the token's (12033)."
        if jwt
        else "No account_id (29001), foreign browser Origin (29011)."
    )
    validate_errors = (
        {"401": UNAUTHORIZED, "403": _error("Another account than the token's (12033).")}
        if jwt
        else {"403": _error("No account_id for face events (29001).")}
    )
    return {
        "/": _get("getIndexPage", "Index page.", html, tag="viewer"),
        "/viewer": _get("getViewer", "Live event viewer.", html, tag="viewer"),
        "/viewer/validate": _get(
            "validateViewerFilters",
            "Validate viewer filters before connecting.",
            {
                "204": {"description": "Filters are valid.", "headers": REQUEST_ID_HEADER},
                **validate_errors,
            },
            [
                {
                    "name": "kind",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["face", "general"]},
                },
                *_auth(jwt),
            ],
            tag="viewer",
            security=JWT_AUTH if jwt else None,
        ),
        "/viewer/ws": viewer_ws,
        "/static/{name}": _get(
            "getStaticAsset",
            "Viewer assets.",
            {
                "200": {
                    "description": "Asset.",
                    "headers": REQUEST_ID_HEADER,
                    "content": {
                        "application/javascript": {"schema": {"type": "string"}},
                        "text/css": {"schema": {"type": "string"}},
                        "text/html": {"schema": {"type": "string"}},
                    },
                }
            },
            [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            tag="viewer",
        ),
    }


def build_document(
    api_versions: tuple[int, ...] = (1, 2), auth_mode: str = "none"
) -> dict[str, Any]:
    """The document of a service running with ``api_versions`` and ``auth.mode``."""
    jwt = auth_mode == "jwt"
    paths = _business(api_versions, jwt)
    paths.update(_service(jwt))
    paths.update(_viewer(jwt))
    components: dict[str, Any] = {"schemas": schemas_copy()}
    if jwt:
        components["securitySchemes"] = copy.deepcopy(SECURITY_SCHEMES)
    mode = (
        "auth.mode jwt: business routes and /config need a token (bearerAuth or "
        "tokenQuery); probes and static pages stay open."
        if jwt
        else "auth.mode none: the service checks no credentials; a front door sets "
        "Luna-Account-Id (see /docs/dev/security.html)."
    )
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "luna-sender",
            "version": __version__,
            "description": "Real-time event gateway, wire-compatible with LUNA PLATFORM's "
            "Luna Sender. Business routes are served at the root and under "
            "each API version prefix. The websocket streams are described "
            "in the AsyncAPI document at /docs/asyncapi. " + mode,
            "license": {"name": "MIT", "url": "https://opensource.org/licenses/MIT"},
        },
        "servers": [
            {
                "url": "http://{host}:{port}",
                "description": "A luna-sender instance.",
                "variables": {"host": {"default": "127.0.0.1"}, "port": {"default": "5080"}},
            }
        ],
        "security": NO_AUTH,
        "tags": TAGS,
        "paths": paths,
        "components": components,
    }


class NoAliasDumper(yaml.SafeDumper):
    """Writes a repeated object out in full instead of as an ``&id``/``*id`` alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(document: dict[str, Any]) -> str:
    return yaml.dump(document, Dumper=NoAliasDumper, sort_keys=False, allow_unicode=True)


@cache
def document_yaml(api_versions: tuple[int, ...], auth_mode: str = "none") -> str:
    return dump_yaml(build_document(api_versions, auth_mode))
