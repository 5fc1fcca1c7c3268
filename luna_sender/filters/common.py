"""Value parsers both filter tables use: comma-separated lists and the geo box."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from luna_sender.filters.base import (
    NULL_LITERAL,
    Limits,
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


def str_list_parser(
    allow_null: bool = False,
    max_len: int | None = None,
    item_parser: Callable[[str], Any] | None = None,
    too_long: str = "'{item}' is longer than {max_len} characters",
) -> Callable[[str, Limits], frozenset[Any]]:
    """A comma-separated list parser; the literal ``null`` becomes None where allowed.

    Every list filter goes through here so that all share one item cap and one empty-item rule;
    what differs per filter is the item check (``item_parser`` raises ValueError with the
    reason) and the wording of the length error, which clients already see (``too_long``, with
    ``{item}`` the item's first 40 characters).
    """

    def parse(raw: str, limits: Limits) -> frozenset[Any]:
        out: set[Any] = set()
        for item in split_list(raw, limits):
            if allow_null and item == NULL_LITERAL:
                out.add(None)
                continue
            if max_len is not None and len(item) > max_len:
                raise ValueError(too_long.format(item=item[:40], max_len=max_len))
            out.add(item_parser(item) if item_parser is not None else item)
        return frozenset(out)

    return parse
