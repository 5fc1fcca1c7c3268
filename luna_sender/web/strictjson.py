"""Strict JSON for HTTP bodies: what a publish route takes, and the reason it gives for what it
refuses. A body is parsed by orjson only; the lenient second parse runs on the error path alone,
to name the offending value a client can act on (docs/reliability.md "Refused bodies").
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from luna_sender.wire import MAX_DEPTH


class BadJson(ValueError):
    """An HTTP body that is not strict JSON (RFC 8259); ``path`` names the value when known."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


# A refused body is parsed again leniently (stdlib json, a Python walk) to name the offending
# value. That costs ~0.2 us per byte of the costliest shape (``[1,1,1,...,NaN]``): 1 MiB held
# the loop 0.4 s per request; 32 KiB costs ~6 ms. Above it the answer names no path
# (docs/reliability.md "Refused bodies").
EXPLAIN_MAX_BYTES = 32 * 1024
OUT_OF_RANGE = "number out of the range of a double"
_TOO_LARGE: Any = object()  # the lenient parse's stand-in for a number beyond a double


def loads_json(data: bytes) -> Any:
    """Strict JSON for HTTP bodies (no msgpack); :class:`BadJson` when orjson refuses it.

    On refusal only, the lenient stdlib parser looks for the reason a client can act on
    (NaN/Infinity, a lone surrogate, too deep) and where it is; the fast path pays nothing.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        reason = str(exc)
        if "depth" in reason:
            raise BadJson(f"nesting deeper than {MAX_DEPTH} levels", "") from None
        found = _explain(data)
        if found is None and "infinity when parsed as double" in reason:
            found = BadJson(OUT_OF_RANGE, "")  # too large to look for the path cheaply
        raise found or BadJson(reason) from None


def _number(text: str) -> Any:
    # Integers too: the stdlib turns 309+ digits into an int that no frame (orjson) can carry.
    return _TOO_LARGE if math.isinf(float(text)) else 0


def _explain(data: bytes) -> BadJson | None:
    if len(data) > EXPLAIN_MAX_BYTES:  # the lenient parse and walk must not stall the loop
        return None
    try:
        value = json.loads(data, parse_int=_number, parse_float=_number)
    except (ValueError, RecursionError):
        return None
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ())]
    while stack:  # iterative: the value may be nested close to the recursion limit
        node, path = stack.pop()
        if node is _TOO_LARGE:
            return BadJson(OUT_OF_RANGE, _dotted(path))
        if isinstance(node, float):  # only NaN/Infinity literals: numbers were replaced
            return BadJson("NaN and Infinity are not JSON numbers", _dotted(path))
        if isinstance(node, str) and not _is_utf8(node):
            return BadJson("string holds a lone UTF-16 surrogate", _dotted(path))
        if isinstance(node, dict):
            for key, item in node.items():
                if not _is_utf8(key):
                    return BadJson("key holds a lone UTF-16 surrogate", _dotted(path))
                stack.append((item, (*path, key)))
        elif isinstance(node, list):
            stack.extend((item, (*path, i)) for i, item in enumerate(node))
    return None


def _dotted(path: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in path)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
