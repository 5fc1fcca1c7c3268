"""Operator routes at the root: version, healthcheck, config, plugins, metrics, docs."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from aiohttp import web

from luna_sender import VERSION_PARTS, errors, wire
from luna_sender.bus import BusError
from luna_sender.errors import LunaError
from luna_sender.runtime.logs import Throttle
from luna_sender.runtime.metrics import CONTENT_TYPE
from luna_sender.web import access
from luna_sender.web.context import Context, ctx
from luna_sender.web.docs.asyncapi import asyncapi_yaml, build_asyncapi
from luna_sender.web.docs.markdown import render_dev_page, render_openapi_html
from luna_sender.web.docs.openapi import build_document, document_yaml

log = logging.getLogger("luna_sender.service")
_HEALTH_FAILED = Throttle(1.0)


def json_response(data: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=wire.dumps(data), content_type="application/json")


def negotiate(request: web.Request, offered: tuple[str, ...], default: str | None) -> str:
    """Pick the offered type the ``Accept`` header prefers; 415/12024 when none fits."""
    header = request.headers.get("Accept", "")
    if not header.strip():
        if default is None:
            raise LunaError(errors.UNSUPPORTED_MEDIA)
        return default
    choices: list[tuple[float, int, str]] = []
    for order, part in enumerate(header.split(",")):
        fields = [f.strip() for f in part.split(";")]
        mime, quality = fields[0].lower(), 1.0
        for param in fields[1:]:
            if param.startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        if quality > 0:
            choices.append((-quality, order, mime))
    for _q, _o, mime in sorted(choices):
        if mime in offered:
            return mime
        if mime == "*/*" or (mime.endswith("/*") and any(o.startswith(mime[:-1]) for o in offered)):
            return next(o for o in offered if mime == "*/*" or o.startswith(mime[:-1]))
    raise LunaError(errors.UNSUPPORTED_MEDIA)


async def version(request: web.Request) -> web.Response:
    api = ctx(request).settings.api_version
    return json_response({"Version": {"api": api, **VERSION_PARTS}})


async def healthcheck(request: web.Request) -> web.Response:
    started = time.perf_counter()
    context = ctx(request)
    try:
        await context.bus.check()
    except BusError as exc:
        component = "memory" if context.bus.url.startswith("memory") else "redis"
        # The real reason (it may name Redis's address) goes to the log, not to the caller.
        # One line a second: a probe storm against a down bus wrote one per request (an
        # outside pass: 100 identical lines from one burst).
        if (held := _HEALTH_FAILED.due()) is not None:
            more = f" ({held} more since the last report)" if held else ""
            log.info("healthcheck failed: %s%s", exc, more, extra={"component": component})
        err = LunaError(errors.BUS_UNAVAILABLE, exc.public)
        return json_response(
            {
                "errors": [
                    {
                        "component": component,
                        "error": {
                            "error_code": err.kind.code,
                            "desc": err.kind.desc,
                            "detail": err.detail,
                        },
                    }
                ],
                "execution_time": round(time.perf_counter() - started, 6),
            },
            status=502,
        )
    return json_response({"execution_time": round(time.perf_counter() - started, 6)})


def _text_config(data: dict[str, object], prefix: str = "") -> list[str]:
    lines: list[str] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            lines.extend(_text_config(value, name + "."))
        else:
            lines.append(f"{name} = {wire.dumps(value).decode()}")
    return lines


async def config(request: web.Request) -> web.Response:
    access.admit(request, access.SCOPE_ADMIN)
    masked = ctx(request).settings.masked()
    mime = negotiate(request, ("application/json", "text/plain"), "application/json")
    if mime == "text/plain":
        return web.Response(text="\n".join(_text_config(masked)) + "\n", content_type="text/plain")
    return json_response(masked)


async def plugins(request: web.Request) -> web.Response:
    return json_response({"plugins": ctx(request).plugins.status()})


def refresh_bus_gauge(context: Context) -> None:
    """Bus and budget gauges are set at scrape time (and every second by each worker with
    --workers), never per event."""
    context.metrics.connected_gauge.set(1 if context.bus.connected else 0)
    context.metrics.subscribed_channels.set(context.hub.subscribed_channel_count())
    context.metrics.filter_memory.set(context.hub.budgets.filter_bytes)


async def metrics(request: web.Request) -> web.Response:
    """Any worker answers for the whole service with --workers (luna_sender/runtime/metrics.py)."""
    context = ctx(request)
    if not context.settings.metrics.enabled:
        raise LunaError(errors.NOT_FOUND)
    refresh_bus_gauge(context)
    response = web.Response(body=context.metrics.render())
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


async def docs_spec(request: web.Request) -> web.Response:
    settings = ctx(request).settings
    versions, mode = tuple(settings.api_versions), settings.auth.mode
    mime = negotiate(request, ("application/x-yaml", "text/html"), None)
    if mime == "text/html":
        return web.Response(
            text=render_openapi_html(build_document(versions, mode)), content_type="text/html"
        )
    return web.Response(text=document_yaml(versions, mode), content_type="application/x-yaml")


async def docs_dev(request: web.Request) -> web.Response:
    raise web.HTTPFound("/docs/dev/index.html")


async def docs_dev_page(request: web.Request) -> web.Response:
    page = request.match_info["page"]
    if not page:  # /docs/dev/, the folder as a browser or a link writes it
        raise web.HTTPFound("/docs/dev/index.html")
    folder = ctx(request).settings.docs_dir
    html = render_dev_page(page, Path(folder) if folder else None)
    if html is None:
        raise LunaError(errors.NOT_FOUND)
    return web.Response(text=html, content_type="text/html")


async def docs_asyncapi(request: web.Request) -> web.Response:
    """The websocket streams in AsyncAPI 2.6: YAML by default, JSON on request."""
    settings = ctx(request).settings
    versions, mode = tuple(settings.api_versions), settings.auth.mode
    mime = negotiate(request, ("application/x-yaml", "application/json"), "application/x-yaml")
    if mime == "application/json":
        return json_response(build_asyncapi(versions, mode))
    return web.Response(text=asyncapi_yaml(versions, mode), content_type="application/x-yaml")
