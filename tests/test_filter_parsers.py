"""The 12012 reasons of the list filters, pinned word for word.

All list filters share one parser (filters/common.py ``str_list_parser``) and differ only in its
options; clients read these reasons, so folding the hand-written parsers into it must not have
changed a word of them.
"""

from __future__ import annotations

import pytest

from luna_sender.filters.base import SUMMARY_MAX, FilterError, Limits
from luna_sender.filters.events import compile_face
from luna_sender.filters.general import compile_general

UUID = "0b8e6b8c-3c1a-4f7e-9d3e-2f5a7c9b1e01"
PALETTE = (
    "beige, black, blue, brown, gray, green, khaki, multicolored, orange, pink, purple, red,"
    " undefined, white, yellow"
)

FACE_CASES = [
    ("tags", "a," + "t" * 50, f"tag '{'t' * 40}...' is longer than 36 characters"),
    ("tags", "a,,b", "empty list item"),
    ("ethnic_groups", "1,5", "5 is out of range [1..4]"),
    ("liveness", "x", "'x' is not an integer"),
    ("emotions", "0", "0 is out of range [1..7]"),
    ("apparent_gender", "3", "3 is out of range [0..2]"),
    ("sleeve_lengths", "short,mid", "'mid' is not one of long, short, undefined"),
    ("upper_clothing_colors", "teal", f"'teal' is not one of {PALETTE}"),
    ("handler_ids", "null", "'null' is not a uuid"),
    ("stream_ids", f"null,{UUID},x", "'x' is not a uuid"),
    ("gender", "0,1", "'0,1' is not an integer"),
    ("user_data", "u" * 129, "longer than 128 characters"),
    ("cities", ",".join(["a"] * 1001), "more than 1000 items"),
]
GENERAL_CASES = [
    ("event_type", "a," + "e" * 129, "event type longer than 128 characters"),
    ("event_type", "", "empty list item"),
    ("stream_ids", "nil", "'nil' is not a uuid"),
    ("account_id", "", "empty account_id"),
    ("account_id", "a" * 257, "account_id longer than 256 characters"),
]


@pytest.mark.parametrize(("name", "raw", "reason"), FACE_CASES)
def test_face_list_reasons(name: str, raw: str, reason: str) -> None:
    with pytest.raises(FilterError) as err:
        compile_face([(name, raw)], Limits())
    assert (err.value.param, err.value.reason) == (name, reason)


@pytest.mark.parametrize(("name", "raw", "reason"), GENERAL_CASES)
def test_general_list_reasons(name: str, raw: str, reason: str) -> None:
    with pytest.raises(FilterError) as err:
        compile_general([(name, raw)], Limits())
    assert (err.value.param, err.value.reason) == (name, reason)


def test_null_and_uuid_case_normalised_once() -> None:
    face = compile_face([("stream_ids", f"null,{UUID.upper()}")], Limits())
    assert face.index == {"stream_id": frozenset({None, UUID})}


def test_a_log_line_shows_at_most_summary_max_characters_of_a_filter() -> None:
    """Every socket's opening and closing is logged with its filters: a 100 KB query must not
    make a 100 KB line (an outside tester wrote 24 MB/s of log churning such sockets)."""
    sources = ",".join(f"camera-{i:04d}" for i in range(1000))
    long = compile_face([("sources", sources)], Limits()).summary()
    assert long.startswith("sources=camera-0000,camera-0001")
    assert len(long) < SUMMARY_MAX + 40 and long.endswith(" characters)"), long[-60:]
    assert compile_face([("sources", "cam-1")], Limits()).summary() == "sources=cam-1"
