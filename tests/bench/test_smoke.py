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
