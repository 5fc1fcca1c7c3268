"""The service's own OpenAPI 3 document, built from the same tables the service runs on.

Hand-kept documents drift; this one is generated from the filter specs and the configured API
versions, so every query parameter and every versioned path it lists is one the service
actually serves (a test compares it with the router). Integrators generate clients from it, so
every operation has a stable ``operationId`` (versioned copies get a ``V<n>`` suffix), every body
and envelope is typed (schemas.py; the publish bodies are the routes' own pydantic models), and
the YAML has no anchors: several generators and linters mishandle YAML aliases.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import yaml

from luna_sender import __version__
from luna_sender.filters.events import FACE_SPECS
from luna_sender.filters.general import GENERAL_SPECS
from luna_sender.web.docs.operations import (
    NO_AUTH,
    RECOVERY_QUERY,
    SECURITY_SCHEMES,
    TAGS,
    publish_item,
    query_params,
    ws_item,
)
from luna_sender.web.docs.paths import service_paths, viewer_paths
from luna_sender.web.docs.schemas import schemas_copy


def _versioned(item: dict[str, Any], suffix: str) -> dict[str, Any]:
    """A copy of a path item whose operationIds carry the version suffix (ids are unique)."""
    item = copy.deepcopy(item)
    for operation in item.values():
        operation["operationId"] += suffix
    return item


def _business(api_versions: tuple[int, ...], jwt: bool) -> dict[str, Any]:
    routes = {
        "/ws": ws_item(
            "subscribeFaceEvents",
            "Face/body event stream (websocket).",
            query_params(FACE_SPECS, "meta") + RECOVERY_QUERY,
            "FaceEnvelope",
            True,
            jwt,
        ),
        "/ws/general": ws_item(
            "subscribeGeneralEvents",
            "General event stream (websocket)."
            + (" A token without scope admin sees its own account's events only." if jwt else ""),
            query_params(GENERAL_SPECS, "event") + RECOVERY_QUERY,
            "GeneralEnvelope",
            False,
            jwt,
        ),
        "/publish": publish_item(
            "publishEvents",
            "Publish user events in the producers' format.",
            "PublishEvents",
            True,
            jwt,
        ),
        "/publish/general": publish_item(
            "publishGeneralEvent", "Publish one general event.", "PublishGeneral", False, jwt
        ),
    }
    paths: dict[str, Any] = {}
    for prefix, suffix in [("", ""), *((f"/{v}", f"V{v}") for v in api_versions)]:
        for path, item in routes.items():
            paths[prefix + path] = _versioned(item, suffix)
    return paths


# A YAML body is a mapping once parsed (schemathesis parses it to check the schema).


def build_document(
    api_versions: tuple[int, ...] = (1, 2), auth_mode: str = "none"
) -> dict[str, Any]:
    """The document of a service running with ``api_versions`` and ``auth.mode``."""
    jwt = auth_mode == "jwt"
    paths = _business(api_versions, jwt)
    paths.update(service_paths(jwt))
    paths.update(viewer_paths(jwt))
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
