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
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, model_validator
from yarl import URL

from luna_sender import wire
from luna_sender.delivery import matching
from luna_sender.filters.base import Limits, parse_uuid
from luna_sender.filters.events import compile_face
from luna_sender.filters.general import compile_general
from luna_sender.plugins.host import BusEvent
from luna_sender.runtime.logs import Throttle

if TYPE_CHECKING:
    from luna_sender.web.context import Context

log = logging.getLogger("luna_sender.plugins.forwarder")

# Seconds stop() waits for the buffer to drain while sends succeed: under the 5 s all plugins'
# stop()s share (plugins/host.py), so the session is still closed by us, not cancelled.
STOP_FLUSH = 3.0
# A dead webhook fails every event: the first failure is logged, then one line this often.
FAILURE_LOG_INTERVAL = 60.0


def credentials_conflict(url: Any, headers: Any) -> str | None:
    """Why ``url`` and ``headers`` cannot go together, or None.

    aiohttp refuses every request that has both ``user:password@`` in its URL and an
    ``Authorization`` header: such a forwarder would send nothing, so it is refused with the
    rest of the settings. Parsed with yarl, as aiohttp does, so the two agree on "userinfo".
    """
    if not isinstance(url, str) or not isinstance(headers, Mapping):
        return None  # the plugin's own validation reports the wrong types
    if not any(str(name).lower() == "authorization" for name in headers):
        return None
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        return None
    if parsed.raw_user is None and parsed.raw_password is None:
        return None
    return (
        "has user:password@ credentials and headers an Authorization header: "
        "no request can carry both, the service would send nothing (keep one of them)"
    )


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
        conflict = credentials_conflict(self.url, self.headers)
        if conflict:
            raise ValueError(f"url {conflict}")
        return self


class _Throttled:
    """A log line that a dead webhook would repeat per event, through a :class:`Throttle`."""

    def __init__(self, level: int) -> None:
        self.level, self._throttle = level, Throttle(FAILURE_LOG_INTERVAL)

    def __call__(self, message: str, *args: object, exc_info: BaseException | None = None) -> None:
        held = self._throttle.due()
        if held is None:
            return
        more = f" ({held} more since the last report)" if held else ""
        log.log(self.level, message + more, *args, exc_info=exc_info)


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
        self._failing = False  # the last attempt failed: stop() does not wait on the buffer
        self._log_dropped = _Throttled(logging.WARNING)
        self._log_failed = _Throttled(logging.ERROR)

    async def start(self, context: Context) -> None:
        if self.settings.kind == "face":
            assert self.settings.account_id is not None
            await context.hub.pin_account(self.settings.account_id)
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout)
        )
        self._task = asyncio.create_task(self._sender(), name="forwarder")

    async def stop(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._flushed(), STOP_FLUSH)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.buffer:
            log.warning(
                "forwarder stopped with %d event(s) not sent",
                len(self.buffer),
                extra={"events": len(self.buffer)},
            )
        if self._session is not None:
            await self._session.close()

    async def _flushed(self) -> None:
        """Returns at once while the webhook fails: retrying at shutdown only delays it."""
        while self.buffer and not self._failing:
            await asyncio.sleep(0.02)

    def event_received(self, event: BusEvent) -> None:
        if event.kind != self.settings.kind:
            return
        if event.kind == "face" and event.account_id != self.settings.account_id:
            return
        try:
            # The hub's own match path: the webhook gets what a socket with this filter would.
            # orjson's fixed bounds: it reads the message again (wire.decode_face)
            bodies = matching.envelopes(matching.decode(event.kind, event.data), self.filter)
        except wire.PoisonMessage:
            return
        for body in bodies:
            if len(self.buffer) == self.buffer.maxlen:
                self.dropped += 1
                self._log_dropped("forwarder buffer full: dropped the oldest event")
            self.buffer.append(body)
        if bodies:
            self._wake.set()

    async def _post(self, body: bytes) -> bool:
        assert self._session is not None
        headers = {"Content-Type": "application/json", **self.settings.headers}
        unexpected: Exception | None = None
        attempts = 0
        while attempts <= self.settings.retries:
            if attempts:
                await asyncio.sleep(self.settings.retry_backoff * (2 ** (attempts - 1)))
            attempts += 1
            try:
                async with self._session.post(
                    self.settings.url, data=body, headers=headers
                ) as resp:
                    if resp.status < 300:
                        self._failing = False
                        return True
                    reason = f"HTTP {resp.status}"
            except (TimeoutError, aiohttp.ClientError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            except Exception as exc:
                # aiohttp refusing to build the request (a ValueError): no retry would differ.
                # Uncaught, it ended the sender task without a word and left the buffer full.
                reason, unexpected = f"{type(exc).__name__}: {exc}", exc
            self._failing = True  # until a success: stop() no longer waits for the buffer
            if unexpected is not None:
                break
        self._log_failed(
            "forwarder gave up on an event after %d attempt(s): %s",
            attempts,
            reason,
            exc_info=unexpected,
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
