"""The general-event filters of ``/ws/general`` (spec Part 2 §3).

The subject a predicate sees is the general message (:class:`~luna_sender.wire.GeneralMessage`).
Location, stream and source filters read the general event's own fields inside ``event`` (spec
§3.1 assumption); user-defined ``event.<path>`` filters read the ``event`` object.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any, Protocol

from luna_sender.filters.base import CompiledFilter, FilterSpec, Limits, compile_filters, parse_uuid
from luna_sender.filters.common import str_list_parser
from luna_sender.filters.rules import one_of, one_of_lowercase
from luna_sender.filters.table import Fields, user_filters

EVENT_TYPE_MAX = 128
ACCOUNT_ID_MAX = 256  # the publish route's cap on account_id (web/publish.py)


class GeneralSubject(Protocol):
    """What the general filters read of a message: the filters need not know the wire."""

    @property
    def event(self) -> dict[str, Any]: ...
    @property
    def event_type(self) -> object: ...
    @property
    def account_id(self) -> object: ...


EVENT = Fields(root=operator.attrgetter("event"), prefix="event.")


def _type_match(allowed: frozenset[str], msg: GeneralSubject) -> bool:
    return isinstance(msg.event_type, str) and msg.event_type in allowed


def _account(raw: str, _limits: Limits) -> str:
    """Any non-empty string, kept as given: the contract matches it exactly, case included,
    so one account's subscriber can never be widened onto a look-alike id."""
    if not raw:
        raise ValueError("empty account_id")
    if len(raw) > ACCOUNT_ID_MAX:
        raise ValueError(f"account_id longer than {ACCOUNT_ID_MAX} characters")
    return raw


def _account_match(account: str, msg: GeneralSubject) -> bool:
    return msg.account_id == account


GENERAL_FILTERS: tuple[FilterSpec, ...] = (
    FilterSpec(
        "event_type",
        str_list_parser(
            max_len=EVENT_TYPE_MAX, too_long="event type longer than {max_len} characters"
        ),
        _type_match,
        ("event_type",),
        "one of the types",
        index="event_type",
    ),
    FilterSpec(
        "account_id",
        _account,
        _account_match,
        ("account_id",),
        "events of this account only",
        index=None,
    ),
    EVENT.spec(
        "stream_ids",
        "stream_id",
        str_list_parser(allow_null=True, item_parser=parse_uuid),
        one_of_lowercase,
        "one of (null: missing)",
    ),
    EVENT.spec(
        "sources", "source", str_list_parser(allow_null=True), one_of, "one of (null: missing)"
    ),
    *EVENT.location("one of (null: missing)"),
)
GENERAL_SPECS: dict[str, FilterSpec] = {spec.name: spec for spec in GENERAL_FILTERS}

_EVENT_FILTERS = user_filters("event", EVENT.root)


def compile_general(query: Iterable[tuple[str, str]], limits: Limits) -> CompiledFilter:
    """Compile the query of one ``/ws/general`` connection; FilterError names the parameter."""
    return compile_filters(
        GENERAL_SPECS, query, limits, dynamic=_EVENT_FILTERS, dynamic_count_param="event.*"
    )
