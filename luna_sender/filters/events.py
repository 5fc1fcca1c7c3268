"""The face/body event filters of ``/ws`` (spec Part 2 §2.3, decisions in Part 1).

The subject a predicate sees is ``(event, message)``: the event dict unchanged and the
:class:`~luna_sender.wire.FaceMessage` it came in (for ``handler_id``). Integer enum filters are
mapped to the strings the platform writes into events once, at parse time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from luna_sender.filters.base import (
    CompiledFilter,
    DynamicFilter,
    FilterSpec,
    Limits,
    compile_filters,
    get_path,
    parse_float,
    parse_int,
    parse_uuid,
    split_list,
)
from luna_sender.filters.common import field_in, geo_match, parse_geo, str_list_parser
from luna_sender.filters.userdef import compile_user_filter

Subject = tuple[dict[str, Any], Any]

FACE_ATTRS = ("face_attributes", "basic_attributes")
AGG_FACE = ("aggregate_estimations", "face", "attributes")
AGG_BODY = ("aggregate_estimations", "body", "attributes")

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


def _hashable(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) or value is None


# --- parsers -------------------------------------------------------------------------------


def _code_list(table: dict[int, str]) -> Callable[[str, Limits], frozenset[Any]]:
    lo, hi = min(table), max(table)

    def parse(raw: str, limits: Limits) -> frozenset[Any]:
        return frozenset(table[parse_int(item, lo, hi)] for item in split_list(raw, limits))

    return parse


def _int_enum_list(lo: int, hi: int) -> Callable[[str, Limits], frozenset[Any]]:
    def parse(raw: str, limits: Limits) -> frozenset[Any]:
        return frozenset(parse_int(item, lo, hi) for item in split_list(raw, limits))

    return parse


def _word_list(domain: Iterable[str]) -> Callable[[str, Limits], frozenset[Any]]:
    allowed = frozenset(domain)

    def parse(raw: str, limits: Limits) -> frozenset[Any]:
        items = split_list(raw, limits)
        for item in items:
            if item not in allowed:
                raise ValueError(f"'{item}' is not one of {', '.join(sorted(allowed))}")
        return frozenset(items)

    return parse


def _uuid_list(allow_null: bool) -> Callable[[str, Limits], frozenset[Any]]:
    def parse(raw: str, limits: Limits) -> frozenset[Any]:
        out: set[Any] = set()
        for item in split_list(raw, limits):
            out.add(None if allow_null and item == "null" else parse_uuid(item))
        return frozenset(out)

    return parse


def _int_bound(lo: int, hi: int) -> Callable[[str, Limits], int]:
    return lambda raw, _limits: parse_int(raw, lo, hi)


def _float_bound(raw: str, _limits: Limits) -> float:
    return parse_float(raw, 0.0, 1.0)


def _tags(raw: str, limits: Limits) -> frozenset[str]:
    items = split_list(raw, limits)
    for item in items:
        if len(item) > TAG_MAX_LEN:
            raise ValueError(f"tag '{item[:40]}...' is longer than {TAG_MAX_LEN} characters")
    return frozenset(items)


def _user_data(raw: str, _limits: Limits) -> str:
    if len(raw) > 128:
        raise ValueError("longer than 128 characters")
    return raw


# --- match rules ---------------------------------------------------------------------------


def _event_root(subject: Subject) -> dict[str, Any]:
    return subject[0]


def _field_in(path: tuple[str, ...], lowercase: bool = False) -> Callable[[Any, Subject], bool]:
    return field_in(path, _event_root, lowercase)


def _field_intersects(path: tuple[str, ...]) -> Callable[[Any, Subject], bool]:
    """A list field (or a scalar) shares at least one value with the set."""

    def match(allowed: frozenset[Any], subject: Subject) -> bool:
        value = get_path(subject[0], path)
        if isinstance(value, list):
            return any(_hashable(v) and v in allowed for v in value)
        return _hashable(value) and value is not None and value in allowed

    return match


def _number_at(path: tuple[str, ...], subject: Subject) -> float | None:
    value = get_path(subject[0], path)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def _gte(path: tuple[str, ...]) -> Callable[[Any, Subject], bool]:
    def match(bound: float, subject: Subject) -> bool:
        value = _number_at(path, subject)
        return value is not None and value >= bound

    return match


def _lt(path: tuple[str, ...]) -> Callable[[Any, Subject], bool]:
    def match(bound: float, subject: Subject) -> bool:
        value = _number_at(path, subject)
        return value is not None and value < bound

    return match


def _top_similarity(event: dict[str, Any]) -> float | None:
    best: float | None = None
    matches = event.get("matches")
    if not isinstance(matches, list):
        return None
    for result in matches:
        candidates = result.get("candidates") if isinstance(result, dict) else None
        if not isinstance(candidates, list):
            continue
        for cand in candidates:
            sim = cand.get("similarity") if isinstance(cand, dict) else None
            numeric = isinstance(sim, (int, float)) and not isinstance(sim, bool)
            if numeric and (best is None or sim > best):
                best = sim
    return best


def _similarity_gte(bound: float, subject: Subject) -> bool:
    top = _top_similarity(subject[0])
    return top is not None and top >= bound


def _similarity_lt(bound: float, subject: Subject) -> bool:
    top = _top_similarity(subject[0])
    return top is not None and top < bound


def _labels(allowed: frozenset[str], subject: Subject) -> bool:
    matches = subject[0].get("matches")
    if not isinstance(matches, list):
        return False
    for result in matches:
        label = result.get("label") if isinstance(result, dict) else None
        if _hashable(label) and label in allowed:
            return True
    return False


def _tags_match(wanted: frozenset[str], subject: Subject) -> bool:
    tags = subject[0].get("tags")
    if not isinstance(tags, list):
        return False
    return wanted.issubset(t for t in tags if isinstance(t, str))


def _user_data_match(needle: str, subject: Subject) -> bool:
    value = subject[0].get("user_data")
    return isinstance(value, str) and needle in value


def _handler_match(allowed: frozenset[Any], subject: Subject) -> bool:
    handler = subject[1].handler_id
    if not isinstance(handler, str):
        return False
    return handler.lower() in allowed


def _geo(box: Any, subject: Subject) -> bool:
    return geo_match(box, subject[0])


def _spec(
    name: str, parse: Any, match: Any, fields: str, description: str, index: str | None = None
) -> FilterSpec:
    return FilterSpec(
        name=name, parse=parse, match=match, fields=(fields,), description=description, index=index
    )


def _body(*path: str) -> tuple[str, ...]:
    return (*AGG_BODY, *path)


_HEADWEAR_COLORS = _spec(
    "headwear_colors",
    _word_list(SHORT_PALETTE),
    _field_intersects(_body("upper_body", "headwear", "apparent_color")),
    "aggregate_estimations.body.attributes.upper_body.headwear.apparent_color",
    "any of colors",
)
_SHOES_COLORS = _spec(
    "shoes_colors",
    _word_list(SHORT_PALETTE),
    _field_intersects(_body("lower_body", "shoes", "apparent_color")),
    "aggregate_estimations.body.attributes.lower_body.shoes.apparent_color",
    "any of colors",
)

FACE_FILTERS: tuple[FilterSpec, ...] = (
    _spec(
        "sources",
        str_list_parser(allow_null=True),
        _field_in(("source",)),
        "source",
        "event source is one of",
        index="source",
    ),
    _spec(
        "stream_ids",
        _uuid_list(allow_null=True),
        _field_in(("stream_id",), lowercase=True),
        "stream_id",
        "event stream is one of",
        index="stream_id",
    ),
    _spec(
        "handler_ids",
        _uuid_list(allow_null=False),
        _handler_match,
        "handler_id",
        "message handler is one of",
        index="handler_id",
    ),
    _spec(
        "matching_candidates_labels",
        str_list_parser(allow_null=False),
        _labels,
        "matches[].label",
        "any match label is one of",
    ),
    _spec(
        "object_similarity__gte",
        _float_bound,
        _similarity_gte,
        "matches[].candidates[].similarity",
        "top similarity >= value",
    ),
    _spec(
        "object_similarity__lt",
        _float_bound,
        _similarity_lt,
        "matches[].candidates[].similarity",
        "top similarity < value",
    ),
    _spec(
        "age__gte",
        _int_bound(0, 100),
        _gte((*FACE_ATTRS, "age")),
        "face_attributes.basic_attributes.age",
        "age >= value",
    ),
    _spec(
        "age__lt",
        _int_bound(0, 100),
        _lt((*FACE_ATTRS, "age")),
        "face_attributes.basic_attributes.age",
        "age < value",
    ),
    _spec(
        "gender",
        lambda raw, _l: frozenset({parse_int(raw, 0, 1)}),
        _field_in((*FACE_ATTRS, "gender")),
        "face_attributes.basic_attributes.gender",
        "1 male, 0 female",
    ),
    _spec(
        "ethnic_groups",
        _code_list(ETHNIC_GROUPS),
        _field_in((*FACE_ATTRS, "ethnicities", "predominant_ethnicity")),
        "face_attributes.basic_attributes.ethnicities.predominant_ethnicity",
        "1 african_american, 2 indian, 3 asian, 4 caucasian",
    ),
    _spec(
        "liveness",
        _code_list(LIVENESS),
        _field_in((*AGG_FACE, "liveness", "prediction")),
        "aggregate_estimations.face.attributes.liveness.prediction",
        "0 spoof, 1 real, 2 unknown",
    ),
    _spec(
        "deepfake",
        _code_list(DEEPFAKE),
        _field_in((*AGG_FACE, "deepfake", "prediction")),
        "aggregate_estimations.face.attributes.deepfake.prediction",
        "0 fake, 1 real",
    ),
    _spec(
        "masks",
        _code_list(MASKS),
        _field_in((*AGG_FACE, "mask", "predominant_mask")),
        "aggregate_estimations.face.attributes.mask.predominant_mask",
        "1 missing, 2 medical_mask, 3 occluded",
    ),
    _spec(
        "emotions",
        _code_list(EMOTIONS),
        _field_in((*AGG_FACE, "emotions", "predominant_emotion")),
        "aggregate_estimations.face.attributes.emotions.predominant_emotion",
        "1 anger, 2 disgust, 3 fear, 4 happiness, 5 neutral, 6 sadness, 7 surprise",
    ),
    _spec("tags", _tags, _tags_match, "tags", "event has all of the tags"),
    _spec("user_data", _user_data, _user_data_match, "user_data", "case-sensitive substring"),
    _spec(
        "geo_position",
        lambda raw, limits: parse_geo(raw, limits),
        _geo,
        "location.geo_position",
        "inside origin +- delta",
    ),
    _spec(
        "cities",
        str_list_parser(allow_null=True),
        _field_in(("location", "city")),
        "location.city",
        "one of",
    ),
    _spec(
        "areas",
        str_list_parser(allow_null=True),
        _field_in(("location", "area")),
        "location.area",
        "one of",
    ),
    _spec(
        "districts",
        str_list_parser(allow_null=True),
        _field_in(("location", "district")),
        "location.district",
        "one of",
    ),
    _spec(
        "streets",
        str_list_parser(allow_null=True),
        _field_in(("location", "street")),
        "location.street",
        "one of",
    ),
    _spec(
        "house_numbers",
        str_list_parser(allow_null=True),
        _field_in(("location", "house_number")),
        "location.house_number",
        "one of",
    ),
    _spec(
        "apparent_gender",
        _int_enum_list(0, 2),
        _field_in(_body("basic_attributes", "apparent_gender")),
        "aggregate_estimations.body.attributes.basic_attributes.apparent_gender",
        "0 female, 1 male, 2 undefined",
    ),
    _spec(
        "apparent_age__gte",
        _int_bound(0, 100),
        _gte(_body("basic_attributes", "apparent_age")),
        "aggregate_estimations.body.attributes.basic_attributes.apparent_age",
        ">= value",
    ),
    _spec(
        "apparent_age__lt",
        _int_bound(0, 100),
        _lt(_body("basic_attributes", "apparent_age")),
        "aggregate_estimations.body.attributes.basic_attributes.apparent_age",
        "< value",
    ),
    _spec(
        "headwear_states",
        _int_enum_list(0, 2),
        _field_in(_body("upper_body", "headwear", "state")),
        "aggregate_estimations.body.attributes.upper_body.headwear.state",
        "0 absent, 1 present, 2 undefined",
    ),
    _spec(
        "backpack_states",
        _int_enum_list(0, 2),
        _field_in(_body("accessories", "backpack", "state")),
        "aggregate_estimations.body.attributes.accessories.backpack.state",
        "0 absent, 1 present, 2 undefined",
    ),
    _spec(
        "sleeve_lengths",
        _word_list(SLEEVE_LENGTHS),
        _field_in(_body("upper_body", "sleeve", "length")),
        "aggregate_estimations.body.attributes.upper_body.sleeve.length",
        "one of",
    ),
    _spec(
        "upper_clothing_colors",
        _word_list(EXPANDED_PALETTE),
        _field_intersects(_body("upper_body", "upper_clothing", "colors")),
        "aggregate_estimations.body.attributes.upper_body.upper_clothing.colors",
        "any of",
    ),
    _spec(
        "lower_garment_colors",
        _word_list(EXPANDED_PALETTE),
        _field_intersects(_body("lower_body", "lower_garment", "colors")),
        "aggregate_estimations.body.attributes.lower_body.lower_garment.colors",
        "any of",
    ),
    _spec(
        "lower_garment_types",
        _word_list(LOWER_GARMENT_TYPES),
        _field_in(_body("lower_body", "lower_garment", "type")),
        "aggregate_estimations.body.attributes.lower_body.lower_garment.type",
        "one of",
    ),
    _HEADWEAR_COLORS,
    _SHOES_COLORS,
)

FACE_SPECS: dict[str, FilterSpec] = {spec.name: spec for spec in FACE_FILTERS}
# luna-api's names for two body filters (API v.6.7.0), accepted as aliases.
FACE_SPECS["headwear_apparent_colors"] = _HEADWEAR_COLORS
FACE_SPECS["shoes_apparent_colors"] = _SHOES_COLORS


def _meta_filter(name: str, raw: str, limits: Limits) -> DynamicFilter | None:
    compiled = compile_user_filter("meta", name, raw, limits)
    if compiled is None:
        return None
    predicate = compiled.predicate

    def match(subject: Subject) -> bool:
        meta = subject[0].get("meta")
        return isinstance(meta, dict) and predicate(meta)

    return dataclasses.replace(compiled, predicate=match)


def compile_face(query: Iterable[tuple[str, str]], limits: Limits) -> CompiledFilter:
    """Compile the query of one ``/ws`` connection; raises FilterError naming the parameter."""
    return compile_filters(
        FACE_SPECS, query, limits, dynamic=_meta_filter, dynamic_count_param="meta.*"
    )
