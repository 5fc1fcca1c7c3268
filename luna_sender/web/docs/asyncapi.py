"""The AsyncAPI 2.6 document of the two websocket streams, served at ``/docs/asyncapi``.

OpenAPI can say that ``/ws`` upgrades, not what flows afterwards; this document does: the
handshake's query parameters and headers (the websocket channel binding), the envelope of every
pushed frame and the close codes. Like the OpenAPI document it is built from the filter tables
and the configured API versions, so it lists exactly what the service accepts.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from luna_sender import __version__
from luna_sender.filters.events import FACE_SPECS
from luna_sender.filters.general import GENERAL_SPECS
from luna_sender.web.docs.openapi import dump_yaml
from luna_sender.web.docs.operations import REQUEST_ID_PATTERN
from luna_sender.web.docs.schemas import SCHEMAS, to_json_schema

# (code, when) — docs/reliability.md "Close codes" is the long form.
CLOSE_CODES: tuple[tuple[int, str], ...] = (
    (1001, "Going Away: the server is shutting down (SIGTERM/SIGINT)."),
    (
        1008,
        "Policy Violation: slow consumer, the outgoing buffer overflowed or made no progress "
        "for ws.stall_timeout seconds.",
    ),
    (
        1012,
        "Service Restart: only sockets with recover/since; the service's bus subscription was "
        "cut and is back, so events may have been missed: reconnect with since.",
    ),
    (1009, "Message Too Big: the client sent a frame larger than ws.max_message_size."),
    (1002, "Protocol Error: a malformed frame from the client."),
    (1007, "Invalid Payload: a client text frame that is not UTF-8."),
    (
        1006,
        "(client side) the connection was aborted: heartbeat timeout or eviction grace expired.",
    ),
)


def handshake_errors(jwt: bool, account: bool) -> str:
    """The refusals of one stream's handshake in one auth mode (docs/security.md)."""
    mode = (
        "401/29010 missing or invalid token, 403/12033 a Luna-Account-Id or account_id "
        "other than the token's"
        + ("" if account else ", or recover/since with a token that is not admin")
        + ", "
        if jwt
        else "403/29001 no Luna-Account-Id, "
        if account
        else ""
    )
    return (
        "Everything is validated before the upgrade; a refused handshake is a plain HTTP LUNA "
        "error `{error_code, desc, detail, link}`: 400/12012 bad, unknown or repeated query "
        "parameter or header, 400/12046 invalid request (e.g. a raw '#' in the request target), "
        f"403/29011 a browser Origin that is neither the service's own nor allowed, {mode}"
        "503/29005 too many connections or shutting down, 503/29012 too many costly like/nlike "
        "filters in the service (limits.like_scanning_max), 503/29013 the service's websocket "
        "filters hold limits.filter_memory_max_bytes. Client messages carry no meaning and "
        "are dropped; the server pings every ws.heartbeat seconds."
    )


def _token_property(jwt: bool) -> dict[str, Any]:
    return {
        "type": "string",
        "description": (
            "The token, for browsers (they cannot set headers); others send Authorization: Bearer. "
            "Exactly one of the two; never a filter."
            if jwt
            else "Ignored in auth.mode none (never a filter)."
        ),
    }


ENVELOPE_SCHEMAS = (
    "FaceEnvelope",
    "FaceEvent",
    "Location",
    "GeoPosition",
    "Match",
    "MatchCandidate",
    "GeneralEnvelope",
    "GeneralEvent",
)
REF_PREFIX = "#/components/schemas/"


RECOVERY_PROPERTIES: dict[str, Any] = {
    "recover": {
        "type": "string",
        "enum": ["true", "false", "1", "0"],
        "description": "true: each envelope carries one more key, offset (opaque).",
    },
    "since": {
        "type": "string",
        "description": "An offset received before (implies recover=true): first frame "
        '{"recovery": {"recovered", "replayed"}}, then the missed events, then live ones.',
    },
}


def _query(specs: dict[str, Any], user_prefix: str, jwt: bool) -> dict[str, Any]:
    properties = {
        name: {
            "type": "string",
            "description": f"{spec.description} (reads {', '.join(spec.fields)}).",
        }
        for name, spec in specs.items()
    }
    properties["token"] = _token_property(jwt)
    properties.update(RECOVERY_PROPERTIES)  # #18, docs/recovery.md
    return {
        "type": "object",
        "properties": properties,
        "patternProperties": {
            rf"^{user_prefix}\.": {
                "type": "string",
                "description": f"User-defined filter {user_prefix}.<path>__<op>:<type>=<value> "
                "(see /docs/dev/filters.html).",
            }
        },
        "additionalProperties": False,
    }


