"""Logging set-up: every line carries the request id of the request it belongs to.

The id lives in a context variable set by the request middleware; tasks spawned while serving a
request inherit it, and lines outside any request show ``-`` (a call may pass its own
``extra={"request_id": ...}``, e.g. for a socket closed outside its request).

In JSON format every ``extra=`` field of a call (``account_id``, ``route``, ``status``,
``close_code``, ...) becomes a key of its own, so a log pipeline can filter on it without parsing
the message; the text format keeps the message as written.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
from typing import Any

from luna_sender.config.masking import mask_params

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}
_BASE_KEYS = ("time", "level", "logger", "request_id", "message")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        return True


_JSON_SEPARATORS_RE = re.compile("[\x7f-\x9f\u2028\u2029]")


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in _BASE_KEYS:
                data[key] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        # json escapes C0 only; U+2028/2029 and C1 (NEL) would split a line for some readers.
        return _JSON_SEPARATORS_RE.sub(
            _json_escape, json.dumps(data, ensure_ascii=False, default=str)
        )


# Every C0/C1 control character (CR, LF, ESC, VT, FF, RS, NEL ...) and the Unicode line and
# paragraph separators: each can end a line or drive a terminal in some log reader.
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every control character written as ``\\n``, ``\\x1b``, ``\\u2028``...;
    ordinary non-ASCII text (Cyrillic, CJK) is left readable."""
    return _CONTROL_RE.sub(_escape_char, text)


def mask_query(path: str) -> str:
    """A request path as logs may show it: ``/ws?token=eyJ...`` -> ``/ws?token=********``; the
    names masked are those /config masks in a URL's query (config/masking.py), ``jwt`` included.

    The one helper every log line showing a client's path + query goes through (access log,
    "request failed", ...): a JWT in the query is a bearer credential, docs/security.md.
    """
    if "?" not in path:
        return path
    head, _, query = path.partition("?")
    return head + "?" + mask_params(query)


# A request line may hold 1,000 list items (~100 KB): every refused or logged request wrote it
# whole (an outside pass), so a client could make each of its requests cost 100 KB of logs.
PATH_SHOWN = 2048


def clip(path: str) -> str:
    if len(path) <= PATH_SHOWN:
        return path
    return f"{path[:PATH_SHOWN]}... ({len(path)} characters)"


class TextFormatter(logging.Formatter):
    """One record, one line: control characters in a message (a decoded ``%0A`` or ``%1B`` in a
    client's path or query parameter) are escaped, so a client can neither forge a log line nor
    send escape sequences to an operator's terminal. Tracebacks keep their lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            TextFormatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class Throttle:
    """A condition that repeats (a dead webhook, a failing plugin hook, descriptors gone) is
    worth one log line, then at most one per ``interval`` seconds naming how many were held
    back: one line per occurrence would flood the log while the condition lasts."""

    __slots__ = ("_held", "_next", "interval")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next = 0.0
        self._held = 0

    def due(self) -> int | None:
        """None while the last line is recent (this one is counted as held back); else how
        many were held back since it, and the next line waits ``interval`` from now."""
        now = time.monotonic()
        if now < self._next:
            self._held += 1
            return None
        held, self._held, self._next = self._held, 0, now + self.interval
        return held

    def flush(self) -> int:
        """How many were held back since the last line, told now (the condition has ended)."""
        held, self._held = self._held, 0
        if held:
            self._next = time.monotonic() + self.interval
        return held
