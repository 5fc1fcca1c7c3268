"""The one object every handler needs, stored on the application under a typed key."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from luna_sender.bus import Bus
    from luna_sender.config import Settings
    from luna_sender.delivery.hub import Hub
    from luna_sender.plugins.host import PluginManager
    from luna_sender.runtime.metrics import Metrics


@dataclass
class Context:
    settings: Settings
    bus: Bus
    hub: Hub
    metrics: Metrics
    plugins: PluginManager
    started_at: float = field(default_factory=time.time)
    extra: dict[str, Any] = field(default_factory=dict)


CTX: web.AppKey[Context] = web.AppKey("luna_sender_context", Context)


def ctx(request: web.Request) -> Context:
    return request.app[CTX]


REQUEST_ID: web.RequestKey[str] = web.RequestKey("luna_request_id", str)
METRICS_RECORDED: web.RequestKey[bool] = web.RequestKey("luna_metrics_recorded", bool)


def request_id(request: web.Request) -> str:
    return request[REQUEST_ID]
