"""``GET {BASE}/metrics``: this node's counters in the Prometheus text exposition format.

Nothing is counted here. The hot path keeps plain ``int`` attributes (on the
:class:`~relay.core.hub.Hub`, the service's ``counters``, the
:class:`~relay.core.limits.AddressLimits` and the transport's
:class:`~relay.transport.limits.Budget`), incremented with ``+=`` where it
already branches; a custom collector reads them only when Prometheus scrapes.
So a frame costs no dict lookup and no prometheus-client call.

The registry is one :class:`CollectorRegistry` per app, built in the lifespan
and kept on ``app.state.metrics``: never prometheus-client's global
``REGISTRY``. Every sample carries a ``node`` label (``NODE_NAME``), the
process collector's included, so the nodes of a cluster add up without
relabelling rules. The store's ping latency is a histogram, observed on each
``/health`` call and each scrape.

The endpoint needs no key, like ``/health``: it must not be exposed publicly
(it tells who is connected how much), only to the scraper's network.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from .core.hub import Hub, SessionState
from .core.service import Service
from .storage.base import Store

__all__ = ["RelayMetrics", "endpoint", "timed_ping"]

# Store pings: an embedded SQLite answers in well under a millisecond, a Redis across a network
# in a few; its write lock waits at most 200 ms before the ping fails.
PING_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
ROUTINGS = ("ordered", "latest", "control", "session")


class RelayMetrics:
    """One app's registry, its store-ping histogram, and the collector that reads the counters.

    ``state`` is the app's state: the transport's budget is created there on the
    first websocket (:func:`relay.transport.limits.wire_of`), so it is looked up
    at each scrape.
    """

    def __init__(self, service: Service, state: Any) -> None:
        self.service = service
        self.node = service.settings.node_name
        self.store_up = 1
        self.ping_seconds = Histogram(
            "cobrowse_store_ping_seconds",
            "Latency of the store's write probe, on each /health call and each scrape.",
            buckets=PING_BUCKETS,
            registry=None,
        )
        self.registry = CollectorRegistry()
        self.registry.register(_NodeCollector(self.node, _RelayCollector(self, state)))
        self.registry.register(_NodeCollector(self.node, ProcessCollector(registry=None)))

    async def ping(self, store: Store) -> bool:
        """``store.ping()``, timed into the histogram; its answer is also the ``store_up`` gauge."""
        start = time.perf_counter()
        ok = await store.ping()
        self.ping_seconds.observe(time.perf_counter() - start)
        self.store_up = int(ok)
        return ok

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The registry's samples encoded for an ``Accept`` header, and their content type."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


async def timed_ping(state: Any, store: Store) -> bool:
    """``store.ping()``, timed when the app has metrics (an app outside its lifespan has none)."""
    metrics: RelayMetrics | None = getattr(state, "metrics", None)
    if metrics is None:
        return await store.ping()
    return await metrics.ping(store)


async def endpoint(request: Request) -> Response:
    """``GET /metrics``: ping the store (observed), then every sample; 503 before the lifespan ran."""
    metrics: RelayMetrics | None = getattr(request.app.state, "metrics", None)
    if metrics is None:
        return Response(status_code=503)
    await metrics.ping(metrics.service.store)
    body, content_type = metrics.exposition(request.headers.get("accept", ""))
    return Response(body, headers={"Content-Type": content_type})


class _NodeCollector(Collector):
    """Another collector's families, every sample labelled ``node=<NODE_NAME>``."""

    def __init__(self, node: str, inner: Collector) -> None:
        self.node = node
        self.inner = inner

    def collect(self) -> Iterable[Metric]:
        for family in self.inner.collect():
            family.samples = [s._replace(labels={**s.labels, "node": self.node}) for s in family.samples]
            yield family


class _RelayCollector(Collector):
    """Reads the relay's counters at scrape time. See the module docstring."""

    def __init__(self, metrics: RelayMetrics, state: Any) -> None:
        self.metrics = metrics
        self.state = state

    def collect(self) -> Iterator[Metric]:
        service = self.metrics.service
        hub = service.hub
        yield from _occupancy(hub)
        yield from _traffic(hub)
        yield from _resyncs(hub, service)
        yield from _limits(service, getattr(self.state, "wire_budget", None))
        yield from _errors(hub, service)
        yield from _cluster(service)
        yield from self.metrics.ping_seconds.collect()
        yield GaugeMetricFamily("cobrowse_store_up", "1 when the store's last ping succeeded.", self.metrics.store_up)


def _occupancy(hub: Hub) -> Iterator[Metric]:
    rooms = list(hub.rooms.values())
    sockets = GaugeMetricFamily("cobrowse_sockets", "Admitted websockets open, by role.", labels=["role"])
    sockets.add_metric(["visitor"], sum(1 for r in rooms if r.visitor is not None))
    sockets.add_metric(["viewer"], sum(len(r.viewers) for r in rooms))
    sockets.add_metric(["device"], 0)  # devices are not enrolled on this node yet
    yield sockets
    yield GaugeMetricFamily("cobrowse_rooms", "Rooms held: one per visitor online or with a session.", len(rooms))
    sessions = GaugeMetricFamily("cobrowse_sessions", "Sessions, by state.", labels=["state"])
    for state in SessionState:
        sessions.add_metric([state.value], sum(1 for r in rooms if r.state is state))
    yield sessions


