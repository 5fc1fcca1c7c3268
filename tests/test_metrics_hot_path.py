"""The delivery path's metric updates bypass prometheus-client's own ``inc``/``observe``
(runtime/metrics.py ``_Count``, ``_Observer``): what a scrape shows must not change."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from luna_sender.runtime.metrics import BUCKETS, Metrics, _Observer


def _samples(text: bytes) -> list[bytes]:
    return [line for line in text.splitlines() if b"_created" not in line]


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
    assert _samples(fast.render()) == _samples(reference.render())


def test_bucket_edges_land_where_prometheus_puts_them() -> None:
    """An amount equal to a bound belongs to that bound's bucket (``le``), not the next."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    observer = _Observer(Histogram("h", "h", buckets=BUCKETS, registry=ours))
    histogram = Histogram("h", "h", buckets=BUCKETS, registry=theirs)
    for amount in (*BUCKETS, *(b * 1.000001 for b in BUCKETS), 1e9, -1.0):
        observer.observe(amount)
        histogram.observe(amount)

    assert _samples(generate_latest(ours)) == _samples(generate_latest(theirs))
