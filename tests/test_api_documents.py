"""/docs/spec and /docs/asyncapi as integrators use them: linters, validators, a generated client.

The external tools run for real: Redocly CLI and the AsyncAPI parser from npm when ``npx`` and
``node`` are on the PATH (skipped otherwise; the parser is installed once into
``~/.cache/luna-sender-tests``), openapi-python-client from the test extras.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jsonschema
import orjson
import pytest
import yaml
from openapi_spec_validator import validate

from luna_sender.filters.events import FACE_SPECS
from luna_sender.filters.general import GENERAL_SPECS
from luna_sender.web.docs.asyncapi import CLOSE_CODES, build_asyncapi
from luna_sender.web.docs.openapi import build_document

from .conftest import LiveApp
from .helpers import REPO, account, recv_json
from .jwtkit import jwt_settings, raw_handshake, token

REDOCLY = "@redocly/cli@2.77.0"
ASYNCAPI_PARSER = "@asyncapi/parser@3.6.3"
NODE_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "luna-sender-tests"
OP_ID_RE = re.compile(r"^[a-z][A-Za-z0-9]+$")
needs_node = pytest.mark.skipif(
    not (shutil.which("npx") and shutil.which("node")), reason="node/npx not installed"
)


async def _get(app: LiveApp, path: str, accept: str) -> str:
    async with app.session.get(app.url(path), headers={"Accept": accept}) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == accept
        return await resp.text()


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op) for path, item in doc["paths"].items() for method, op in item.items()
    ]


def test_every_operation_has_a_stable_unique_operation_id() -> None:
    doc = build_document((1, 2))
    ids = [op.get("operationId") for _p, _m, op in _operations(doc)]
    assert all(isinstance(i, str) and OP_ID_RE.match(i) for i in ids), ids
    assert len(ids) == len(set(ids))
    by_path = {(p, m): op["operationId"] for p, m, op in _operations(doc)}
    assert by_path[("/publish", "post")] == "publishEvents"
    assert by_path[("/2/publish", "post")] == "publishEventsV2"
    assert by_path[("/1/publish/general", "post")] == "publishGeneralEventV1"
    assert by_path[("/ws", "get")] == "subscribeFaceEvents"
    assert by_path[("/1/ws/general", "get")] == "subscribeGeneralEventsV1"
    assert all(op["security"] == [] for _p, _m, op in _operations(doc))
    assert "securitySchemes" not in doc["components"]


def _param(op: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((p for p in op["parameters"] if p["name"] == name), None)


def test_jwt_mode_document_lists_the_token_and_an_optional_account_header() -> None:
    """auth.mode jwt: the token is the business routes' security, Luna-Account-Id optional."""
    doc = build_document((1, 2), "jwt")
    validate(doc)
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert schemes["tokenQuery"] == {
        **schemes["tokenQuery"],
        "type": "apiKey",
        "in": "query",
        "name": "token",
    }
    protected = {"/config", "/viewer/validate", "/viewer/ws"} | {
        f"{p}{r}"
        for p in ("", "/1", "/2")
        for r in ("/ws", "/ws/general", "/publish", "/publish/general")
    }
    for path, _method, op in _operations(doc):
        if path in protected:
            assert op["security"] == [{"bearerAuth": []}, {"tokenQuery": []}], path
            assert op["responses"]["401"]["description"].startswith("Missing or invalid token")
            assert _param(op, "token") is None  # the scheme says it (one definition)
        else:
            assert op["security"] == [], path  # probes and static pages stay open
            assert "401" not in op["responses"], path
    for path in ("/ws", "/2/ws", "/publish", "/1/publish"):
        op = next(iter(doc["paths"][path].values()))
        header = _param(op, "Luna-Account-Id")
        assert header is not None and header["required"] is False, path
        assert "29001" not in op["responses"]["403"]["description"], path
    viewer = doc["paths"]["/viewer/ws"]["get"]
    assert _param(viewer, "account_id")["required"] is False  # type: ignore[index]
    # auth.mode none: the header is required, no 401 exists, a token is ignored (accepted).
    none = build_document((1, 2), "none")
    for path in ("/ws", "/publish"):
        op = next(iter(none["paths"][path].values()))
        assert _param(op, "Luna-Account-Id")["required"] is True  # type: ignore[index]
        assert "401" not in op["responses"]
        assert "29001" in op["responses"]["403"]["description"]
    assert "29011" in none["paths"]["/ws/general"]["get"]["responses"]["403"]["description"]
    assert _param(none["paths"]["/ws"]["get"], "token") is not None


