"""Request monitoring: the original's InfluxDB series, written as line protocol over HTTP.

Series (spec Part 2 §7.5): ``requests`` (every HTTP and websocket request: tags service, route,
status_code; field execution_time), ``errors`` (failed requests, plus error_code) and
``ws_requests`` (every event handed to sockets: tags service, account_id; fields
transport_time — seconds from bus receipt to hand-off — and count). Points are batched and
flushed every ``flushing_period`` seconds to InfluxDB 2's ``/api/v2/write``; a failed flush is
logged and retried with the next batch, up to a bounded backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from luna_sender.plugins.host import BusEvent

if TYPE_CHECKING:
    from luna_sender.web.context import Context

log = logging.getLogger("luna_sender.plugins.monitoring")
SERVICE = "luna-sender"
BACKLOG_MAX = 100_000


class MonitoringSettings(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)  # no timer takes inf or nan

    url: str = Field("http://127.0.0.1:8086", description="InfluxDB 2 origin.")
    organization: str = "luna"
    bucket: str = "luna_monitoring"
    token: str = Field("", description="InfluxDB API token (secret).")
    flushing_period: float = Field(1.0, gt=0)


def _tag(value: object) -> str:
    return (
        str(value).replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")
    )


def line(series: str, tags: dict[str, object], fields: dict[str, float | int], ts_ns: int) -> str:
    tag_text = ",".join(f"{_tag(k)}={_tag(v)}" for k, v in sorted(tags.items()) if v is not None)
    field_text = ",".join(
        f"{k}={v}i" if isinstance(v, int) else f"{k}={v!r}" for k, v in fields.items()
    )
    return f"{series},{tag_text} {field_text} {ts_ns}"


class RequestMonitoring:
    Settings = MonitoringSettings

    def __init__(self, settings: MonitoringSettings) -> None:
        self.settings = settings
        self.points: list[str] = []
        self.written = 0
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self, context: Context) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        self._task = asyncio.create_task(self._flusher(), name="influx-monitoring")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
        if self._session is not None:
            await self._session.close()

    def request_finished(
        self, route: str, status: int, duration: float, error_code: int | None
    ) -> None:
        now = time.time_ns()
        tags = {"service": SERVICE, "route": route, "status_code": status}
        self._add(line("requests", tags, {"execution_time": float(duration)}, now))
        if status >= 400:
            self._add(
                line(
                    "errors",
                    {**tags, "error_code": error_code},
                    {"execution_time": float(duration)},
                    now,
                )
            )

    def event_delivered(self, event: BusEvent) -> None:
        self._add(
            line(
                "ws_requests",
                {"service": SERVICE, "account_id": event.account_id},
                {"transport_time": float(event.transport_time), "count": int(event.delivered)},
                time.time_ns(),
            )
        )

    def _add(self, point: str) -> None:
        if len(self.points) >= BACKLOG_MAX:
            del self.points[: len(self.points) // 10]
        self.points.append(point)

    async def flush(self) -> None:
        if not self.points or self._session is None:
            return
        batch, self.points = self.points, []
        url = f"{self.settings.url.rstrip('/')}/api/v2/write"
        params = {
            "org": self.settings.organization,
            "bucket": self.settings.bucket,
            "precision": "ns",
        }
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self.settings.token:
            headers["Authorization"] = f"Token {self.settings.token}"
        try:
            async with self._session.post(
                url, params=params, data="\n".join(batch), headers=headers
            ) as resp:
                if resp.status >= 300:
                    raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
            self.written += len(batch)
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("monitoring flush failed (%s); keeping %d points", exc, len(batch))
            self.points[:0] = batch

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(self.settings.flushing_period)
            await self.flush()
