"""Prometheus metrics, one registry per application (tests run several apps in one process).

Names follow the original where it documents them (``request_count_total``, ``errors_count_total``
with ``path="METHOD:/route"``, the ``requests`` duration histogram); the rest are this service's
own and are listed in docs/metrics.md. The delivery path's four metrics are held in pre-bound
objects and added to the exposed values when a scrape (or, with workers, a 1-s timer) folds them.

With ``--workers N`` every worker writes its values to prometheus-client's multiprocess files (the
supervisor sets the folder, luna_sender/cli/workers.py) and a scrape renders all workers' files, so
any worker answers for the whole service. Counters and histograms are summed over every worker
that ever ran (a replaced worker's totals stay). A gauge has no meaningful sum by default, so
EVERY gauge must say how workers combine: ``multiprocess_mode=`` one of the ``live*`` modes
(``livesum``, ``livemin``, ``livemax``), so a dead worker's value disappears with it. A test
(tests/test_workers.py) rejects a gauge declared without one. With one worker the values stay
in memory and nothing of this applies.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from luna_sender.runtime import fdlimit, sockets
from luna_sender.runtime.held import HeldCount, HeldObserver

BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
CONTENT_TYPE = CONTENT_TYPE_LATEST
KINDS = ("face", "general")
# Delivered bus messages whose latencies are observed together (Metrics.delivered_message).
HELD_MAX = 256
# Requests the HTTP parser refused (414, 431, a malformed head) by (status, error code): counted
# in web/httpd.py, where no route or app is known yet, and folded under the path ``unknown``.
REFUSED: Tally[tuple[int, int]] = Tally()
UNPARSED = "unknown"
# Every label a metric below declares (plus Prometheus' reserved ``le``/``quantile``, and the
# ``pid`` prometheus-client's multiprocess mode gives gauges with --workers): config rejects a
# ``metrics.extra_labels`` name among them; a test keeps the set complete.
OWN_LABELS = frozenset(
    {"path", "status_code", "error_code", "kind", "reason", "generation", "le", "quantile", "pid"}
) | {"outcome"}  # recoveries_total (#18)


perf_counter = time.perf_counter
now = time.time
fromisoformat = datetime.fromisoformat


class Metrics:
    def __init__(
        self, extra_labels: dict[str, str] | None = None, multiprocess_dir: str | None = None
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._before_render: list[Callable[[], None]] = []
        # What a scrape renders: this process's registry, or every worker's files.
        self._scraped = self.registry
        if multiprocess_dir is not None:
            self._scraped = CollectorRegistry()
            # prometheus-client leaves this constructor unannotated; it registers itself.
            MultiProcessCollector(self._scraped, multiprocess_dir)  # type: ignore[no-untyped-call]
        extra = dict(sorted((extra_labels or {}).items()))
        self._names = tuple(extra)
        self._values = tuple(extra.values())
        reg = self.registry
        names = self._names

        self.request_count = Counter(
            "request_count", "Counter of requests", [*names, "path", "status_code"], registry=reg
        )
        self.errors_count = Counter(
            "errors_count",
            "Counter of failed requests",
            [*names, "path", "error_code"],
            registry=reg,
        )
        self.request_duration = Histogram(
            "requests",
            "Request durations in seconds",
            [*names, "path", "status_code"],
            buckets=BUCKETS,
            registry=reg,
        )
        self.ws_connections = Gauge(
            "ws_connections",
            "Open websocket connections",
            [*names, "kind"],
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.ws_filter_memory = Gauge(
            "ws_filter_memory_bytes",
            "Estimated memory held by open websockets' filters (limits.filter_memory_max_bytes)",
            names,
            registry=reg,
            multiprocess_mode="livemax",  # the budget is per process: the fullest worker
        )
        self.events_received = Counter(
            "events_received", "Events received from the bus", [*names, "kind"], registry=reg
        )
        self.events_delivered = Counter(
            "events_delivered",
            "Event frames written to websockets",
            [*names, "kind"],
            registry=reg,
        )
        self.events_dropped = Counter(
            "events_dropped",
            "Subscribers that stopped being fed: one per evicted socket, not per event",
            [*names, "reason"],
            registry=reg,
        )
        self.bus_poison = Counter(
            "bus_poison_messages",
            "Bus messages skipped as undecodable",
            [*names, "kind"],
            registry=reg,
        )
        self.bus_reconnects = Counter(
            "bus_reconnects", "Times the bus subscription was re-established", names, registry=reg
        )
        self.bus_connected = Gauge(
            "bus_connected",
            "1 while the bus subscription is live",
            names,
            registry=reg,
            multiprocess_mode="livemin",  # 0 when any worker's subscription is down
        )
        self.bus_subscription_repairs = Counter(
            "bus_subscription_repairs",
            "Subscriptions re-requested because Redis's confirmed "
            "state drifted from the requested one",
            names,
            registry=reg,
        )
        self.ws_closed = Counter(
            "ws_closed",
            "Websockets closed by the server, by reason",
            [*names, "reason"],
            registry=reg,
        )
        self.connections_reset = Counter(
            "connections_reset",
            "Client connections the server gave up on and reset, by reason",
            [*names, "reason"],
            registry=reg,
        )
        self.fd_exhausted = Counter(
            "fd_exhausted",
            "Times no file descriptor was free (a failed accept, a probe): connections arriving "
            "meanwhile are dropped unanswered",
            names,
            registry=reg,
        )
        self.published = Counter(
            "events_published",
            "Messages published by the publish routes",
            [*names, "kind"],
            registry=reg,
        )
        self.gc_pauses = Histogram(
            "gc_pause_seconds",
            "Cyclic garbage collector pauses, by generation",
            [*names, "generation"],
            buckets=BUCKETS,
            registry=reg,
        )
        self.gc_frozen_objects = Gauge(
            "gc_frozen_objects",
            "Objects kept out of full collections (gc.freeze)",
            names,
            registry=reg,
            multiprocess_mode="livemax",  # the worker freezing the most
        )
        self.gc_full_passes_total = Counter(
            "gc_full_passes",
            "Planned full collections after connection churn",
            names,
            registry=reg,
        )
        self.delivery_latency = Histogram(
            "event_delivery_seconds",
            "Bus receipt of a message to its frames handed to the last matching socket",
            [*names, "kind"],
            buckets=BUCKETS,
            registry=reg,
        )
        self.producer_latency = Histogram(
            "event_producer_latency_seconds",
            "Producer's event_create_time to the frames handed to the sockets",
            [*names, "kind"],
            buckets=BUCKETS,
            registry=reg,
        )
        self.bus_subscribed_channels = Gauge(
            "bus_subscribed_channels",
            "Bus channels this process listens on (general + accounts "
            "with sockets or forwarding plugins)",
            names,
            registry=reg,
            multiprocess_mode="livesum",  # subscriptions held by the live workers together
        )
        # Missed-event recovery (#18, docs/recovery.md): one block, added whole.
        self.recoveries = Counter(
            "recoveries",
            "Reconnections with since, by outcome (recovered, not_recovered)",
            [*names, "outcome"],
            registry=reg,
        )
        self.recovery_replayed_events = Counter(
            "recovery_replayed_events",
            "Events replayed to reconnecting sockets",
            names,
            registry=reg,
        )
        self.history_events = Gauge(
            "history_events",
            "Events held in the recovery history of the channels this process records",
            names,
            registry=reg,
            multiprocess_mode="livemax",  # workers share one Redis history: not a sum
        )
        self.replayed = self._unlabelled(self.recovery_replayed_events)
        self.history_size = self._unlabelled(self.history_events)
        # Pre-bound children for the delivery hot path, their updates held (runtime/held.py).
        values = self._values
        self.received = {k: HeldCount(self.events_received.labels(*values, k)) for k in KINDS}
        self.delivered = {k: HeldCount(self.events_delivered.labels(*values, k)) for k in KINDS}
        self.connections = {k: self.ws_connections.labels(*self._values, k) for k in KINDS}
        self.gc_pause = [self.gc_pauses.labels(*self._values, str(g)) for g in range(3)]
        self.gc_frozen = self._unlabelled(self.gc_frozen_objects)
        self.filter_memory = self._unlabelled(self.ws_filter_memory)
        self.gc_full_passes = self._unlabelled(self.gc_full_passes_total)
        self.reconnected = self._unlabelled(self.bus_reconnects)
        self.connected_gauge = self._unlabelled(self.bus_connected)
        self.repaired = self._unlabelled(self.bus_subscription_repairs)
        self.latency = {k: HeldObserver(self.delivery_latency.labels(*values, k)) for k in KINDS}
        lag = self.producer_latency
        self.producer_lag = {k: HeldObserver(lag.labels(*values, k)) for k in KINDS}
        self.subscribed_channels = self._unlabelled(self.bus_subscribed_channels)
        self._pending: list[HeldCount | HeldObserver] = [
            *self.received.values(),
            *self.delivered.values(),
            *self.latency.values(),
            *self.producer_lag.values(),
        ]
        # (kind, latency, producer's create time, wall clock) of delivered bus messages
        self._held: list[tuple[str, float, Any, float]] = []
        self._before_render.append(self.fold)

    def fold(self) -> None:
        """Add the delivery path's held updates to the exposed values: before every scrape,
        and every second with ``--workers`` (app.py), where another worker may answer it."""
        self._observe_held()
        for pending in self._pending:
            pending.fold()
        if sockets.RESETS:  # counted where the cut happens, in the process-wide tally
            for reason, count in sockets.RESETS.items():
                self.connections_reset.labels(*self._values, reason).inc(count)
            sockets.RESETS.clear()
        if REFUSED:
            for (status, code), count in REFUSED.items():
                self.request_count.labels(*self._values, UNPARSED, str(status)).inc(count)
                self.errors_count.labels(*self._values, UNPARSED, str(code)).inc(count)
            REFUSED.clear()
        if fdlimit.EXHAUSTIONS:
            self._unlabelled(self.fd_exhausted).inc(sum(fdlimit.EXHAUSTIONS.values()))
            fdlimit.EXHAUSTIONS.clear()

    def delivered_message(self, kind: str, received: float, create_time: Any) -> None:
        """One observation per bus message that reached a socket (never per socket).

        ``received`` is the ``perf_counter`` at bus receipt. Only the two clocks are read here;
        the observations are made in batches of :data:`HELD_MAX` (or at a fold), where parsing
        the producer's time and bisecting the buckets run warm: one at a time, after a wake-up
        that found the caches cold, they cost ~25 µs per message (docs/performance.md, Round 6).
        """
        held = self._held
        held.append((kind, perf_counter() - received, create_time, now()))
        if len(held) >= HELD_MAX:
            self._observe_held()

    def _observe_held(self) -> None:
        """The held latencies into their histograms. The producer's time is parsed with the C
        ``fromisoformat`` and nothing is cached; a time without an offset is taken as UTC, and
        one in the future (clock skew) or unparsable is skipped."""
        held, self._held = self._held, []
        latency, producer_lag = self.latency, self.producer_lag
        for kind, took, create_time, at in held:
            latency[kind].observe(took)
            if type(create_time) is not str:
                continue
            try:
                created = fromisoformat(create_time)
            except ValueError:
                continue
            if created.tzinfo is None:
                created = created.replace(tzinfo=UTC)
            lag = at - created.timestamp()
            if lag >= 0:
                producer_lag[kind].observe(lag)

    def _unlabelled(self, metric: Any) -> Any:
        """A metric without labels of its own: bound to the extra labels, if any are set."""
        return metric.labels(*self._values) if self._names else metric

    def observe_request(
        self, path: str, status: int, duration: float, error_code: int | None
    ) -> None:
        self.request_count.labels(*self._values, path, str(status)).inc()
        self.request_duration.labels(*self._values, path, str(status)).observe(duration)
        if error_code is not None:
            self.errors_count.labels(*self._values, path, str(error_code)).inc()

    def dropped(self, reason: str, count: int = 1) -> None:
        self.events_dropped.labels(*self._values, reason).inc(count)

    def closed(self, reason: str) -> None:
        self.ws_closed.labels(*self._values, reason).inc()

    def recovered(self, outcome: str, replayed: int) -> None:
        self.recoveries.labels(*self._values, outcome).inc()
        if replayed:
            self.replayed.inc(replayed)

    def poison(self, kind: str) -> None:
        self.bus_poison.labels(*self._values, kind).inc()

    def publish(self, kind: str) -> None:
        self.published.labels(*self._values, kind).inc()

    @property
    def multiprocess(self) -> bool:
        return self._scraped is not self.registry

    def before_render(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` before every scrape (values gathered where updating is unsafe)."""
        self._before_render.append(callback)

    def render(self) -> bytes:
        for callback in self._before_render:
            callback()
        return generate_latest(self._scraped)
