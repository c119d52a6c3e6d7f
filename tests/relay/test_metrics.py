"""GET /metrics against a real relay: the Prometheus exposition follows what sockets do.

Every scrape is parsed with prometheus-client's own parser and every sample in it
must carry ``node="<NODE_NAME>"``. Each test starts its own relay, so gauges are
checked as absolute values and counters from zero.
"""

from __future__ import annotations

import asyncio
import itertools
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus

import protocol as p

from .client import TIMEOUT, live_session, open_socket, rest, run, viewer, visitor, watch_token

NODE = "metrics-node-7"
_ids = itertools.count(1)


def vid() -> str:
    return f"METR{next(_ids):06d}"


Scrape = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(relay: Any) -> Scrape:
    """One GET /metrics without a key, parsed: ``(sample name, labels but node) -> value``.

    Fails unless every sample is labelled with this node's name."""
    with urllib.request.urlopen(f"{relay.base}/metrics", timeout=5) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    out: Scrape = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            assert s.labels.get("node") == NODE, (s.name, s.labels)
            labels = frozenset((k, v) for k, v in s.labels.items() if k != "node")
            out[(s.name, labels)] = s.value
    return out


def value(samples: Scrape, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def occupancy(relay: Any) -> dict[str, float]:
    s = scrape(relay)
    return {
        "visitors": value(s, "cobrowse_sockets", role="visitor"),
        "viewers": value(s, "cobrowse_sockets", role="viewer"),
        "devices": value(s, "cobrowse_sockets", role="device"),
        "rooms": value(s, "cobrowse_rooms"),
        "requested": value(s, "cobrowse_sessions", state="requested"),
        "live": value(s, "cobrowse_sessions", state="live"),
    }


async def until(predicate: Any, what: str, timeout: float = TIMEOUT) -> None:
    """Poll ``predicate`` (bounded) until it is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"not in time: {what}"
        await asyncio.sleep(0.02)


@pytest.fixture
def node_relay(relay_factory: Any) -> Any:
    return relay_factory(NODE_NAME=NODE).start()


def test_metrics_need_no_key_and_every_sample_names_the_node_even_the_process_ones(node_relay: Any) -> None:
    samples = scrape(node_relay)  # no Authorization header, though REST_KEY is set
    assert rest(node_relay, "GET", "/api/visitors/list/latest", key=None)[0] == 401  # the API would refuse
    assert value(samples, "process_resident_memory_bytes") > 0
    assert value(samples, "cobrowse_store_up") == 1


def test_the_store_ping_histogram_observes_each_health_call_and_each_scrape(node_relay: Any) -> None:
    before = value(scrape(node_relay), "cobrowse_store_ping_seconds_count")
    for _ in range(3):
        with urllib.request.urlopen(f"{node_relay.base}/health", timeout=5) as r:
            assert r.status == 200
    after = scrape(node_relay)
    assert value(after, "cobrowse_store_ping_seconds_count") == before + 3 + 1  # three /health, this scrape
    assert value(after, "cobrowse_store_ping_seconds_bucket", le="+Inf") == before + 4
    assert value(after, "cobrowse_store_ping_seconds_sum") > 0


def test_sockets_rooms_and_sessions_follow_a_visitor_a_viewer_and_their_sockets_closing(node_relay: Any) -> None:
    r = node_relay

    async def expect(what: str, **counts: float) -> None:
        await until(lambda: {k: occupancy(r)[k] for k in counts} == counts, f"{what}: {counts}")

    async def scenario() -> None:
        await expect("a fresh relay", visitors=0, viewers=0, devices=0, rooms=0, requested=0, live=0)
        v = vid()
        vis, _ = await visitor(r, v)
        await expect("a visitor connected", visitors=1, viewers=0, rooms=1, requested=0, live=0)
        await asyncio.sleep(0.05)  # its presence is stored before the watch URL is asked for
        view, _ = await viewer(r, watch_token(r, v))
        req = await vis.expect(p.SessionRequest)
        await expect("a viewer waits for the visitor", visitors=1, viewers=1, rooms=1, requested=1, live=0)
        await vis.send(p.SessionAccept(session=req.session))
        await view.expect(p.SessionAccept)
        await expect("the session is live", visitors=1, viewers=1, rooms=1, requested=0, live=1)
        await view.close()  # dropped, not left: its seat holds the session for the resume window
        await expect("the viewer's socket closed", visitors=1, viewers=0, rooms=1, live=1)
        await vis.close()
        await expect("the visitor's socket closed", visitors=0, viewers=0, rooms=1, live=1)

    run(scenario())


def test_ordered_and_latest_frames_are_counted_by_class_with_exactly_their_bytes(node_relay: Any) -> None:
    r = node_relay

    async def scenario() -> None:
        vis, view, _ = await live_session(r, vid())
        before = scrape(r)
        ordered = [p.encode(p.DomKeyframe(data=b"<html>" * 100)), p.encode(p.DomDelta(data=b"+1"))]
        latest = [p.encode(p.Pointer(x=1, y=2)), p.encode(p.Scroll(x=0, y=300))]
        for frame in ordered + latest:
            await vis.raw(frame)
        got = [await view.recv_frame() for _ in range(4)]
        assert [len(f) for f in got] == [len(f) for f in ordered + latest]  # stamped in place, same length
        after = scrape(r)

        def delta(name: str, routing: str) -> float:
            return value(after, name, routing=routing) - value(before, name, routing=routing)

        for routing, frames in (("ordered", ordered), ("latest", latest)):
            assert delta("cobrowse_frames_received_total", routing) == len(frames)
            assert delta("cobrowse_received_bytes_total", routing) == sum(map(len, frames))
            assert delta("cobrowse_frames_sent_total", routing) == len(frames)  # one viewer
            assert delta("cobrowse_sent_bytes_total", routing) == sum(map(len, frames))
        assert delta("cobrowse_frames_received_total", "control") == 0
        assert delta("cobrowse_frames_sent_total", "control") == 0

    run(scenario())


def test_a_forbidden_control_frame_is_counted_received_and_dropped_an_allowed_one_sent(node_relay: Any) -> None:
    r = node_relay
    click = p.encode(p.Click(node=1, x=1, y=1))

    async def scenario() -> None:
        _, denied, _ = await live_session(r, vid(), allow_click=False)
        await denied.raw(click)
        assert (await denied.expect(p.Error)).code == "forbidden"  # refused, and counted by now
        s = scrape(r)
        assert value(s, "cobrowse_forbidden_control_frames_total") == 1
        assert value(s, "cobrowse_frames_received_total", routing="control") == 1
        assert value(s, "cobrowse_received_bytes_total", routing="control") == len(click)
        assert value(s, "cobrowse_frames_sent_total", routing="control") == 0
        vis, allowed, _ = await live_session(r, vid(), allow_click=True)
        await allowed.raw(click)
        assert await vis.expect(p.Click) == p.Click(node=1, x=1, y=1)
        s = scrape(r)
        assert value(s, "cobrowse_forbidden_control_frames_total") == 1
        assert value(s, "cobrowse_frames_received_total", routing="control") == 2
        assert value(s, "cobrowse_frames_sent_total", routing="control") == 1
        assert value(s, "cobrowse_sent_bytes_total", routing="control") == len(click)

    run(scenario())


def test_a_ping_flood_is_counted_as_a_rate_limit_close_and_its_reconnect_as_a_cool_down_refusal(
    relay_factory: Any,
) -> None:
    r = relay_factory(NODE_NAME=NODE, RATE_CONTROL="20", RATE_BURST="1").start()

    async def scenario() -> None:
        before = scrape(r)
        assert value(before, "cobrowse_rate_limit_closes_total") == 0
        flooder, _ = await visitor(r, vid())
        assert await flooder.flood(p.encode(p.Ping(t=1)), 200) == p.CloseCode.RATE_LIMITED
        with pytest.raises(InvalidStatus) as refused:
            await open_socket(r, "/ws/visitor")
        assert refused.value.response.status_code == 429
        s = scrape(r)
        assert value(s, "cobrowse_rate_limit_closes_total") == 1
        assert value(s, "cobrowse_address_refusals_total", limit="cooling") == 1
        # The pings it was allowed were routed (session class) and answered.
        assert value(s, "cobrowse_frames_received_total", routing="session") > 1
        assert value(s, "cobrowse_frames_sent_total", routing="session") > 1
        await until(lambda: occupancy(r)["visitors"] == 0, "the flooder's socket is gone")

    run(scenario())


def test_resyncs_are_counted_by_cause_and_keyframes_asked_of_the_visitor(node_relay: Any) -> None:
    r = node_relay

    async def scenario() -> None:
        v = vid()
        vis, view, _ = await live_session(r, v)
        await vis.send(p.DomDelta(data=b"no keyframe yet"))
        await vis.expect(p.ResyncRequest)
        assert value(scrape(r), "cobrowse_keyframes_asked_total") == 1
        keyframe = p.encode(p.DomKeyframe(data=b"snapshot"))
        await vis.raw(keyframe)
        await view.recv_frame()
        late, _ = await viewer(r, watch_token(r, v))  # a late joiner is served from the log
        await late.expect(p.DomKeyframe)
        await view.send(p.ResyncRequest(reason="lost"))  # a viewer asks for a replay
        await view.expect(p.DomKeyframe)
        s = scrape(r)
        assert value(s, "cobrowse_resyncs_total", cause="join") == 1
        assert value(s, "cobrowse_resyncs_total", cause="request") == 1
        assert value(s, "cobrowse_resyncs_total", cause="overflow") == 0
        # The keyframe went live to one viewer, then from the log to the late joiner and to the asker.
        assert value(s, "cobrowse_frames_sent_total", routing="ordered") == 3
        assert value(s, "cobrowse_sent_bytes_total", routing="ordered") == 3 * len(keyframe)

    run(scenario())


def test_a_protocol_error_is_counted(node_relay: Any) -> None:
    async def scenario() -> None:
        bad, _ = await visitor(node_relay, vid())
        await bad.raw(b"\x01")
        assert await bad.closed() == p.CloseCode.PROTOCOL_ERROR
        await until(lambda: value(scrape(node_relay), "cobrowse_protocol_errors_total") == 1, "counted")

    run(scenario())
