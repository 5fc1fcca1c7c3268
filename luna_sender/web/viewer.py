"""The live event viewer: a static page plus two small helpers browsers need.

Browsers cannot set headers on a websocket, so ``/viewer/ws`` takes the account from the
``account_id`` query parameter and is otherwise exactly ``/ws`` (recovery included: the page
resumes with ``since`` after a reconnect, #18); and browsers hide the HTTP error of a refused
handshake, so ``/viewer/validate`` answers the same LUNA error (or 204) first.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from luna_sender import errors
from luna_sender.errors import LunaError
from luna_sender.filters.base import parse_uuid
from luna_sender.filters.events import compile_face
from luna_sender.filters.general import compile_general
from luna_sender.web import access
from luna_sender.web.streams import RECOVERY_PARAMS, compile_filter, recovery_of, serve_socket
from luna_sender.web.turns import HANDSHAKES

STATIC = {
    "viewer.js": "application/javascript",
    "viewer.css": "text/css",
    "viewer.html": "text/html",
}
INDEX = """<!doctype html><html><head><meta charset="utf-8"><title>luna-sender</title>
<style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:40rem}</style></head><body>
<h1>luna-sender</h1><p>Real-time face/body and general event gateway.</p><ul>
<li><a href="/viewer">Live event viewer</a></li><li><a href="/docs/dev">Developer manual</a></li>
<li><a href="/docs/spec">API (OpenAPI)</a></li><li><a href="/healthcheck">Health</a> ·
<a href="/metrics">Metrics</a> · <a href="/version">Version</a></li></ul></body></html>"""


def _static(name: str) -> bytes:
    return resources.files("luna_sender").joinpath("static", name).read_bytes()


async def index(request: web.Request) -> web.Response:
    return web.Response(text=INDEX, content_type="text/html")


async def viewer_page(request: web.Request) -> web.Response:
    return web.Response(body=_static("viewer.html"), content_type="text/html")


async def static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC:
        raise LunaError(errors.NOT_FOUND)
    return web.Response(body=_static(name), content_type=STATIC[name])


def _split(request: web.Request, drop: set[str]) -> list[tuple[str, str]]:
    """The filter compiler's query: recover/since are the stream's, never filters."""
    return access.filter_query(request, frozenset(drop) | RECOVERY_PARAMS)


def _account(request: web.Request) -> str:
    raw = access.single_param(request, "account_id")
    if raw is None:
        raise LunaError(errors.NO_ACCOUNT)
    try:
        return parse_uuid(raw)
    except ValueError:
        raise LunaError(errors.BAD_QUERY, "account_id") from None


async def validate(request: web.Request) -> web.Response:
    kinds = request.query.getall("kind", ["face"])
    if len(kinds) > 1:  # which stream was meant is unknowable, as for a repeated filter
        raise LunaError(errors.BAD_QUERY, "kind")
    kind = kinds[0]
    principal = access.authenticate(request)  # same answers as the handshake, readable here
    if kind == "face":
        _viewer_account(request, principal)
        compile_filter(compile_face, request, _split(request, {"kind", "account_id"}))
    elif kind == "general":
        query = access.general_query(request, principal, frozenset({"kind"}) | RECOVERY_PARAMS)
        compile_filter(compile_general, request, query)
    else:
        raise LunaError(errors.BAD_QUERY, "kind")
    recovery = recovery_of(request)  # a bad recover value is refused here too, as the 403 below
    if kind == "general":
        access.general_recovery(principal, recovery.recover)
    return web.Response(status=204)


def _viewer_account(request: web.Request, principal: access.Principal | None) -> str:
    if principal is None:
        return _account(request)
    return access.token_account(request, principal, "account_id")


async def viewer_ws(request: web.Request) -> web.StreamResponse:
    async with HANDSHAKES.turn(len(request.raw_path)):  # web/turns.py
        account = _viewer_account(request, access.admit_ws(request))
        compiled = compile_filter(compile_face, request, _split(request, {"account_id"}))
        recovery = recovery_of(request)
    return await serve_socket(request, "face", compiled, account, recovery)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/viewer", viewer_page)
    app.router.add_get("/viewer/validate", validate)
    app.router.add_get("/viewer/ws", viewer_ws, allow_head=False)
    app.router.add_get("/static/{name}", static_file)
