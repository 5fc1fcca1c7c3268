"""The face/body event filters of ``/ws`` (spec Part 2 §2.3, decisions in Part 1).

The subject a predicate sees is ``(event, message)``: the event dict unchanged and the
:class:`~luna_sender.wire.FaceMessage` it came in (for ``handler_id``). Field filters read under
the event; their accepted values and parsers live in :mod:`.vocabulary`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import Any

from luna_sender.filters.base import CompiledFilter, FilterSpec, Limits, compile_filters, parse_uuid
from luna_sender.filters.common import str_list_parser
from luna_sender.filters.rules import (
    Match,
    all_of,
    any_of,
    at_least,
    below,
    contains,
    hashable,
    is_number,
    one_of,
    one_of_lowercase,
)
from luna_sender.filters.table import Fields, user_filters
from luna_sender.filters.vocabulary import (
    DEEPFAKE,
    EMOTIONS,
    ETHNIC_GROUPS,
    EXPANDED_PALETTE,
    LIVENESS,
    LOWER_GARMENT_TYPES,
    MASKS,
    SHORT_PALETTE,
    SLEEVE_LENGTHS,
    TAGS,
    codes,
    int_bound,
    int_range,
    one_gender,
    similarity_bound,
    user_data,
    words,
)

Subject = tuple[dict[str, Any], Any]

EVENT = Fields(root=operator.itemgetter(0))
FACE = "face_attributes.basic_attributes."
AGG_FACE = "aggregate_estimations.face.attributes."
BODY = "aggregate_estimations.body.attributes."

# --- rules that are not one field path ----------------------------------------------------------


def _results(event: dict[str, Any]) -> list[Any]:
    matches = event.get("matches")
    return matches if isinstance(matches, list) else []


def _top_similarity(event: dict[str, Any]) -> float | None:
    best: float | None = None
    for result in _results(event):
        candidates = result.get("candidates") if isinstance(result, dict) else None
        if not isinstance(candidates, list):
            continue
        for cand in candidates:
            sim = cand.get("similarity") if isinstance(cand, dict) else None
            if is_number(sim) and (best is None or sim > best):
                best = sim
    return best


def _similarity(holds: Callable[[float, float], bool]) -> Match:
    """The best candidate similarity over all match results stands in ``holds`` to the bound."""

    def match(bound: float, subject: Subject) -> bool:
        top = _top_similarity(subject[0])
        return top is not None and holds(top, bound)

    return match


def _labels(allowed: frozenset[str], subject: Subject) -> bool:
    for result in _results(subject[0]):
        label = result.get("label") if isinstance(result, dict) else None
        if hashable(label) and label in allowed:
            return True
    return False


def _handler_match(allowed: frozenset[Any], subject: Subject) -> bool:
    handler = subject[1].handler_id
    if not isinstance(handler, str):
        return False
    return handler.lower() in allowed


# --- the table ----------------------------------------------------------------------------------

_HEADWEAR_COLORS = EVENT.spec(
    "headwear_colors",
    BODY + "upper_body.headwear.apparent_color",
    words(SHORT_PALETTE),
    any_of,
    "any of colors",
)
_SHOES_COLORS = EVENT.spec(
    "shoes_colors",
    BODY + "lower_body.shoes.apparent_color",
    words(SHORT_PALETTE),
    any_of,
    "any of colors",
)
_AGE = int_bound(0, 100)
_STATES = int_range(0, 2)

FACE_FILTERS: tuple[FilterSpec, ...] = (
    EVENT.spec(
        "sources",
        "source",
        str_list_parser(allow_null=True),
        one_of,
        "event source is one of",
        index="source",
    ),
    EVENT.spec(
        "stream_ids",
        "stream_id",
        str_list_parser(allow_null=True, item_parser=parse_uuid),
        one_of_lowercase,
        "event stream is one of",
        index="stream_id",
    ),
    FilterSpec(
        "handler_ids",
        str_list_parser(item_parser=parse_uuid),
        _handler_match,
        ("handler_id",),
        "message handler is one of",
        index="handler_id",
        event_keys=frozenset(),  # the message's, not the event's
    ),
    FilterSpec(
        "matching_candidates_labels",
        str_list_parser(),
        _labels,
        ("matches[].label",),
        "any match label is one of",
        event_keys=frozenset({"matches"}),
    ),
    FilterSpec(
        "object_similarity__gte",
        similarity_bound,
        _similarity(operator.ge),
        ("matches[].candidates[].similarity",),
        "top similarity >= value",
        event_keys=frozenset({"matches"}),
    ),
    FilterSpec(
        "object_similarity__lt",
        similarity_bound,
        _similarity(operator.lt),
        ("matches[].candidates[].similarity",),
        "top similarity < value",
        event_keys=frozenset({"matches"}),
    ),
    EVENT.spec("age__gte", FACE + "age", _AGE, at_least, "age >= value"),
    EVENT.spec("age__lt", FACE + "age", _AGE, below, "age < value"),
    EVENT.spec("gender", FACE + "gender", one_gender, one_of, "1 male, 0 female"),
    EVENT.spec(
        "ethnic_groups",
        FACE + "ethnicities.predominant_ethnicity",
        codes(ETHNIC_GROUPS),
        one_of,
        "1 african_american, 2 indian, 3 asian, 4 caucasian",
    ),
    EVENT.spec(
        "liveness",
        AGG_FACE + "liveness.prediction",
        codes(LIVENESS),
        one_of,
        "0 spoof, 1 real, 2 unknown",
    ),
    EVENT.spec(
        "deepfake", AGG_FACE + "deepfake.prediction", codes(DEEPFAKE), one_of, "0 fake, 1 real"
    ),
    EVENT.spec(
        "masks",
        AGG_FACE + "mask.predominant_mask",
        codes(MASKS),
        one_of,
        "1 missing, 2 medical_mask, 3 occluded",
    ),
    EVENT.spec(
        "emotions",
        AGG_FACE + "emotions.predominant_emotion",
        codes(EMOTIONS),
        one_of,
        "1 anger, 2 disgust, 3 fear, 4 happiness, 5 neutral, 6 sadness, 7 surprise",
    ),
    EVENT.spec("tags", "tags", TAGS, all_of, "event has all of the tags"),
    EVENT.spec("user_data", "user_data", user_data, contains, "case-sensitive substring"),
    *EVENT.location("one of"),
    EVENT.spec(
        "apparent_gender",
        BODY + "basic_attributes.apparent_gender",
        _STATES,
        one_of,
        "0 female, 1 male, 2 undefined",
    ),
    EVENT.spec(
        "apparent_age__gte", BODY + "basic_attributes.apparent_age", _AGE, at_least, ">= value"
    ),
    EVENT.spec("apparent_age__lt", BODY + "basic_attributes.apparent_age", _AGE, below, "< value"),
    EVENT.spec(
        "headwear_states",
        BODY + "upper_body.headwear.state",
        _STATES,
        one_of,
        "0 absent, 1 present, 2 undefined",
    ),
    EVENT.spec(
        "backpack_states",
        BODY + "accessories.backpack.state",
        _STATES,
        one_of,
        "0 absent, 1 present, 2 undefined",
    ),
    EVENT.spec(
        "sleeve_lengths",
        BODY + "upper_body.sleeve.length",
        words(SLEEVE_LENGTHS),
        one_of,
        "one of",
    ),
    EVENT.spec(
        "upper_clothing_colors",
        BODY + "upper_body.upper_clothing.colors",
        words(EXPANDED_PALETTE),
        any_of,
        "any of",
    ),
    EVENT.spec(
        "lower_garment_colors",
        BODY + "lower_body.lower_garment.colors",
        words(EXPANDED_PALETTE),
        any_of,
        "any of",
    ),
    EVENT.spec(
        "lower_garment_types",
        BODY + "lower_body.lower_garment.type",
        words(LOWER_GARMENT_TYPES),
        one_of,
        "one of",
    ),
    _HEADWEAR_COLORS,
    _SHOES_COLORS,
)

FACE_SPECS: dict[str, FilterSpec] = {spec.name: spec for spec in FACE_FILTERS}
# luna-api's names for two body filters (API v.6.7.0), accepted as aliases.
FACE_SPECS["headwear_apparent_colors"] = _HEADWEAR_COLORS
FACE_SPECS["shoes_apparent_colors"] = _SHOES_COLORS

_META_FILTERS = user_filters(
    "meta", lambda subject: subject[0].get("meta"), event_keys=frozenset({"meta"})
)


def compile_face(query: Iterable[tuple[str, str]], limits: Limits) -> CompiledFilter:
    """Compile the query of one ``/ws`` connection; raises FilterError naming the parameter."""
    return compile_filters(
        FACE_SPECS, query, limits, dynamic=_META_FILTERS, dynamic_count_param="meta.*"
    )
