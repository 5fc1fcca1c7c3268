"""The values the face/body filters accept, and their parsers.

Clients send the platform's integer codes; events carry the strings the platform writes. Each
code list is mapped to those strings once, at connect time, so matching compares like with
like. Every error reason here reaches the client in the 12012 answer, so its wording is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from luna_sender.filters.base import Limits, parse_float, parse_int
from luna_sender.filters.common import str_list_parser

Parser = Callable[[str, Limits], Any]

ETHNIC_GROUPS = {1: "african_american", 2: "indian", 3: "asian", 4: "caucasian"}
LIVENESS = {0: "spoof", 1: "real", 2: "unknown"}
DEEPFAKE = {0: "fake", 1: "real"}
MASKS = {1: "missing", 2: "medical_mask", 3: "occluded"}
EMOTIONS = {
    1: "anger",
    2: "disgust",
    3: "fear",
    4: "happiness",
    5: "neutral",
    6: "sadness",
    7: "surprise",
}
EXPANDED_PALETTE = (
    "black",
    "blue",
    "green",
    "gray",
    "orange",
    "purple",
    "red",
    "white",
    "yellow",
    "pink",
    "brown",
    "beige",
    "khaki",
    "multicolored",
    "undefined",
)
SHORT_PALETTE = ("black", "other", "white", "undefined")
SLEEVE_LENGTHS = ("short", "long", "undefined")
LOWER_GARMENT_TYPES = ("trousers", "shorts", "skirt", "undefined")
TAG_MAX_LEN = 36
USER_DATA_MAX_LEN = 128


def codes(table: dict[int, str]) -> Parser:
    """A list of the table's integer codes, parsed into the strings they stand for."""
    lo, hi = min(table), max(table)
    return str_list_parser(item_parser=lambda item: table[parse_int(item, lo, hi)])


def int_range(lo: int, hi: int) -> Parser:
    """A list of integers in ``[lo..hi]`` (enums the platform writes as integers)."""
    return str_list_parser(item_parser=lambda item: parse_int(item, lo, hi))


def words(domain: Iterable[str]) -> Parser:
    """A list of words from a closed domain."""
    allowed = frozenset(domain)

    def word(item: str) -> str:
        if item not in allowed:
            raise ValueError(f"'{item}' is not one of {', '.join(sorted(allowed))}")
        return item

    return str_list_parser(item_parser=word)


TAGS = str_list_parser(
    max_len=TAG_MAX_LEN, too_long="tag '{item}...' is longer than {max_len} characters"
)


def int_bound(lo: int, hi: int) -> Parser:
    """One integer in ``[lo..hi]``: the bound of a ``__gte`` / ``__lt`` filter."""
    return lambda raw, _limits: parse_int(raw, lo, hi)


def similarity_bound(raw: str, _limits: Limits) -> float:
    return parse_float(raw, 0.0, 1.0)


def one_gender(raw: str, _limits: Limits) -> frozenset[int]:
    """A single code, not a list, kept as a set so the field rule reads it like the lists."""
    return frozenset({parse_int(raw, 0, 1)})


def user_data(raw: str, _limits: Limits) -> str:
    if len(raw) > USER_DATA_MAX_LEN:
        raise ValueError(f"longer than {USER_DATA_MAX_LEN} characters")
    return raw