def _headers(account: bool, jwt: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "Luna-Request-Id": {
            "type": "string",
            "pattern": REQUEST_ID_PATTERN,
            "description": "Echoed on the 101, generated when absent.",
        },
        "Origin": {
            "type": "string",
            "description": "Sent by browsers: must be the service's "
            "own origin or in ws.allowed_origins (403/29011 otherwise).",
        },
    }
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if jwt:
        properties["Authorization"] = {
            "type": "string",
            "pattern": "^[Bb]earer .+",
            "description": "Bearer <jwt> (claims account_id, exp, "
            "scope); or the token query parameter.",
        }
    if account:
        properties["Luna-Account-Id"] = {
            "type": "string",
            "format": "uuid",
            "description": (
                "Optional: the account is the token's; if sent (once) it must name it."
                if jwt
                else "Only this account's events; sent once."
            ),
        }
        if not jwt:
            schema["required"] = ["Luna-Account-Id"]
    return schema


def _channel(
    description: str,
    op_id: str,
    message: str,
    query: dict[str, Any],
    headers: dict[str, Any],
    errors: str,
) -> dict[str, Any]:
    codes = "; ".join(f"{code} {text}" for code, text in CLOSE_CODES)
    return {
        "description": f"{description} {errors} Close codes: {codes}",
        "bindings": {
            "ws": {"method": "GET", "query": query, "headers": headers, "bindingVersion": "0.1.0"}
        },
        "subscribe": {
            "operationId": op_id,
            "summary": f"Receive {message} frames.",
            "message": {"$ref": f"#/components/messages/{message}"},
        },
        "x-close-codes": [{"code": code, "reason": text} for code, text in CLOSE_CODES],
    }


def build_asyncapi(
    api_versions: tuple[int, ...] = (1, 2), auth_mode: str = "none"
) -> dict[str, Any]:
    """The streams of a service running with ``api_versions`` and ``auth.mode``."""
    jwt = auth_mode == "jwt"
    face_query = _query(FACE_SPECS, "meta", jwt)
    general_query = _query(GENERAL_SPECS, "event", jwt)
    face_text = (
        "Face/body events of the token's account"
        if jwt
        else "Face/body events of the account named by Luna-Account-Id"
    )
    general_text = (
        "General events (a token without scope admin: its own account's only), "
        "optionally of one account_id"
        if jwt
        else "General events, optionally of one account_id"
    )
    channels: dict[str, Any] = {}
    for prefix, suffix in [("", ""), *((f"/{v}", f"V{v}") for v in api_versions)]:
        channels[f"{prefix}/ws"] = _channel(
            f"{face_text}, filtered by the query; one text frame per event.",
            "receiveFaceEvents" + suffix,
            "FaceEvent",
            copy.deepcopy(face_query),
            _headers(True, jwt),
            handshake_errors(jwt, True),
        )
        channels[f"{prefix}/ws/general"] = _channel(
            f"{general_text} (matched exactly), filtered by the query; one text frame per event.",
            "receiveGeneralEvents" + suffix,
            "GeneralEvent",
            copy.deepcopy(general_query),
            _headers(False, jwt),
            handshake_errors(jwt, False),
        )
    server: dict[str, Any] = {
        "url": "{host}:{port}",
        "protocol": "ws",
        "description": f"A luna-sender instance (auth.mode {'jwt' if jwt else 'none'}).",
        "variables": {"host": {"default": "127.0.0.1"}, "port": {"default": "5080"}},
    }
    components: dict[str, Any] = {}
    if jwt:
        server["security"] = [{"bearerAuth": []}, {"tokenQuery": []}]
        components["securitySchemes"] = {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "Authorization: Bearer <jwt>.",
            },
            "tokenQuery": {
                "type": "httpApiKey",
                "in": "query",
                "name": "token",
                "description": "The same token as the token query parameter.",
            },
        }
    return {
        "asyncapi": "2.6.0",
        "id": "urn:luna-sender",
        "info": {
            "title": "luna-sender event streams",
            "version": __version__,
            "description": "The websocket streams of luna-sender, wire-compatible with "
            "LUNA PLATFORM's Luna Sender. HTTP routes: /docs/spec.",
            "license": {"name": "MIT", "url": "https://opensource.org/licenses/MIT"},
        },
        "servers": {"local": server},
        "defaultContentType": "application/json",
        "tags": [{"name": "events", "description": "Face/body and general event streams."}],
        "channels": channels,
        "components": {
            "messages": {
                "FaceEvent": {
                    "name": "FaceEvent",
                    "title": "Face/body event envelope",
                    "contentType": "application/json",
                    "payload": {"$ref": REF_PREFIX + "FaceEnvelope"},
                },
                "GeneralEvent": {
                    "name": "GeneralEvent",
                    "title": "General event envelope",
                    "contentType": "application/json",
                    "payload": {"$ref": REF_PREFIX + "GeneralEnvelope"},
                },
            },
            "schemas": {
                name: to_json_schema(SCHEMAS[name], REF_PREFIX) for name in ENVELOPE_SCHEMAS
            },
            **components,
        },
    }


@cache
def asyncapi_yaml(api_versions: tuple[int, ...], auth_mode: str = "none") -> str:
    return dump_yaml(build_asyncapi(api_versions, auth_mode))
