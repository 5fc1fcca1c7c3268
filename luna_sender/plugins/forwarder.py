"""Event forwarder: POSTs every event matching a websocket-style filter to a webhook.

For integrations that cannot hold a websocket. The filter is the same query language as ``/ws``
(or ``/ws/general``) compiled by the same code, and the POST body is exactly the envelope a
websocket would receive. Delivery is at-least-once towards the webhook within ``retries``; the
buffer is bounded (oldest dropped and counted) so a dead webhook cannot grow memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING, Literal

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, model_validator

from luna_sender import wire
from luna_sender.delivery import matching
from luna_sender.filters.base import Limits, parse_uuid
from luna_sender.filters.events import compile_face
from luna_sender.filters.general import compile_general
from luna_sender.plugins.host import BusEvent

if TYPE_CHECKING:
    from luna_sender.web.context import Context

log = logging.getLogger("luna_sender.plugins.forwarder")


class ForwarderSettings(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)  # no timer takes inf or nan

    url: str = Field(description="Webhook URL receiving one POST per matching event.")
    kind: Literal["face", "general"] = "face"
    account_id: str | None = Field(None, description="Account to forward (required for face).")
    filters: dict[str, str] = Field(
        default_factory=dict, description="Query parameters, as on the websocket."
    )
    retries: int = Field(3, ge=0, le=20)
    retry_backoff: float = Field(0.2, ge=0)
    buffer_size: int = Field(1000, ge=1)
    timeout: float = Field(5.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _account_for_face(self) -> ForwarderSettings:
        if self.kind == "face":
            if not self.account_id:
                raise ValueError("account_id is required for face events")
            self.account_id = parse_uuid(self.account_id)
        return self


class EventForwarder:
    Settings = ForwarderSettings

    def __init__(self, settings: ForwarderSettings) -> None:
        self.settings = settings
        compiler = compile_face if settings.kind == "face" else compile_general
        # Bad filters fail here, so the plugin is reported with running: 0.
        self.filter = compiler(list(settings.filters.items()), Limits())
        self.buffer: deque[bytes] = deque(maxlen=settings.buffer_size)
        self.dropped = 0
        self.sent = 0
        self.failed = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self, context: Context) -> None:
        if self.settings.kind == "face":
            assert self.settings.account_id is not None
            await context.hub.pin_account(self.settings.account_id)
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout)
        )
        self._task = asyncio.create_task(self._sender(), name="forwarder")

    async def stop(self) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._flushed(), self.settings.timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    async def _flushed(self) -> None:
        while self.buffer:
            await asyncio.sleep(0.02)

    def event_received(self, event: BusEvent) -> None:
        if event.kind != self.settings.kind:
            return
        if event.kind == "face" and event.account_id != self.settings.account_id:
            return
        try:
            # The hub's own match path: the webhook gets what a socket with this filter would.
            bodies = matching.envelopes(matching.decode(event.kind, event.data), self.filter)
        except wire.PoisonMessage:
            return
        for body in bodies:
            if len(self.buffer) == self.buffer.maxlen:
                self.dropped += 1
                log.warning("forwarder buffer full: dropped the oldest event")
            self.buffer.append(body)
        if bodies:
            self._wake.set()

    async def _post(self, body: bytes) -> bool:
        assert self._session is not None
        headers = {"Content-Type": "application/json", **self.settings.headers}
        for attempt in range(self.settings.retries + 1):
            try:
                async with self._session.post(
                    self.settings.url, data=body, headers=headers
                ) as resp:
                    if resp.status < 300:
                        return True
                    reason = f"HTTP {resp.status}"
            except (TimeoutError, aiohttp.ClientError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if attempt < self.settings.retries:
                await asyncio.sleep(self.settings.retry_backoff * (2**attempt))
        log.error(
            "forwarder gave up on an event after %d attempts: %s", self.settings.retries + 1, reason
        )
        return False

    async def _sender(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.buffer:
                body = self.buffer[0]
                ok = await self._post(body)
                if self.buffer and self.buffer[0] is body:
                    self.buffer.popleft()
                if ok:
                    self.sent += 1
                else:
                    self.failed += 1
