"""Filter pieces shared by the face/body and general-event tables (geo box, string lists)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from luna_sender.filters.base import (
    MISSING,
    NULL_LITERAL,
    Limits,
    get_path,
    parse_float,
    split_list,
)

GEO_DEFAULT_DELTA = 0.01
GEO_KEYS = ("origin_longitude", "origin_latitude", "longitude_delta", "latitude_delta")


@dataclass(frozen=True, slots=True)
class GeoBox:
    lon_min: float
    lon_max: float
    lat_min: float
    lat_max: float


def parse_geo(raw: str, limits: Limits) -> GeoBox:
    """``origin_longitude,<lon>,origin_latitude,<lat>[,longitude_delta,<d>][,latitude_delta,<d>]``."""
    items = raw.split(",")
    if len(items) % 2 or len(items) > 2 * len(GEO_KEYS):
        raise ValueError("expected comma-separated key,value pairs")
    values: dict[str, float] = {}
    for key, value in zip(items[::2], items[1::2], strict=True):
        if key not in GEO_KEYS:
            raise ValueError(f"unknown key '{key}'")
        if key in values:
            raise ValueError(f"key '{key}' given twice")
        if key == "origin_longitude":
            values[key] = parse_float(value, -180.0, 180.0)
        elif key == "origin_latitude":
            values[key] = parse_float(value, -90.0, 90.0)
        else:
            delta = parse_float(value, 0.0, 90.0)
            if delta <= 0:
                raise ValueError(f"{key} must be greater than 0")
            values[key] = delta
    for key in GEO_KEYS[:2]:
        if key not in values:
            raise ValueError(f"'{key}' is required")
    lon, lat = values["origin_longitude"], values["origin_latitude"]
    dlon = values.get("longitude_delta", GEO_DEFAULT_DELTA)
    dlat = values.get("latitude_delta", GEO_DEFAULT_DELTA)
    return GeoBox(lon - dlon, lon + dlon, lat - dlat, lat + dlat)


def geo_match(box: GeoBox, obj: Any) -> bool:
    """``obj['location']['geo_position']`` lies inside the box (edges included)."""
    pos = get_path(obj, ("location", "geo_position"))
    if not isinstance(pos, dict):
        return False
    lon, lat = pos.get("longitude"), pos.get("latitude")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lon, lat)):
        return False
    return box.lon_min <= lon <= box.lon_max and box.lat_min <= lat <= box.lat_max  # type: ignore[operator]


def field_in(
    path: tuple[str, ...], root: Callable[[Any], Any], lowercase: bool = False
) -> Callable[[Any, Any], bool]:
    """Match rule: the scalar at ``path`` (under ``root(subject)``) is in the accepted set.

    A missing or null field matches only a ``null`` item (None in the set); booleans and
    containers never match.
    """

    def match(allowed: frozenset[Any], subject: Any) -> bool:
        value = get_path(root(subject), path)
        if value is MISSING or value is None:
            return None in allowed
        if lowercase and isinstance(value, str):
            value = value.lower()
        return (
            isinstance(value, (str, int, float))
            and not isinstance(value, bool)
            and value in allowed
        )

    return match


def str_list_parser(
    allow_null: bool,
    max_len: int | None = None,
    item_parser: Callable[[str], Any] | None = None,
) -> Callable[[str, Limits], frozenset[Any]]:
    """A comma-separated list parser; the literal ``null`` becomes None where allowed."""

    def parse(raw: str, limits: Limits) -> frozenset[Any]:
        out: set[Any] = set()
        for item in split_list(raw, limits):
            if allow_null and item == NULL_LITERAL:
                out.add(None)
                continue
            if max_len is not None and len(item) > max_len:
                raise ValueError(f"'{item[:40]}' is longer than {max_len} characters")
            out.add(item_parser(item) if item_parser is not None else item)
        return frozenset(out)

    return parse
