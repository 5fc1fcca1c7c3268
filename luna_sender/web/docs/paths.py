"""The operator and viewer routes of the OpenAPI document: probes, settings, metrics, the
documents themselves and the built-in viewer, in both auth modes."""

from __future__ import annotations

from typing import Any

from luna_sender.filters.events import FACE_SPECS
from luna_sender.web.docs.operations import (
    JWT_AUTH,
    RECOVERY_QUERY,
    REQUEST_ID_HEADER,
    UNAUTHORIZED,
    auth_params,
    error,
    get_item,
    ok_json,
    query_params,
    schema_ref,
    ws_item,
)

YAML_DOC = {"type": "object", "additionalProperties": True}


def service_paths(jwt: bool) -> dict[str, Any]:
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
        "/version": get_item(
            "getVersion", "Versions.", {"200": ok_json("Versions.", schema_ref("Version"))}
        ),
        "/healthcheck": get_item(
            "getHealth",
            "Bus health.",
            {
                "200": ok_json("Healthy.", schema_ref("Health")),
                "502": {
                    "description": "Bus unreachable.",
                    "headers": REQUEST_ID_HEADER,
                    "content": {"application/json": {"schema": schema_ref("HealthFailure")}},
                },
            },
        ),
        "/config": get_item(
            "getConfig",
            "Settings, secrets masked.",
            {
                "200": {
                    "description": "Settings.",
                    "headers": REQUEST_ID_HEADER,
                    "content": {"application/json": {"schema": schema_ref("Config")}, **text},
                },
                **(
                    {"401": UNAUTHORIZED, "403": error("The token lacks scope admin (12033).")}
                    if jwt
                    else {}
                ),
                "415": error("Unsupported Accept (12024)."),
            },
            [accept],
            security=JWT_AUTH if jwt else None,
        ),
        "/plugins": get_item(
            "getPlugins", "Plugins.", {"200": ok_json("Plugins.", schema_ref("Plugins"))}
        ),
        "/metrics": get_item(
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
        "/docs/spec": get_item(
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
                "415": error("Unsupported Accept (12024)."),
            },
            [accept],
        ),
        "/docs/asyncapi": get_item(
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
                "415": error("Unsupported Accept (12024)."),
            },
            [accept],
        ),
        "/docs/dev": get_item(
            "getDevManual",
            "Developer manual.",
            {
                "302": {
                    "description": "Redirect to /docs/dev/index.html.",
                    "headers": REQUEST_ID_HEADER,
                }
            },
        ),
        "/docs/dev/{page}": get_item(
            "getDevManualPage",
            "A page of the developer manual (/docs/dev/ redirects to index.html).",
            html,
            [{"name": "page", "in": "path", "required": True, "schema": {"type": "string"}}],
        ),
    }


def viewer_paths(jwt: bool) -> dict[str, Any]:
    html = {
        "200": {
            "description": "HTML page.",
            "headers": REQUEST_ID_HEADER,
            "content": {"text/html": {"schema": {"type": "string"}}},
        }
    }
    viewer_ws = ws_item(
        "subscribeViewerEvents",
        "Face/body stream for the viewer: the account "
        "comes from the query (browsers cannot set headers).",
        query_params(FACE_SPECS, "meta") + RECOVERY_QUERY,
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
    viewer_ws["get"]["responses"]["403"] = error(
        "Foreign browser Origin (29011), another account than the token's (12033)."
        if jwt
        else "No account_id (29001), foreign browser Origin (29011)."
    )
    validate_errors = (
        {"401": UNAUTHORIZED, "403": error("Another account than the token's (12033).")}
        if jwt
        else {"403": error("No account_id for face events (29001).")}
    )
    return {
        "/": get_item("getIndexPage", "Index page.", html, tag="viewer"),
        "/viewer": get_item("getViewer", "Live event viewer.", html, tag="viewer"),
        "/viewer/validate": get_item(
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
                *RECOVERY_QUERY,
                *auth_params(jwt),
            ],
            tag="viewer",
            security=JWT_AUTH if jwt else None,
        ),
        "/viewer/ws": viewer_ws,
        "/static/{name}": get_item(
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
