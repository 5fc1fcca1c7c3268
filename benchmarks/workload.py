"""Realistic face events (5-20 KB, shaped like the spec's envelope) and their wire forms."""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

PLACEHOLDER = b'"__BENCH_TS__"'


def face_event(rng: random.Random, source: str, size: int) -> dict[str, Any]:
    def uid() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128)))

    detection = {
        "filename": "frame.jpg",
        "detect_time": "2026-11-23T10:00:00.000000+00:00",
        "image_origin": "/6/images/" + uid(),
        "samples": {
            "face": {
                "sample_id": uid(),
                "url": "/6/samples/faces/" + uid(),
                "detection": {
                    "rect": {"x": 100, "y": 120, "width": 80, "height": 96},
                    "landmarks5": [[rng.random() * 100] * 2] * 5,
                    "attributes": {"liveness": {"prediction": "real"}},
                },
            }
        },
    }
    event = {
        "event_id": uid(),
        "url": "/6/events/" + uid(),
        "source": source,
        "stream_id": uid(),
        "tags": ["bench"],
        "external_id": uid(),
        "user_data": "bench",
        "track_id": uid(),
        "location": {
            "city": "Moscow",
            "area": "CAO",
            "district": "mitino",
            "street": "arbat",
            "house_number": "1",
            "geo_position": {"longitude": 37.6, "latitude": 55.7},
        },
        "face_attributes": {
            "attribute_id": uid(),
            "score": 0.99,
            "url": "/6/attributes/" + uid(),
            "basic_attributes": {
                "age": rng.randint(18, 80),
                "gender": rng.randint(0, 1),
                "ethnicities": {"predominant_ethnicity": "asian", "estimations": {"asian": 0.9}},
            },
        },
        "matches": [
            {
                "label": "watchlist",
                "candidates": [
                    {
                        "face": {"face_id": uid(), "user_data": "person", "lists": [uid()]},
                        "similarity": round(rng.random(), 4),
                    }
                    for _ in range(3)
                ],
            }
        ],
        "detections": [detection],
        "aggregate_estimations": {"face": {"attributes": {"liveness": {"prediction": "real"}}}},
        "meta": {"bench_ts": "__BENCH_TS__", "pad": ""},
    }
    base = len(json.dumps(event))
    event["meta"]["pad"] = "x" * max(0, size - base)
    return event


def luna_message(event: dict[str, Any]) -> bytes:
    """The luna-handlers producer format, with a fixed-width timestamp placeholder."""
    text = json.dumps(
        {
            "handler_id": "8b8b5937-2e9c-4e8b-a7a7-5caf86621b5a",
            "Luna-Request-Id": "1700000000,8b8b5937-2e9c-4e8b-a7a7-5caf86621b5a",
            "events": [event],
            "event_create_time": "2026-11-23T10:00:00+00:00",
            "event_end_time": "2026-11-23T10:00:00+00:00",
        },
        separators=(",", ":"),
    )
    data = text.encode()
    assert PLACEHOLDER in data
    return data


def envelope(event: dict[str, Any]) -> bytes:
    """What a subscriber receives; pre-built by the publisher for peers without filters."""
    return json.dumps(
        {
            "event": event,
            "handler_id": "8b8b5937-2e9c-4e8b-a7a7-5caf86621b5a",
            "event-create-time": "2026-11-23T10:00:00+00:00",
            "event-end-time": "2026-11-23T10:00:00+00:00",
            "Luna-Request-id": "1700000000,8b8b5937-2e9c-4e8b-a7a7-5caf86621b5a",
        },
        separators=(",", ":"),
    ).encode()


def stamp(data: bytes, ts: float) -> bytes:
    return data.replace(PLACEHOLDER, b"%.6f" % ts, 1)
