"""Typed schemas of the bodies and pushed envelopes, shared by the OpenAPI and AsyncAPI documents.

Written in OpenAPI 3.0's dialect (``nullable``); :func:`to_json_schema` turns a schema into the
plain JSON Schema AsyncAPI uses. Event objects list the fields the original's documents show
(seed 002's example event) and stay open (``additionalProperties: true``): the service passes
events through unchanged, so a producer's newer fields must not make a generated client fail.
Every leaf has a type, so generated clients never fall back to ``Any``.

The two publish bodies are not written here: the routes validate with pydantic models
(bodies.py), and :func:`openapi_schema` turns those models' schemas into this dialect, so what
is documented is what is checked. The envelopes stay hand-written: nothing validates them.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from luna_sender.web.docs.bodies import BODIES, COMPONENT


def _s(description: str = "", nullable: bool = False, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", **extra}
    if description:
        schema["description"] = description
    if nullable:
        schema["nullable"] = True
    return schema


def _obj(
    properties: dict[str, Any] | None = None,
    description: str = "",
    nullable: bool = False,
    required: list[str] | None = None,
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "additionalProperties": True}
    if description:
        schema["description"] = description
    if properties:
        schema["properties"] = properties
    if required:
        schema["required"] = required
    if nullable:
        schema["nullable"] = True
    return schema


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _arr(items: dict[str, Any], description: str = "") -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "array", "items": items}
    if description:
        schema["description"] = description
    return schema


NUM = {"type": "number"}
TIME_TEXT = "Time as the producer wrote it (ISO-8601 from the platform), passed through unchanged."

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error_code", "desc", "detail"],
        "description": "LUNA error body.",
        "properties": {
            "error_code": {"type": "integer"},
            "desc": _s(),
            "detail": _s(),
            "link": _s("Knowledge-hub page of the code."),
        },
    },
    "GeoPosition": _obj({"longitude": NUM, "latitude": NUM}, nullable=True),
    "Location": _obj(
        {
            "city": _s(nullable=True),
            "area": _s(nullable=True),
            "district": _s(nullable=True),
            "street": _s(nullable=True),
            "house_number": _s(nullable=True),
            "geo_position": _ref("GeoPosition"),
        },
        "Where the event happened.",
        nullable=True,
    ),
    "MatchCandidate": _obj(
        {
            "similarity": NUM,
            "face": _obj(description="Matched face.", nullable=True),
            "event": _obj(description="Matched event.", nullable=True),
        }
    ),
    "Match": _obj({"label": _s(), "candidates": _arr(_ref("MatchCandidate"))}),
    "FaceEvent": _obj(
        {
            "event_id": _s("Event id (uuid)."),
            "url": _s(nullable=True),
            "handler_id": _s(nullable=True),
            "account_id": _s(nullable=True),
            "create_time": _s(nullable=True),
            "end_time": _s(nullable=True),
            "source": _s(nullable=True),
            "stream_id": _s(nullable=True),
            "track_id": _s(nullable=True),
            "external_id": _s(nullable=True),
            "user_data": _s(nullable=True),
            "tags": {**_arr(_s()), "nullable": True},
            "face_attributes": _obj(
                description="Face attributes (basic_attributes: age, gender, ethnicities).",
                nullable=True,
            ),
            "body_attributes": _obj(description="Body attributes.", nullable=True),
            "aggregate_estimations": _obj(
                description="face/body aggregated estimations.", nullable=True
            ),
            "detections": {**_arr(_obj()), "nullable": True},
            "matches": {**_arr(_ref("Match")), "nullable": True},
            "location": _ref("Location"),
            "face": _obj(description="Face created from the event.", nullable=True),
            "meta": _obj(description="User meta data.", nullable=True),
        },
        "A face/body event of the LUNA PLATFORM, unchanged; fields beyond these pass through.",
    ),
    "FaceEnvelope": {
        "type": "object",
        "description": "One face/body event pushed on /ws.",
        "required": ["event"],
        "properties": {
            "event": _ref("FaceEvent"),
            "handler_id": _s("Handler that produced the event.", nullable=True),
            "event-create-time": _s(TIME_TEXT, nullable=True),
            "event-end-time": _s(TIME_TEXT, nullable=True),
            "Luna-Request-id": _s("Request id of the producing request.", nullable=True),
        },
    },
    "GeneralEvent": _obj(description="A general event: any JSON object, unchanged."),
    "GeneralEnvelope": {
        "type": "object",
        "description": "One general event pushed on /ws/general.",
        "required": ["event", "event_type"],
        "properties": {
            "event": _ref("GeneralEvent"),
            "event_type": _s(),
            "account_id": _s("Account the event belongs to, as published.", nullable=True),
            "event-create-time": _s(TIME_TEXT, nullable=True),
            "event-end-time": _s(TIME_TEXT, nullable=True),
        },
    },
    "UserEvent": _obj(description="A user generated event: any JSON object, delivered as is."),
    "Version": {
        "type": "object",
        "required": ["Version"],
        "properties": {
            "Version": {
                "type": "object",
                "required": ["api", "major", "minor", "patch"],
                "properties": {
                    "api": {"type": "integer"},
                    "major": {"type": "integer"},
                    "minor": {"type": "integer"},
                    "patch": {"type": "integer"},
                },
            }
        },
    },
    "Health": {
        "type": "object",
        "required": ["execution_time"],
        "properties": {"execution_time": NUM},
    },
    "HealthFailure": {
        "type": "object",
        "required": ["errors", "execution_time"],
        "properties": {
            "errors": _arr(
                {
                    "type": "object",
                    "required": ["component", "error"],
                    "properties": {
                        "component": _s(),
                        "error": {
                            "type": "object",
                            "properties": {
                                "error_code": {"type": "integer"},
                                "desc": _s(),
                                "detail": _s(),
                            },
                        },
                    },
                }
            ),
            "execution_time": NUM,
        },
    },
    "Plugins": {
        "type": "object",
        "required": ["plugins"],
        "properties": {
            "plugins": _arr(
                {
                    "type": "object",
                    "required": ["name", "running"],
                    "properties": {"name": _s(), "running": {"type": "integer", "enum": [0, 1]}},
                }
            )
        },
    },
    "InfluxMonitoring": {
        "type": "object",
        "description": "The original's monitoring settings (TOKEN masked).",
        "properties": {
            "SEND_DATA_FOR_MONITORING": {"type": "integer", "enum": [0, 1]},
            "VERSION": {"type": "integer"},
            "ORGANIZATION": _s(),
            "TOKEN": _s(),
            "BUCKET": _s(),
            "HOST": _s(),
            "PORT": {"type": "integer"},
            "USE_SSL": {"type": "integer", "enum": [0, 1]},
            "FLUSHING_PERIOD": NUM,
        },
    },
    "Config": _obj(
        {"INFLUX_MONITORING": _ref("InfluxMonitoring")},
        "Effective settings, secrets masked: this project's keys (see "
        "/docs/dev/configuration.html) and the original's INFLUX_MONITORING.",
    ),
}


def openapi_schema(schema: Any) -> Any:
    """pydantic's JSON Schema -> this module's OpenAPI 3.0 dialect: an optional field's
    ``anyOf [T, null]`` is ``nullable`` (3.0 has no null type), generated titles and null
    defaults go (a default the route computes, like "now", is in the description instead)."""
    if isinstance(schema, list):
        return [openapi_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if COMPONENT in schema:
        return _ref(schema[COMPONENT])
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" or (key == "default" and value is None):
            continue
        if key == "properties":
            out[key] = {name: openapi_schema(s) for name, s in value.items()}
        else:
            out[key] = openapi_schema(value)
    alternatives = out.pop("anyOf", None)
    if alternatives is None:
        return out
    if len(alternatives) != 2 or {"type": "null"} not in alternatives:
        return {**out, "anyOf": alternatives}
    alternatives.remove({"type": "null"})
    return {**alternatives[0], **out, "nullable": True}


def _model_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema: dict[str, Any] = openapi_schema(model.model_json_schema())
    assert "$defs" not in schema, "a body model may only reference the documents' components"
    return schema


SCHEMAS.update({model.__name__: _model_schema(model) for model in BODIES})


def to_json_schema(schema: Any, ref_prefix: str = "#/components/schemas/") -> Any:
    """OpenAPI 3.0 schema -> JSON Schema: ``nullable`` becomes a ``null`` type alternative."""
    if isinstance(schema, list):
        return [to_json_schema(s, ref_prefix) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: to_json_schema(v, ref_prefix) for k, v in schema.items() if k != "nullable"}
    if "$ref" in out:
        out["$ref"] = ref_prefix + out["$ref"].rsplit("/", 1)[1]
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def schemas_copy() -> dict[str, Any]:
    return copy.deepcopy(SCHEMAS)
