"""The delivery path's metric updates bypass prometheus-client's own ``inc``/``observe`` and are
held until a scrape folds them in (runtime/held.py): what a scrape
shows must not change. A histogram's sum is added once per fold rather than per amount, so only
its last bits may differ."""

from __future__ import annotations

import math
import random
import time

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from luna_sender.runtime.held import HeldObserver
from luna_sender.runtime.metrics import BUCKETS, HELD_MAX, Metrics


def _samples(text: bytes) -> list[bytes]:
    return [line for line in text.splitlines() if b"_created" not in line]


def _same(ours: bytes, theirs: bytes) -> None:
    """Every sample equal, but a ``_sum`` only to within float rounding."""
    mine, reference = _samples(ours), _samples(theirs)
    assert len(mine) == len(reference)
    for a, b in zip(mine, reference, strict=True):
        if b"_sum{" in b or b"_sum " in b:
            (name_a, value_a), (name_b, value_b) = a.rsplit(b" ", 1), b.rsplit(b" ", 1)
            assert name_a == name_b and math.isclose(float(value_a), float(value_b)), (a, b)
        else:
            assert a == b


def test_fast_updates_render_what_prometheus_client_would() -> None:
    rng = random.Random(5)
    fast, reference = Metrics({"site": "a"}), Metrics({"site": "a"})
    for _ in range(2000):
        kind = rng.choice(("face", "general"))
        amount = rng.choice((*BUCKETS, rng.random() * 40, 0.0))
        sent = rng.randint(1, 5)
        fast.received[kind].inc()
        fast.delivered[kind].inc(sent)
        fast.latency[kind].observe(amount)
        fast.producer_lag[kind].observe(amount * 3)
        reference.events_received.labels("a", kind).inc()
        reference.events_delivered.labels("a", kind).inc(sent)
        reference.delivery_latency.labels("a", kind).observe(amount)
        reference.producer_latency.labels("a", kind).observe(amount * 3)
    _same(fast.render(), reference.render())
    # Held updates are folded once: a second scrape shows the same values, a later update adds.
    _same(fast.render(), reference.render())
    fast.received["face"].inc()
    reference.events_received.labels("a", "face").inc()
    _same(fast.render(), reference.render())


def test_bucket_edges_land_where_prometheus_puts_them() -> None:
    """An amount equal to a bound belongs to that bound's bucket (``le``), not the next."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    observer = HeldObserver(Histogram("h", "h", buckets=BUCKETS, registry=ours))
    histogram = Histogram("h", "h", buckets=BUCKETS, registry=theirs)
    for amount in (*BUCKETS, *(b * 1.000001 for b in BUCKETS), 1e9, -1.0):
        observer.observe(amount)
        histogram.observe(amount)
    observer.fold()
    _same(generate_latest(ours), generate_latest(theirs))


def _value(text: bytes, name: bytes, kind: bytes = b"face") -> float:
    (line,) = [ln for ln in text.splitlines() if ln.startswith(name + b'{kind="' + kind)]
    return float(line.rsplit(b" ", 1)[1])


def test_held_latencies_reach_the_next_scrape_with_the_producer_time_rules() -> None:
    metrics = Metrics()
    received = time.perf_counter()
    for create_time in (
        "2020-01-01T00:00:00",  # no offset: taken as UTC
        "2999-01-01T00:00:00+00:00",  # in the future (clock skew): not observed
        "not a time",  # unparsable: not observed
        None,  # missing: not observed
    ):
        metrics.delivered_message("face", received, create_time)
    text = metrics.render()
    assert _value(text, b"event_delivery_seconds_count") == 4
    assert _value(text, b"event_producer_latency_seconds_count") == 1
    lag = _value(text, b"event_producer_latency_seconds_sum")
    assert math.isclose(lag, time.time() - 1577836800, abs_tol=5)  # 2020-01-01 UTC


def test_held_latencies_are_observed_in_bounded_batches_without_a_scrape() -> None:
    metrics = Metrics()
    for _ in range(10 * HELD_MAX + 3):
        metrics.delivered_message("general", time.perf_counter(), None)
    assert len(metrics._held) < HELD_MAX  # memory stays bounded between scrapes
    text = metrics.render()
    assert _value(text, b"event_delivery_seconds_count", b"general") == 10 * HELD_MAX + 3