def _traffic(hub: Hub) -> Iterator[Metric]:
    """Frames and bytes by routing class; see :class:`~relay.core.hub.Hub` for what is counted."""
    families = {
        ("received", ""): CounterMetricFamily(
            "cobrowse_frames_received", "Frames the hub routed from peers, by routing class.", labels=["routing"]
        ),
        ("received", "_bytes"): CounterMetricFamily(
            "cobrowse_received_bytes", "Bytes of the frames the hub routed from peers.", labels=["routing"]
        ),
        ("sent", ""): CounterMetricFamily(
            "cobrowse_frames_sent",
            "Frames handed to peers or replayed from the log, once per recipient, by routing class.",
            labels=["routing"],
        ),
        ("sent", "_bytes"): CounterMetricFamily(
            "cobrowse_sent_bytes", "Bytes of the frames handed to peers or replayed.", labels=["routing"]
        ),
    }
    for (way, unit), family in families.items():
        prefix = "in_" if way == "received" else "out_"
        for routing in ROUTINGS:
            family.add_metric([routing], getattr(hub, prefix + routing + unit))
        yield family


def _resyncs(hub: Hub, service: Service) -> Iterator[Metric]:
    resyncs = CounterMetricFamily(
        "cobrowse_resyncs", "Viewer replays from the session log, by cause.", labels=["cause"]
    )
    resyncs.add_metric(["join"], hub.resyncs_joined)  # a late joiner or a resuming viewer
    resyncs.add_metric(["overflow"], hub.resyncs_overflow)
    resyncs.add_metric(["request"], hub.resyncs_requested)
    yield resyncs
    yield _counter("cobrowse_resyncs_refused", "Viewer RESYNC_REQUESTs ignored.", service.counters["resyncs_refused"])
    yield _counter("cobrowse_keyframes_asked", "RESYNC_REQUESTs sent to visitors.", hub.keyframes_asked)


def _limits(service: Service, budget: Any) -> Iterator[Metric]:
    hub, addresses = service.hub, service.addresses
    yield _counter("cobrowse_slow_closes", "Peers closed as slow consumers (4001).", hub.slow_closed)
    yield _counter(
        "cobrowse_rate_limit_closes", "Sockets closed for a rate limit (4004).", service.counters["rate_limited"]
    )
    refusals = CounterMetricFamily(
        "cobrowse_address_refusals",
        "Refusals by per-address limit (cooling: 429 before the upgrade).",
        labels=["limit"],
    )
    refusals.add_metric(["cooling"], addresses.refused_cooling)
    refusals.add_metric(["sockets"], addresses.refused_sockets)
    refusals.add_metric(["new_visitors"], addresses.refused_new)
    yield refusals
    inflight, peak, refused, slow = (
        (0, 0, 0, 0) if budget is None else (budget.inflight, budget.peak, budget.refused, budget.slow)
    )
    yield GaugeMetricFamily("cobrowse_inflight_bytes", "Inbound bytes held in unfinished messages now.", inflight)
    yield GaugeMetricFamily("cobrowse_inflight_peak_bytes", "The most inbound bytes held at once.", peak)
    yield _counter("cobrowse_inflight_refusals", "Messages refused: the inbound budget was spent (4005).", refused)
    yield _counter("cobrowse_slow_messages", "Messages that arrived under MIN_RECV_RATE (4007).", slow)


def _errors(hub: Hub, service: Service) -> Iterator[Metric]:
    yield _counter("cobrowse_forbidden_control_frames", "Control frames dropped: not granted.", hub.forbidden)
    yield _counter(
        "cobrowse_protocol_errors", "Sockets closed for a protocol error.", service.counters["protocol_errors"]
    )
    yield _counter("cobrowse_drains_rescued", "Drains the transport never reported, found by the sweep.", hub.rescued)


def _cluster(service: Service) -> Iterator[Metric]:
    """Cluster mode only (REDIS_URL): ownership moves, redirects, fencing, Redis's latency."""
    c = service.cluster
    if c is None:
        return
    owned = sum(1 for r in service.hub.rooms.values() if r.owned)
    yield GaugeMetricFamily("cobrowse_cluster_owned_rooms", "Rooms whose session this node owns now.", owned)
    yield _counter(
        "cobrowse_cluster_takeovers", "Sessions this node took over from another node (or its own past).", c.takeovers
    )
    yield _counter("cobrowse_cluster_redirects", "Sockets sent to the owning node (4003).", c.redirects)
    yield _counter(
        "cobrowse_cluster_fenced_frames",
        "Frames dropped because this node's claim on the room had lapsed.",
        service.counters["fenced"],
    )
    yield _counter(
        "cobrowse_cluster_reaped_sessions", "Sessions closed because their node died (node_lost).", c.reaped_sessions
    )
    if c.bus is not None:
        yield _counter("cobrowse_cluster_bus_requests", "Requests this node sent to other nodes.", c.bus.asked)
        yield _counter("cobrowse_cluster_bus_timeouts", "Requests to other nodes not answered in time.", c.bus.timeouts)
    yield GaugeMetricFamily(
        "cobrowse_cluster_redis_latency_seconds", "Round trip of this node's last heartbeat write.", c.redis_latency
    )
    yield GaugeMetricFamily("cobrowse_cluster_healthy", "1 while this node's heartbeat is fresh.", int(c.healthy()))


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value)
