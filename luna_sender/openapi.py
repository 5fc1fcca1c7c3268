"""The service's own OpenAPI 3 document, built from the same tables the service runs on.

Hand-kept documents drift; this one is generated from the filter specs and the configured API
versions, so every query parameter and every versioned path it lists is one the service
actually serves (a test compares it with the router).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import yaml

from . import __version__
from .filters.events import FACE_SPECS
from .filters.general import GENERAL_SPECS
from .web.middlewares import REQUEST_ID_RE

ERROR = {"$ref": "#/components/schemas/Error"}
REQUEST_ID_HEADER = {
    "Luna-Request-Id": {"description": "Request id, echoed or generated ({unix_ts},{uuid4}).",
                        "schema": {"type": "string"}},
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "headers": REQUEST_ID_HEADER,
            "content": {"application/json": {"schema": ERROR}}}


def _ok_json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "headers": REQUEST_ID_HEADER,
            "content": {"application/json": {"schema": schema}}}


REQUEST_ID_PARAM = {
    "name": "Luna-Request-Id", "in": "header", "required": False,
    "description": "External request id; a malformed one is rejected with 12012.",
    "schema": {"type": "string", "pattern": REQUEST_ID_RE.pattern},
}
ACCOUNT_PARAM = {
    "name": "Luna-Account-Id", "in": "header", "required": True,
    "description": "Account whose events to receive/publish (uuid). Missing: 403/29001.",
    "schema": {"type": "string", "format": "uuid"},
}
TOKEN_PARAM = {
    "name": "token", "in": "query", "required": False,
    "description": "auth.mode jwt: the token, for browsers (others send Authorization: Bearer). "
                   "Never a filter; ignored in auth.mode none. See /docs/dev/security.html.",
    "schema": {"type": "string"},
}
AUTH_PARAM = {
    "name": "Authorization", "in": "header", "required": False,
    "description": "auth.mode jwt: 'Bearer <jwt>' (claims account_id, exp, scope).",
    "schema": {"type": "string"},
}
UNAUTHORIZED = _error("auth.mode jwt: missing or invalid token (29010); WWW-Authenticate: Bearer.")
COMMON_ERRORS = {
    "400": _error("Bad input (12012 bad parameter or header, 12046 invalid request)."),
    "404": _error("Unknown route (12013)."),
    "405": _error("Method not allowed (12021)."),
    "500": _error("Internal error (1)."),
}


def _query_params(specs: dict[str, Any], extra: str) -> list[dict[str, Any]]:
    params = [
        {"name": name, "in": "query", "required": False,
         "description": f"{spec.description} (reads `{', '.join(spec.fields)}`).",
         "schema": {"type": "string"}}
        for name, spec in specs.items()
    ]
    params.append({
        "name": f"{extra}.<path>__<op>:<type>", "in": "query", "required": False,
        "description": "User-defined filters, see /docs/dev/filters.html "
                       "(operators eq neq gt gte lt lte in nin like nlike; "
                       "types string integer numeric boolean).",
        "schema": {"type": "string"}, "x-luna-pattern-parameter": True,
    })
    return params


def _ws(summary: str, params: list[dict[str, Any]], envelope: str,
        account: bool) -> dict[str, Any]:
    responses = {
        "101": {"description": f"Switching protocols; the server then pushes one text frame per "
                               f"event: {envelope}.",
                "headers": REQUEST_ID_HEADER,
                "content": {"application/json": {
                    "schema": {"$ref": f"#/components/schemas/{envelope}"}}}},
        **COMMON_ERRORS,
        "503": _error("Too many connections or shutting down (29005)."),
    }
    responses["401"] = UNAUTHORIZED
    responses["403"] = _error(("No Luna-Account-Id header (29001), " if account else "")
                              + "foreign browser Origin (29011), token not allowed (12033).")
    return {"get": {
        "summary": summary,
        "parameters": [REQUEST_ID_PARAM, AUTH_PARAM, TOKEN_PARAM,
                       *([ACCOUNT_PARAM] if account else []),
                       *[p for p in params if not p.get("x-luna-pattern-parameter")]],
        "x-luna-user-defined-filters": [p["name"] for p in params
                                        if p.get("x-luna-pattern-parameter")],
        "responses": responses,
    }}


def _publish(summary: str, schema: str, account: bool) -> dict[str, Any]:
    responses = {
        "204": {"description": "Published to the bus.", "headers": REQUEST_ID_HEADER},
        **COMMON_ERRORS,
        "400": _error("No JSON (12002) or JSON failed validation (12022), bad header (12012)."),
        "413": _error("Body larger than limits.publish_body_max_bytes (12031)."),
        "415": _error("Content-Type is not application/json (12024)."),
        "503": _error("Bus unavailable (29006)."),
    }
    responses["401"] = UNAUTHORIZED
    responses["403"] = _error(("No Luna-Account-Id header (29001), " if account else "")
                              + "token without scope publish or for another account (12033).")
    return {"post": {
        "summary": summary,
        "parameters": [REQUEST_ID_PARAM, AUTH_PARAM, *([ACCOUNT_PARAM] if account else [])],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{schema}"}}}},
        "responses": responses,
    }}


def _get(summary: str, responses: dict[str, Any],
         params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"get": {"summary": summary, "parameters": [REQUEST_ID_PARAM, *(params or [])],
                    "responses": {**responses, "404": COMMON_ERRORS["404"],
                                  "400": COMMON_ERRORS["400"], "405": COMMON_ERRORS["405"],
                                  "500": COMMON_ERRORS["500"]}}}


TIME = {"type": "string", "description": "ISO-8601 date-time"}
SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error_code", "desc", "detail"],
              "properties": {"error_code": {"type": "integer"}, "desc": {"type": "string"},
                             "detail": {"type": "string"}, "link": {"type": "string"}}},
    "FaceEnvelope": {"type": "object", "properties": {
        "event": {"type": "object", "description": "The LP5 event, unchanged."},
        "handler_id": {"nullable": True},
        "event-create-time": {"nullable": True}, "event-end-time": {"nullable": True},
        "Luna-Request-id": {"nullable": True}}},
    "GeneralEnvelope": {"type": "object", "properties": {
        "event": {"type": "object"}, "event_type": {"type": "string"},
        "account_id": {"type": "string", "nullable": True},
        "event-create-time": {"nullable": True}, "event-end-time": {"nullable": True}}},
    "PublishEvents": {
        "type": "object", "additionalProperties": False,
        "required": ["events", "handler_id", "event_create_time", "event_end_time"],
        "properties": {
            "events": {"type": "array", "minItems": 1, "items": {"type": "object"}},
            "handler_id": {"type": "string"},
            "event_create_time": {**TIME, "format": "date-time"},
            "event_end_time": {**TIME, "format": "date-time"}}},
    "PublishGeneral": {
        "type": "object", "additionalProperties": False, "required": ["event", "event_type"],
        "properties": {
            "event": {"type": "object"},
            "event_type": {"type": "string", "minLength": 1, "maxLength": 128},
            "account_id": {"type": "string", "format": "uuid", "nullable": True},
            "event_create_time": {**TIME, "format": "date-time", "nullable": True},
            "event_end_time": {**TIME, "format": "date-time", "nullable": True}}},
    "HealthFailure": {"type": "object", "required": ["errors", "execution_time"], "properties": {
        "errors": {"type": "array", "items": {"type": "object", "properties": {
            "component": {"type": "string"},
            "error": {"type": "object", "properties": {
                "error_code": {"type": "integer"}, "desc": {"type": "string"},
                "detail": {"type": "string"}}}}}},
        "execution_time": {"type": "number"}}},
}


def build_document(api_versions: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    face = _ws("Face/body event stream (websocket).", _query_params(FACE_SPECS, "meta"),
               "FaceEnvelope", account=True)
    general = _ws("General event stream (websocket).", _query_params(GENERAL_SPECS, "event"),
                  "GeneralEnvelope", account=False)
    publish = _publish("Publish user events in the producers' format.", "PublishEvents", True)
    publish_general = _publish("Publish one general event.", "PublishGeneral", False)
    paths: dict[str, Any] = {}
    for prefix in ["", *(f"/{v}" for v in api_versions)]:
        paths[f"{prefix}/ws"] = face
        paths[f"{prefix}/ws/general"] = general
        paths[f"{prefix}/publish"] = publish
        paths[f"{prefix}/publish/general"] = publish_general
    accept = {"name": "Accept", "in": "header", "required": False, "schema": {"type": "string"}}
    paths.update({
        "/version": _get("Versions.", {"200": _ok_json("Versions.", {
            "type": "object", "properties": {"Version": {"type": "object", "properties": {
                "api": {"type": "integer"}, "major": {"type": "integer"},
                "minor": {"type": "integer"}, "patch": {"type": "integer"}}}}})}),
        "/healthcheck": _get("Bus health.", {
            "200": _ok_json("Healthy.", {"type": "object", "properties": {
                "execution_time": {"type": "number"}}}),
            "502": {"description": "Bus unreachable.", "headers": REQUEST_ID_HEADER,
                    "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/HealthFailure"}}}}}),
        "/config": _get("Settings, secrets masked.", {
            "200": {"description": "Settings.", "headers": REQUEST_ID_HEADER, "content": {
                "application/json": {"schema": {"type": "object"}},
                "text/plain": {"schema": {"type": "string"}}}},
            "401": UNAUTHORIZED,
            "403": _error("auth.mode jwt: the token lacks scope admin (12033)."),
            "415": _error("Unsupported Accept (12024).")}, [accept, AUTH_PARAM]),
        "/plugins": _get("Plugins.", {"200": _ok_json("Plugins.", {
            "type": "object", "properties": {"plugins": {"type": "array", "items": {
                "type": "object", "properties": {"name": {"type": "string"},
                                                 "running": {"type": "integer"}}}}}})}),
        "/metrics": _get("Prometheus metrics.", {"200": {
            "description": "Prometheus text format.", "headers": REQUEST_ID_HEADER,
            "content": {"text/plain": {"schema": {"type": "string"}}}}}),
        "/docs/spec": _get("This document.", {
            "200": {"description": "OpenAPI YAML or HTML.", "headers": REQUEST_ID_HEADER,
                    "content": {"application/x-yaml": {"schema": {"type": "object"}},
                                "text/html": {"schema": {"type": "string"}}}},
            "415": _error("Unsupported Accept (12024).")}, [accept]),
        "/docs/dev": _get("Developer manual.", {"302": {
            "description": "Redirect to /docs/dev/index.html.", "headers": REQUEST_ID_HEADER}}),
        "/docs/dev/{page}": _get("A page of the developer manual.", {"200": {
            "description": "HTML page.", "headers": REQUEST_ID_HEADER,
            "content": {"text/html": {"schema": {"type": "string"}}}}},
            [{"name": "page", "in": "path", "required": True, "schema": {"type": "string"}}]),
    })
    html = {"200": {"description": "HTML page.", "headers": REQUEST_ID_HEADER,
                    "content": {"text/html": {"schema": {"type": "string"}}}}}
    viewer_ws = _ws("Face/body stream for the viewer: the account comes from the query "
                    "(browsers cannot set headers).", _query_params(FACE_SPECS, "meta"),
                    "FaceEnvelope", account=False)
    viewer_ws["get"]["parameters"].append({
        "name": "account_id", "in": "query", "required": True,
        "schema": {"type": "string", "format": "uuid"}})
    viewer_ws["get"]["responses"]["403"] = _error(
        "No account_id (29001), foreign browser Origin (29011), token not allowed (12033).")
    paths.update({
        "/": _get("Index page.", html),
        "/viewer": _get("Live event viewer.", html),
        "/viewer/validate": _get("Validate viewer filters before connecting.", {
            "204": {"description": "Filters are valid.", "headers": REQUEST_ID_HEADER},
            "401": UNAUTHORIZED,
            "403": _error("No account_id for face events (29001), token not allowed (12033).")},
            [{"name": "kind", "in": "query", "required": False,
              "schema": {"type": "string", "enum": ["face", "general"]}}, TOKEN_PARAM]),
        "/viewer/ws": viewer_ws,
        "/static/{name}": _get("Viewer assets.", {"200": {
            "description": "Asset.", "headers": REQUEST_ID_HEADER,
            "content": {"application/javascript": {"schema": {"type": "string"}},
                        "text/css": {"schema": {"type": "string"}},
                        "text/html": {"schema": {"type": "string"}}}}},
            [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]),
    })
    return {
        "openapi": "3.0.3",
        "info": {"title": "luna-sender", "version": __version__,
                 "description": "Real-time event gateway, wire-compatible with LUNA PLATFORM's "
                                "Luna Sender. Business routes are served at the root and under "
                                "each API version prefix."},
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }


@cache
def document_yaml(api_versions: tuple[int, ...]) -> str:
    return yaml.safe_dump(build_document(api_versions), sort_keys=False, allow_unicode=True)
