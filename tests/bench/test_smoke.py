"""Smoke tests of the bench tools: frames, both baselines, the load generator's bookkeeping.

Fast and untimed: they check that frames arrive intact and in order, and that
loss, duplicates and latency are counted right; never how fast anything is.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import protocol
from bench import loadgen
from bench.frames import STAMP, FrameTemplate, read_stamp
from bench.proc import free_port, wait_port

ROOT = Path(__file__).resolve().parents[2]
BASELINES = ("bench.baseline_websockets", "bench.baseline_picows")


# --- frames ------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [64, 1024, 32 * 1024, 70_000, 1 << 20])
def test_template_is_a_real_frame_of_the_exact_size(size: int) -> None:
    kf = size > 64 * 1024
    t = FrameTemplate(size, keyframe=kf)
    frame = t.make(7, 123456789)
    assert len(frame) == size
    msg = protocol.decode(frame)
    cls = protocol.DomKeyframe if kf else protocol.DomDelta
    assert isinstance(msg, cls)
    assert frame == protocol.encode(cls(data=msg.data))
    assert read_stamp(frame) == (7, 123456789)
    assert STAMP.unpack_from(msg.data) == (7, 123456789)


def test_relay_stamping_keeps_the_payload_stamp() -> None:
    frame = FrameTemplate(1024).make(42, 99)
    stamped = protocol.stamp(frame, 5, 1000)
    assert protocol.peek(stamped).seq == 1000
    assert read_stamp(stamped) == (42, 99)


# --- baselines -----------------------------------------------------------------------------
@pytest.fixture(params=BASELINES, scope="module")
def baseline(request: pytest.FixtureRequest) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", request.param, "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        wait_port(port, 15, proc)
        yield f"ws://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_baseline_forwards_intact_and_in_order(baseline: str) -> None:
    from websockets.asyncio.client import connect

    frames = [FrameTemplate(size).make(i, time.perf_counter_ns()) for i, size in enumerate([100, 1024, 40_000] * 10)]
    frames.append(FrameTemplate(1 << 20, keyframe=True).make(99, 0))  # a keyframe: 1 MiB in one message

    async def go() -> list[list[bytes]]:
        async with (
            connect(f"{baseline}/ws/s1/viewer", max_size=None, compression=None) as v1,
            connect(f"{baseline}/ws/s1/viewer", max_size=None, compression=None) as v2,
            connect(f"{baseline}/ws/s2/viewer", max_size=None, compression=None) as other,
            connect(f"{baseline}/ws/s1/visitor", max_size=None, compression=None) as visitor,
        ):
            await asyncio.sleep(0.1)  # viewers registered before the first frame
            for f in frames:
                await visitor.send(f)
            got = []
            for v in (v1, v2):
                got.append([bytes(await asyncio.wait_for(v.recv(), 5)) for _ in frames])  # type: ignore[arg-type]
            with pytest.raises(asyncio.TimeoutError):  # another session hears nothing
                await asyncio.wait_for(other.recv(), 0.2)
            return got

    got = asyncio.run(go())
    assert got == [frames, frames]


# --- the load generator -----------------------------------------------------------------------
def test_loadgen_against_baseline_counts_everything(baseline: str) -> None:
    spec = {
        "type": "fanout",
        "mode": "raw",
        "url": baseline,
        "viewers": 3,
        "rate": 300,
        "frame": 1024,
        "warmup": 0.1,
        "duration": 0.3,
        "drain": 3,
    }
    import uvloop

    r = uvloop.run(loadgen.run_job(spec))
    assert r["ok"], r
    assert r["lost"] == 0 and r["dup"] == 0 and r["undelivered"] == 0
    sent = r["frames_sent"]
    assert sent > 40
    assert r["latency"]["n"] > 0
    assert 0 < r["latency"]["p50_us"] < 1_000_000
    assert r["deliveries"] > 0


def test_loadgen_saturated_against_baseline(baseline: str) -> None:
    import uvloop

    spec = {
        "type": "fanout",
        "mode": "raw",
        "url": baseline,
        "viewers": 2,
        "rate": 0,
        "window": 16,
        "frame": 32 * 1024,
        "warmup": 0.1,
        "duration": 0.2,
        "latency": False,
        "server_pid": os.getpid(),  # any live pid: only the bookkeeping is checked
    }
    r = uvloop.run(loadgen.run_job(spec))
    assert r["ok"], r
    assert r["lost"] == 0 and r["dup"] == 0 and r["undelivered"] == 0
    assert r["deliveries"] > 0 and "us_per_del" in r


def test_viewer_counts_loss_duplicates_resyncs_and_latency() -> None:
    from picows import WSMsgType
    from picows.picows import _make_test_ws_frame

    async def go() -> tuple[loadgen.Viewer, loadgen.Job]:
        job = loadgen.Job({"mode": "raw", "url": "ws://unused"})
        job.rec = True
        s = loadgen.Session(job, 0, 1024, 1024)
        w = loadgen.Viewer(s)
        tmpl, kf = FrameTemplate(1024), FrameTemplate(4096, keyframe=True)
        sent_at = time.perf_counter_ns() - 5_000_000  # 5 ms ago

        def feed(frame: bytes) -> None:
            w.on_ws_frame(None, _make_test_ws_frame(WSMsgType.BINARY, frame, True, False))

        feed(kf.make(0, sent_at))
        for seq in (1, 2, 4, 4, 5, 3):  # 3 missing then late: a gap, then 2 out-of-order
            feed(tmpl.make(seq, sent_at))
        feed(kf.make(10, sent_at))  # a resync: jumps over 6..10
        feed(tmpl.make(11, sent_at))
        return w, job

    w, job = asyncio.run(go())
    assert w.received == 7
    assert w.lost == 1  # seq 3 skipped when 4 arrived
    assert w.dup == 2  # the second 4, and 3 arriving late
    assert w.resyncs == 1 and w.skipped == 5
    assert w.expect == 12
    stats = loadgen.latency_stats(job.lat)
    assert stats["n"] == 7
    assert 5_000 <= stats["p50_us"] < 5_000_000


def test_direct_one_hop_path() -> None:
    import uvloop

    r = uvloop.run(
        loadgen.run_job({"type": "direct", "url": "ws://unused", "rate": 300, "duration": 0.3, "warmup": 0.1})
    )
    assert r["ok"], r
    assert r["lost"] == 0 and r["dup"] == 0
    assert r["latency"]["n"] > 20


# --- 8. reconnect storm, 9. flood ----------------------------------------------------------
def test_storm_addresses_are_distinct_loopback_addresses() -> None:
    import ipaddress

    addrs = [loadgen.storm_addr(i) for i in range(600)]
    assert len(set(addrs)) == 600
    assert all(ipaddress.ip_address(a) in ipaddress.ip_network("127.0.0.0/8") for a in addrs)
    assert not any(a.endswith((".0", ".255")) for a in addrs)


def test_storm_against_baseline(baseline: str) -> None:
    import uvloop

    spec = {
        "type": "storm",
        "mode": "raw",
        "url": baseline,
        "count": 40,
        "per_addr": 10,
        "jitter": 0.1,
        "storms": 2,
        "settle": 0.1,
        "storm_budget": 20,
        "server_pid": os.getpid(),  # any live pid: only the bookkeeping is checked
    }
    r = uvloop.run(loadgen.run_job(spec))
    assert r["ok"], r
    assert r["connected"] == 40 and r["addresses"] == 4
    assert len(r["storms"]) == 2
    for s in r["storms"]:
        assert s["admitted"] == 40, s
        assert s["storm_s"] is not None and s["storm_s"] >= s["admitted_after_drop_ms"]["p50"] / 1000
        assert len(s["admitted_curve_ms"]) == 20 and s["admitted_curve_ms"] == sorted(s["admitted_curve_ms"])
        assert s["client_wait_ms"]["max"] <= s["admitted_curve_ms"][-1]
        assert "server_cpu_s" in s and s["handshakes_per_s"] > 0


def test_storm_sockets_come_from_their_addresses() -> None:
    """Each storm visitor connects from its own loopback address, 'per_addr' to an address."""
    import uvloop

    seen: list[str] = []

    async def go() -> dict[str, object]:
        from picows import WSListener, WSTransport, WSUpgradeRequest, ws_create_server

        class Answer(WSListener):
            def on_ws_connected(self, transport: WSTransport) -> None:
                seen.append(transport.underlying_transport.get_extra_info("peername")[0])

        def factory(_req: WSUpgradeRequest) -> WSListener:
            return Answer()

        server = await ws_create_server(factory, "127.0.0.1", 0, enable_auto_pong=True)
        port = server.sockets[0].getsockname()[1]
        try:
            spec = {"type": "storm", "mode": "raw", "url": f"ws://127.0.0.1:{port}", "count": 6, "per_addr": 2}
            return await loadgen.run_job({**spec, "storms": 1, "settle": 0.05, "jitter": 0.05})
        finally:
            server.close()

    r = uvloop.run(go())
    assert r["ok"], r
    assert seen[:6].count(loadgen.storm_addr(0)) == 2 and len(set(seen[:6])) == 3
    assert sorted(seen[6:]) == sorted(seen[:6])  # the reconnects, from the same addresses


@pytest.mark.parametrize("kind", ["ping", "ordered"])
def test_flood_against_baseline(baseline: str, kind: str) -> None:
    import uvloop

    spec = {
        "type": "flood",
        "mode": "raw",
        "url": baseline,
        "flood": kind,
        "flood_frame": 8192,
        "rate": 100,
        "quiet": 0.4,
        "flood_s": 0.4,
        "warmup": 0.1,
        "budget": 60,
    }
    r = uvloop.run(loadgen.run_job(spec))
    assert r["ok"], r
    assert r["lost"] == 0 and r["undelivered"] == 0 and r["a_closed"] == []
    assert r["quiet"]["latency"]["n"] > 10 and r["flood"]["latency"]["n"] > 10
    fl = r["flooder"]
    assert fl["flood"] == kind
    assert fl["frame_bytes"] == (8192 if kind == "ordered" else len(protocol.encode(protocol.Ping(t=1))))
    assert fl["frames_sent"] > 0 and fl["connects"] == 1 and fl["close_codes"] == {}  # a baseline closes nothing
    if kind == "ordered":  # B's own viewer received B's deltas
        assert fl["viewer_received"] > 0


def test_flooder_counts_closes_and_reconnects() -> None:
    """A server that closes the flooder with 4004 after 50 frames: B reconnects and floods again."""
    import uvloop

    async def go() -> dict[str, object]:
        from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

        class Limiter(WSListener):
            n = 0

            def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
                if frame.msg_type is WSMsgType.BINARY:
                    self.n += 1
                    if self.n == 50:
                        transport.send_close(4004, b"rate limit")
                        transport.disconnect()

        def factory(_req: WSUpgradeRequest) -> WSListener:
            return Limiter()

        server = await ws_create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        fl = loadgen.Flooder(loadgen.Job({"mode": "raw", "url": f"ws://127.0.0.1:{port}", "flood": "presence"}))
        try:
            await fl.setup()
            rep = await fl.run(0.6, lambda: None)
        finally:
            await fl.close()
            server.close()
        return rep

    rep = uvloop.run(go())
    assert rep["connects"] >= 3, rep
    assert rep["close_codes"].get("4004", 0) >= 2 and set(rep["close_codes"]) == {"4004"}, rep
    assert rep["closed"] == sum(rep["close_codes"].values())
    assert rep["median_lifetime_s"] is not None
    assert rep["close_reasons"] == {"4004 rate limit": rep["closed"]}


def test_table_names_scenarios_measured_at_another_time() -> None:
    from bench import report

    data = {
        "date": "D2",
        "command": "python -m bench storm",
        "scenarios": {
            "paced": {"title": "2. Paced latency", "rows": [], "date": "D1", "command": "python -m bench all"},
            "storm": {"title": "8. Reconnect storm", "rows": [], "date": "D2", "command": "python -m bench storm"},
        },
    }
    assert report.provenance(data) == ["Measured at another time: scenario 2 on D1 with `python -m bench all`."]
    del data["scenarios"]["paced"]["command"]  # results written before scenarios carried their command
    assert report.provenance(data) == ["Measured at another time: scenario 2 on D1."]
    data["scenarios"]["paced"].update(date="D2", command="python -m bench storm")
    assert report.provenance(data) == []


# --- 10. cluster ---------------------------------------------------------------------------------
@pytest.mark.cluster
def test_cluster_job_against_real_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Six sessions on a single node and on two cluster nodes sharing a redis-server, one short
    window each, then node2 killed: bookkeeping only (redirects, owners, Redis, failover), no speed."""
    import uvloop

    from bench.targets import SECRET, start_node, start_redis

    from ..conftest import require_binary

    require_binary("redis-server")
    monkeypatch.setenv("BENCH_NICE", "0")
    redis = start_redis(None, tmp_path)
    started = []
    try:
        single = start_node("single", None, None, tmp_path)
        started.append(single)
        nodes = [start_node(f"node{i}", redis.url, None, tmp_path) for i in (1, 2)]
        started += nodes
        assert not [t.error for t in started if t.error]

        def node(t: object) -> dict[str, object]:
            return {"name": t.name, "url": t.url, "pid": t.server.pid}  # type: ignore[attr-defined]

        spec = {
            "type": "cluster",
            "mode": "relay",
            "url": nodes[0].url,
            "secret": SECRET,
            "single": node(single),
            "nodes": [node(t) for t in nodes],
            "redis_port": redis.port,
            "redis_pid": redis.pid,
            "sessions": 6,
            "rate": 50,
            "warmup": 0.2,
            "window": 1.1,  # a heartbeat (every second per node) falls in every window
            "rounds": 1,
            "kill": 1,
            "failover_rate": 20,
            "jitter": 0.1,
            "failover_budget": 15,
            "budget": 90,
        }
        r = uvloop.run(loadgen.run_job(spec))
    finally:
        for t in started:
            t.stop()
        redis.stop()
    assert r["ok"], r
    # visitors enter at node i % 2, viewers at (i // 2) % 2: sessions 1, 2 and 5 are redirected
    assert r["owners_cluster"] == {"node1": 3, "node2": 3} and r["owners_single"] == {"single": 6}
    assert r["setup_cluster"]["redirects"] == 3 and r["setup_single"]["redirects"] == 0
    runs = {w["side"]: w for w in r["windows"]}
    assert set(runs) == {"single", "single-half", "cluster"}
    assert runs["single-half"]["sessions"] == 3 and runs["cluster"]["sessions"] == 6
    for w in runs.values():
        assert w["lost"] == 0 and w["undelivered"] == 0 and w["deliveries"] > 0, w
        assert sum(n["deliveries"] for n in w["nodes"].values()) == w["deliveries"]
    assert set(runs["cluster"]["nodes"]) == {"node1", "node2"} and runs["cluster"]["redis_commands"] > 0
    assert r["redis_steady"]["per_s"] > 0 and "info" not in r["redis_steady"]["by_command_per_s"]
    assert r["drops_single"] == 0 and r["drops_cluster"] == 0
    f = r["failover"]
    assert f["killed"] == "node2" and f["affected"] == 3 and f["watching"] == 3, f
    assert f["moved_to"] == ["node1"] and f["redispatched"] >= 6  # each visitor and viewer refused by node2 once
    assert 0 < f["kill_to_watching_ms"]["p50"] <= f["kill_to_watching_ms"]["max"] < 15_000


def test_report_orders_scenario_10_after_9_and_shows_only_its_columns() -> None:
    from bench import report, scenarios

    data = {"scenarios": {k: {"title": f"{k}. x", "rows": []} for k in ("1", "10", "2", "9")}}
    assert [sc["title"] for sc in report.ordered(data)] == ["1. x", "2. x", "9. x", "10. x"]
    sc = {
        "title": "10. Cluster",
        "columns": ["relay"],
        "rows": [scenarios.row("10 cluster", "c", "per core, 2 nodes / 1 node", "x", {"relay": 1.0}, "higher")],
    }
    text = report.format_scenario(sc)
    assert "relay" in text and "websockets" not in text and "picows" not in text
    assert "per core, 2 nodes / 1 node" in report.markdown_table({"scenarios": {"cluster": sc}})