@pytest.mark.parametrize("mode", ["none", "jwt"])
async def test_served_documents_follow_the_auth_mode(live_app_factory: Any, mode: str) -> None:
    app = await live_app_factory(**(jwt_settings() if mode == "jwt" else {}))
    spec = yaml.safe_load(await _get(app, "/docs/spec", "application/x-yaml"))
    assert spec == json.loads(json.dumps(build_document((1, 2), mode)))
    stream = yaml.safe_load(await _get(app, "/docs/asyncapi", "application/x-yaml"))
    assert stream == json.loads(json.dumps(build_asyncapi((1, 2), mode)))


@pytest.mark.parametrize("mode", ["none", "jwt"])
async def test_asyncapi_handshake_matches_what_the_service_accepts(
    live_app_factory: Any, mode: str
) -> None:
    """What the document allows is let in, and every refusal the service gives is listed."""
    jwt_mode = mode == "jwt"
    app = await live_app_factory(**(jwt_settings() if jwt_mode else {}))
    port = app.server.port
    doc = build_asyncapi((1, 2), mode)
    face = doc["channels"]["/ws"]
    binding = face["bindings"]["ws"]
    acc = account()
    query = {"sources": "cam-1", **({"token": token(acc)} if jwt_mode else {"token": "x"})}
    headers = {} if jwt_mode else {"Luna-Account-Id": acc}
    jsonschema.validate(query, binding["query"])
    jsonschema.validate(headers, binding["headers"])
    status, _h, _b = await raw_handshake(port, "/ws?" + urlencode(query), headers)
    assert status == 101
    assert ("required" in binding["headers"]) is not jwt_mode
    listed = set(re.findall(r"\b(\d{3})/(\d{5})\b", face["description"]))
    refusals = [
        ("/ws?sources=cam-1#", headers, ("400", "12046")),
        ("/ws?" + urlencode(query), {**headers, "Origin": "http://evil.example"}, ("403", "29011")),
    ]
    if jwt_mode:
        refusals += [
            ("/ws", {}, ("401", "29010")),
            ("/ws?" + urlencode(query), {"Luna-Account-Id": account()}, ("403", "12033")),
        ]
    else:
        refusals += [("/ws", {}, ("403", "29001"))]
    for path, sent, (want_status, want_code) in refusals:
        status, _h, body = await raw_handshake(port, path, sent)
        assert (str(status), str(orjson.loads(body)["error_code"])) == (want_status, want_code)
        assert (want_status, want_code) in listed, (mode, want_code, face["description"])
    assert (("401", "29010") in listed) is jwt_mode
    assert (("403", "29001") in listed) is not jwt_mode
    assert ("security" in doc["servers"]["local"]) is jwt_mode


