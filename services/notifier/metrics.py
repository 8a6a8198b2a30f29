"""Prometheus metrics of the notifier, on a registry of its own app (no import-time globals)."""

from __future__ import annotations

from collections import defaultdict

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric

from shared.service_kit import READY_HELP


class NotifierMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.sessions = Gauge(
            "notifier_sessions", "Open authenticated websocket sessions", registry=r
        )
        self.sent = CountsByLabel(
            "notifier_messages_sent", "Messages written to websockets", "type", registry=r
        )
        self.send_lag = Histogram(
            "notifier_send_lag_seconds",
            "Time a message waited in its session's send queue",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.consumer_lag = Gauge(
            "notifier_consumer_lag", "Records in Kafka not yet read by this notifier", registry=r
        )
        self.closed = Counter(
            "notifier_sessions_closed", "Sessions closed by the server", ["reason"], registry=r
        )
        self.replays = Counter("notifier_resumes", "Resumes served", ["source"], registry=r)
        self.resyncs = Counter(
            "notifier_resyncs",
            "Resumes answered with resync instead of a replay",
            ["reason"],
            registry=r,
        )
        self.skipped = Counter(
            "notifier_events_skipped",
            "Kafka records skipped because they could not be decoded or validated",
            ["reason"],
            registry=r,
        )
        self.connections = Gauge(
            "notifier_connections", "Open websocket connections (authenticated or not)", registry=r
        )
        self.ready = Gauge("service_ready", READY_HELP, ["service"], registry=r)


class CountsByLabel:
    """A counter with one label, kept as plain ints and turned into a metric family when
    scraped. It is bumped once per message per session, the fan-out's innermost step, where a
    `Counter` child's `inc()` takes a lock each time (bench/README.md, fan-out costs). The
    notifier scrapes on its event loop, the only thread that counts."""

    def __init__(self, name: str, documentation: str, label: str, registry: CollectorRegistry):
        self.name, self.documentation, self.label = name, documentation, label
        self.counts: defaultdict[str, int] = defaultdict(int)
        registry.register(self)

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(self.name, self.documentation, labels=[self.label])]

    def collect(self) -> list[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, count in sorted(self.counts.items()):
            family.add_metric([value], count)
        return [family]