def _walk_schemas(node: Any, where: str = "") -> list[str]:
    """Paths of schemas that would generate ``Any``: no type, no $ref, or nullable alone."""
    bad: list[str] = []
    if isinstance(node, dict):
        if "schema" in node and isinstance(node["schema"], dict):
            bad += _check_schema(node["schema"], where + "/schema")
        for key, value in node.items():
            if key != "schema":
                bad += _walk_schemas(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            bad += _walk_schemas(value, f"{where}/{i}")
    return bad


def _check_schema(schema: dict[str, Any], where: str) -> list[str]:
    if "$ref" in schema:
        return []
    bad = [] if "type" in schema else [where]
    for name, sub in schema.get("properties", {}).items():
        bad += _check_schema(sub, f"{where}/properties/{name}")
    if isinstance(schema.get("items"), dict):
        bad += _check_schema(schema["items"], f"{where}/items")
    return bad


def test_bodies_and_envelopes_are_typed() -> None:
    doc = build_document((1, 2))
    schemas = doc["components"]["schemas"]
    untyped = _walk_schemas(doc["paths"], "paths")
    for name, schema in schemas.items():
        untyped += _check_schema(schema, f"components/schemas/{name}")
    assert not untyped, untyped
    assert schemas["FaceEnvelope"]["properties"]["event"] == {
        "$ref": "#/components/schemas/FaceEvent"
    }
    # contract Part 1 "Accounts": account_id and the times are plain strings.
    general = schemas["PublishGeneral"]["properties"]
    assert all(
        "format" not in general[k] for k in ("account_id", "event_create_time", "event_end_time")
    )
    header = next(
        p for p in doc["paths"]["/publish"]["post"]["parameters"] if p["name"] == "Luna-Account-Id"
    )
    assert header["schema"]["type"] == "string" and re.match(
        header["schema"]["pattern"], "8b8b5937-2e9c-4e8b-a7a7-5caf86621b5a"
    )


async def test_served_yaml_has_no_aliases_and_validates(memory_app: LiveApp) -> None:
    text = await _get(memory_app, "/docs/spec", "application/x-yaml")
    assert not re.search(r"[&*]id\d+", text)
    doc = yaml.safe_load(text)
    validate(doc)
    assert doc == json.loads(json.dumps(build_document((1, 2))))


@pytest.mark.slow
@needs_node
@pytest.mark.parametrize("mode", ["none", "jwt"])
async def test_redocly_lint_reports_no_errors(
    live_app_factory: Any, tmp_path: Path, mode: str
) -> None:
    app = await live_app_factory(**(jwt_settings() if mode == "jwt" else {}))
    spec = tmp_path / "spec.yaml"
    spec.write_text(await _get(app, "/docs/spec", "application/x-yaml"))
    result = await asyncio.to_thread(
        subprocess.run,
        ["npx", "--yes", REDOCLY, "lint", str(spec), "--format=json"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    report = json.loads(result.stdout)
    errors = [p for p in report["problems"] if p["severity"] == "error"]
    assert report["totals"]["errors"] == 0, errors
    # The only warnings left: websocket upgrades (101) and the /docs/dev redirect have no 2xx.
    assert {p["ruleId"] for p in report["problems"]} <= {"operation-2xx-response"}


def _payload_validator(doc: dict[str, Any], message: str) -> jsonschema.Draft7Validator:
    ref = doc["components"]["messages"][message]["payload"]["$ref"]
    schema = {"$ref": ref, "components": doc["components"]}
    return jsonschema.Draft7Validator(schema)


async def test_asyncapi_served_lists_the_streams_and_describes_real_frames(
    memory_app: LiveApp,
) -> None:
    text = await _get(memory_app, "/docs/asyncapi", "application/x-yaml")
    doc = yaml.safe_load(text)
    assert (
        doc
        == await (
            await memory_app.session.get(
                memory_app.url("/docs/asyncapi"), headers={"Accept": "application/json"}
            )
        ).json()
    )
    assert doc["asyncapi"] == "2.6.0"
    assert not re.search(r"[&*]id\d+", text)
    assert doc == json.loads(json.dumps(build_asyncapi((1, 2))))
    assert set(doc["channels"]) == {
        f"{p}{r}" for p in ("", "/1", "/2") for r in ("/ws", "/ws/general")
    }
    face, general = doc["channels"]["/ws"], doc["channels"]["/2/ws/general"]
    # Every filter, ``token`` (accepted, never a filter, in both modes) and the recovery
    # parameters (#18).
    extra = {"token", "recover", "since"}
    assert set(face["bindings"]["ws"]["query"]["properties"]) == {*FACE_SPECS, *extra}
    assert set(general["bindings"]["ws"]["query"]["properties"]) == {*GENERAL_SPECS, *extra}
    assert face["bindings"]["ws"]["headers"]["required"] == ["Luna-Account-Id"]
    assert [c["code"] for c in face["x-close-codes"]] == [c for c, _ in CLOSE_CODES]
    # ... and they are every code docs/reliability.md's table names (1012 was missing once)
    table = (REPO / "docs" / "reliability.md").read_text().split("## Close codes", 1)[1]
    table = table.split("\n\n", 2)[1]
    assert {int(m) for m in re.findall(r"^\| (\d{4}) ", table, re.M)} == {c for c, _ in CLOSE_CODES}
    # Frames the service really pushes validate against the documented payloads.
    acc = account()
    async with memory_app.ws("/ws", account=acc) as fws, memory_app.ws("/ws/general") as gws:
        async with memory_app.session.post(
            memory_app.url("/publish"),
            headers={"Luna-Account-Id": acc},
            json={
                "events": [{"event_id": "e", "source": None, "tags": ["a"]}],
                "handler_id": "h",
                "event_create_time": "t",
                "event_end_time": "t",
            },
        ):
            pass
        async with memory_app.session.post(
            memory_app.url("/publish/general"), json={"event": {"k": 1}, "event_type": "x"}
        ):
            pass
        frames = {"FaceEvent": await recv_json(fws), "GeneralEvent": await recv_json(gws)}
    for message, frame in frames.items():
        _payload_validator(doc, message).validate(frame)
    with pytest.raises(jsonschema.ValidationError):
        _payload_validator(doc, "GeneralEvent").validate({"event": [], "event_type": 1})


def _node_tools() -> Path:
    """@asyncapi/parser (which ships @asyncapi/specs, the official JSON schemas), cached."""
    NODE_CACHE.mkdir(parents=True, exist_ok=True)
    if not (NODE_CACHE / "node_modules" / "@asyncapi" / "parser").is_dir():
        subprocess.run(
            [
                "npm",
                "install",
                "--no-audit",
                "--no-fund",
                "--silent",
                "--prefix",
                str(NODE_CACHE),
                ASYNCAPI_PARSER,
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )
    return NODE_CACHE


VALIDATE_JS = """
import { Parser } from '@asyncapi/parser';
import { readFileSync } from 'fs';
const diagnostics = await new Parser().validate(readFileSync(process.argv[2], 'utf8'));
console.log(JSON.stringify(diagnostics.map(d => ({code: d.code, severity: d.severity,
                                                   message: d.message, path: d.path}))));
"""


@pytest.mark.slow
@needs_node
@pytest.mark.parametrize("mode", ["none", "jwt"])
async def test_asyncapi_passes_the_official_schema_and_parser(
    live_app_factory: Any, tmp_path: Path, mode: str
) -> None:
    app = await live_app_factory(**(jwt_settings() if mode == "jwt" else {}))
    text = await _get(app, "/docs/asyncapi", "application/x-yaml")
    tools = await asyncio.to_thread(_node_tools)
    schema_file = tools / "node_modules/@asyncapi/specs/schemas/2.6.0-without-$id.json"
    jsonschema.validate(yaml.safe_load(text), json.loads(schema_file.read_text()))
    doc_file = tmp_path / "asyncapi.yaml"
    doc_file.write_text(text)
    script = tools / "validate.mjs"
    script.write_text(VALIDATE_JS)
    result = await asyncio.to_thread(
        subprocess.run,
        ["node", str(script), str(doc_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    errors = [d for d in json.loads(result.stdout) if d["severity"] == 0]  # 0 = error
    assert not errors, errors


@pytest.mark.slow
async def test_generated_python_client_publishes(memory_app: LiveApp, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(await _get(memory_app, "/docs/spec", "application/x-yaml"))
    binary = Path(sys.executable).parent / "openapi-python-client"
    env = {**os.environ, "PATH": f"{binary.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = await asyncio.to_thread(
        subprocess.run,
        [
            str(binary),
            "generate",
            "--path",
            str(spec),
            "--meta",
            "none",
            "--output-path",
            str(tmp_path / "luna_client"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        client_mod = importlib.import_module("luna_client")
        publish_general = importlib.import_module(
            "luna_client.api.publish.publish_general_event_v2"
        )
        publish_events = importlib.import_module("luna_client.api.publish.publish_events_v1")
        models = importlib.import_module("luna_client.models")
        acc = account()
        async with (
            # Closing it closes its httpx client: left to the GC, that socket's ResourceWarning
            # landed in whichever later test was running (it was test_bench_recovery's).
            client_mod.Client(base_url=memory_app.url("/").rstrip("/")) as client,
            memory_app.ws("/ws/general", params={"account_id": "string"}) as gws,
            memory_app.ws("/2/ws", account=acc) as fws,
        ):
            # seed 000 lines 5997-6007: the doctest body, through the generated model.
            body = models.PublishGeneral.from_dict(
                {
                    "event": {"data": "value"},
                    "event_type": "crowd",
                    "account_id": "string",
                    "event_create_time": "string",
                    "event_end_time": "string",
                }
            )
            response = await publish_general.asyncio_detailed(client=client, body=body)
            assert response.status_code == 204, response.content
            assert (await recv_json(gws))["event"] == {"data": "value"}
            events = models.PublishEvents.from_dict(
                {
                    "events": [{"event_id": "e1"}],
                    "handler_id": "h",
                    "event_create_time": "string",
                    "event_end_time": "string",
                }
            )
            # The header is a str in the generated signature: a UUID-typed one is handed to
            # httpx unconverted and raises TypeError (docs/compatibility.md "API documents").
            annotation = (
                inspect.signature(publish_events.asyncio_detailed)
                .parameters["luna_account_id"]
                .annotation
            )
            assert annotation in ("str", str), annotation
            response = await publish_events.asyncio_detailed(
                client=client, body=events, luna_account_id=acc
            )
            assert response.status_code == 204, response.content
            assert (await recv_json(fws))["event"] == {"event_id": "e1"}
        envelope = models.FaceEnvelope.__attrs_attrs__
        assert all("Any" not in str(a.type) for a in envelope if a.name != "additional_properties")
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == "luna_client" or m.startswith("luna_client.")]:
            del sys.modules[name]
