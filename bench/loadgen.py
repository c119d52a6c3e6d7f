"""The load generator: picows clients on uvloop, one process, one core.

It plays visitors that send real protocol frames (:mod:`bench.frames`: each
delta carries a sequence number and its send time) and viewers that receive
them, recording latency, loss and duplicates. It drives two kinds of target
with the same frames:

* ``raw`` (the baselines): ``/ws/<session>/visitor`` and ``/ws/<session>/viewer``;
  connected means ready.
* ``relay``: the flows of docs/protocol.md. The visitor connects to
  ``/ws/visitor`` and sends HELLO + PRESENCE; each viewer connects to
  ``/ws/viewer`` with a watch grant minted offline with the relay's signer
  (``relay.core.grants``); the visitor answers every SESSION_REQUEST with
  SESSION_ACCEPT, every RESYNC_REQUEST with a keyframe, every PING with PONG.

It reads one JSON spec (``{"jobs": [...]}``) from the first line of stdin,
runs the jobs in order and prints one ``RESULT {json}`` line per job on
stdout (``EVENT ...`` lines for barriers; progress on stderr). Every wait is
bounded. The server's CPU time is read from /proc/<server_pid>/stat at the
edges of the measurement window, so "deliveries" and "CPU" cover the same
interval; the generator's own CPU over that window is reported too, with a
warning when it passes 90% of its core (then the figures measure the
generator, not the server).

    echo '{"jobs":[{"type":"fanout","mode":"raw","url":"ws://127.0.0.1:8001"}]}' \
        | python -m bench.loadgen
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import resource
import socket
import struct
import sys
import time
from array import array
from collections.abc import Callable
from typing import Any, cast

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect, ws_create_server

import protocol
from bench.frames import KIND_DELTA, KIND_KEYFRAME, STAMP, FrameTemplate
from bench.proc import cpu_times, raise_nofile, rss_bytes
from bench.targets import ORIGIN

__all__ = ["Job", "run_job", "run_jobs", "latency_stats", "main"]

perf_ns = time.perf_counter_ns
BINARY = WSMsgType.BINARY
_BIN_AT = 22  # see bench.frames: bin type byte of DomDelta/DomKeyframe
_OFFS = {0xC4: 24, 0xC5: 25, 0xC6: 27}
MAX_MESSAGE = 16 * 1024 * 1024

K_WELCOME = int(protocol.Kind.WELCOME)
K_ERROR = int(protocol.Kind.ERROR)
K_SESSION_REQUEST = int(protocol.Kind.SESSION_REQUEST)
K_SESSION_ACCEPT = int(protocol.Kind.SESSION_ACCEPT)
K_SESSION_DECLINE = int(protocol.Kind.SESSION_DECLINE)
K_SESSION_END = int(protocol.Kind.SESSION_END)
K_RESYNC = int(protocol.Kind.RESYNC_REQUEST)
K_PING = int(protocol.Kind.PING)
K_PONG = int(protocol.Kind.PONG)


def log(*a: object) -> None:
    print("[loadgen]", *a, file=sys.stderr, flush=True)


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Job:
    """One measurement: shared counters and settings the connections read."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.mode: str = spec.get("mode", "raw")
        self.url: str = spec["url"].rstrip("/")
        self.rec = False  # record latencies now
        self.lat: array[int] = array("q")
        self.pair = False  # also record the seq of each latency (paired direct path)
        self.lat_seq: array[int] = array("q")
        self.sending = False
        self.errors: list[str] = []
        self.run_id = spec.get("run_id") or f"r{os.getpid()}x{perf_ns() % 10**9}"
        self._signer: Any = None
        self.close_codes: dict[int, int] = {}

    def signer(self) -> Any:
        if self._signer is None:
            from relay.core.grants import Signer

            self._signer = Signer(self.spec["secret"].encode())
        return self._signer

    def grant(self, short_id: str, agent: str) -> str:
        from relay.core.grants import Grant

        g = Grant(
            visitor=short_id,
            agent_id=agent,
            agent_name=agent,
            permissions=("click",),
            expires=time.time() + 600,
        )
        return str(self.signer().grant(g))

    def note_close(self, code: int) -> None:
        self.close_codes[code] = self.close_codes.get(code, 0) + 1


class Session:
    """A visitor and its viewers; the visitor's send loop lives here."""

    def __init__(self, job: Job, index: int, frame: int, keyframe: int) -> None:
        self.job = job
        self.index = index
        self.name = f"{job.run_id}s{index}"
        self.tmpl = FrameTemplate(frame)
        self.kf = FrameTemplate(max(keyframe, 64), keyframe=True)
        self.visitor: Visitor | None = None
        self.direct: WSTransport | None = None
        self.viewers: list[Viewer] = []
        self.seq = 0  # last delta seq sent
        self.delivered = 0  # deltas delivered to the measured (non-slow) viewers
        self.nview = 0  # measured viewers
        self.hi = 0
        self.low = 0
        self.pumping = False
        self.t_start = 0.0
        self.rate = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.last_progress = 0.0

    # --- sending ---------------------------------------------------------------
    def send_delta(self) -> None:
        self.seq += 1
        assert self.visitor is not None and self.visitor.transport is not None
        frame = self.tmpl.stamp(self.seq, perf_ns())
        self.visitor.transport.send(BINARY, frame)
        if self.direct is not None:  # the same bytes, same stamp, over the direct hop
            self.direct.send(BINARY, frame)

    def send_keyframe(self) -> None:
        if self.visitor is None or self.visitor.transport is None:
            return
        self.visitor.transport.send(BINARY, self.kf.stamp(self.seq, perf_ns()))

    def pump(self) -> None:
        """Saturated mode: keep up to ``hi`` deliveries in flight, refill from ``low``."""
        inflight = self.seq * self.nview - self.delivered
        n = (self.hi - inflight) // self.nview
        send = self.send_delta
        for _ in range(n):
            send()

    def start_saturated(self, window: int) -> None:
        self.nview = max(1, self.nview)
        self.hi = window * self.nview
        self.low = self.hi // 2
        self.pumping = True
        self.pump()

    def start_paced(self, rate: float, loop: asyncio.AbstractEventLoop, phase: float) -> None:
        self.rate = rate
        self.t_start = loop.time() + phase
        self._base = self.seq
        self.timer = loop.call_at(self.t_start, self.tick, loop)

    def tick(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self.job.sending:
            return
        now = loop.time()
        due = self._base + int((now - self.t_start) * self.rate) + 1
        n = min(due - self.seq, 64)
        for _ in range(n):
            self.send_delta()
        nxt = self.t_start + (self.seq - self._base) / self.rate
        # uvloop's clock and timers tick in milliseconds: a sub-ms delay would
        # fire at once with the same loop.time() and spin; the catch-up above
        # sends whatever fell due meanwhile.
        self.timer = loop.call_at(max(nxt, now + 0.001), self.tick, loop)

    def stop(self) -> None:
        self.pumping = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def _fail(fut: asyncio.Future[Any], why: str) -> None:
    """Fail a future without an "exception never retrieved" log if nobody awaits it."""
    if not fut.done():
        fut.set_exception(ConnectionError(why))
        fut.exception()


class Conn(WSListener):
    """Common client socket behaviour: connection state, close codes, control frames."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.transport: WSTransport | None = None
        self.close_code = 0
        self.close_reason = ""
        self.closed_at = 0.0
        self.buf: bytearray | None = None
        self.welcome: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.errors: list[str] = []
        self.error: protocol.Error | None = None  # the last ERROR (a 4003 carries the owner's node and url)

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.closed_at:
            self.closed_at = time.monotonic()
        _fail(self.welcome, f"closed {self.close_code} before WELCOME")

    def _assemble(self, frame: WSFrame) -> bytes | None:
        """Slow path: close, ping, text, fragments. Returns a whole binary message or None."""
        t = frame.msg_type
        if t is WSMsgType.CLOSE:
            self.close_code = int(cast(Any, frame.get_close_code()))
            with contextlib.suppress(Exception):
                self.close_reason = str(frame.get_close_message() or b"", "utf-8", "replace")
            self.job.note_close(self.close_code)
            self.closed_at = time.monotonic()
            if self.transport is not None:
                self.transport.send_close(frame.get_close_code())
                self.transport.disconnect()
            return None
        if t is BINARY or t is WSMsgType.CONTINUATION:
            if self.buf is None:
                self.buf = bytearray()
            self.buf += frame.get_payload_as_memoryview()
            if frame.fin:
                out = bytes(self.buf)
                self.buf = None
                return out
        return None

    def send_msg(self, msg: protocol.Message) -> None:
        if self.transport is not None and not self.transport.is_disconnected:
            self.transport.send(BINARY, protocol.encode(msg))

    def control(self, data: bytes) -> None:
        """A frame that is not a delta: decode and handle (never on the hot path)."""
        try:
            msg = protocol.decode(data)
        except protocol.ProtocolError as e:
            self.errors.append(f"bad frame from server: {e}")
            return
        if isinstance(msg, protocol.Welcome):
            if not self.welcome.done():
                self.welcome.set_result(msg)
        elif isinstance(msg, protocol.Ping):
            self.send_msg(protocol.Pong(t=msg.t))
        elif isinstance(msg, protocol.Error):
            self.error = msg
            if msg.close_code != protocol.CloseCode.SESSION_MOVED:  # a redirect is no error
                self.errors.append(f"ERROR {msg.code} {msg.message} {msg.close_code}")
        else:
            self.on_control(msg)

    def on_control(self, msg: protocol.Message) -> None:
        pass

    def close(self) -> None:
        t = self.transport
        if t is not None and not t.is_disconnected:
            with contextlib.suppress(Exception):
                t.send_close(WSCloseCode.OK)
            t.disconnect()


class Visitor(Conn):
    def __init__(self, session: Session) -> None:
        super().__init__(session.job)
        self.session = session
        self.requests = 0
        self.text: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.TEXT:
            if not self.text.done():
                self.text.set_result(frame.get_payload_as_utf8_text())
            return
        if frame.msg_type is BINARY and frame.fin:
            data = frame.get_payload_as_bytes()
        else:
            got = self._assemble(frame)
            if got is None:
                return
            data = got
        if self.job.mode == "relay":
            self.control(data)

    def on_control(self, msg: protocol.Message) -> None:
        if isinstance(msg, protocol.SessionRequest):
            self.requests += 1
            self.send_msg(protocol.SessionAccept(session=msg.session))
        elif isinstance(msg, protocol.ResyncRequest):
            self.session.send_keyframe()


class Viewer(Conn):
    """Receives deltas: latency, loss, duplicates. Hot path in :meth:`on_ws_frame`."""

    def __init__(self, session: Session, slow: bool = False) -> None:
        super().__init__(session.job)
        self.session = session
        self.slow = slow
        self.expect = 1
        self.received = 0
        self.lost = 0
        self.dup = 0
        self.keyframes = 0
        self.resyncs = 0  # keyframes that moved the stream (queue cleared, log resent)
        self.skipped = 0  # frames a resync jumped over
        self.kf_at: list[float] = []
        self.accepted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiter: asyncio.Future[None] | None = None
        self.wait_seq = 0
        self.last_at = 0.0

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is BINARY and frame.fin and self.buf is None:
            mv = frame.get_payload_as_memoryview()
        else:
            got = self._assemble(frame)
            if got is None:
                return
            mv = memoryview(got)
        kind = mv[1]
        if kind == KIND_DELTA:
            seq, t0 = STAMP.unpack_from(mv, _OFFS[mv[_BIN_AT]])
            now = perf_ns()
            self.received += 1
            exp = self.expect
            if seq == exp:
                self.expect = seq + 1
            elif seq > exp:
                self.lost += seq - exp
                self.expect = seq + 1
            else:
                self.dup += 1
            if self.slow:
                self.last_at = time.monotonic()
                return
            s = self.session
            s.delivered += 1
            job = self.job
            if job.rec:
                job.lat.append(now - t0)
                if job.pair:
                    job.lat_seq.append(seq)
            if s.pumping and s.seq * s.nview - s.delivered <= s.low:
                s.pump()
            if self.waiter is not None and seq >= self.wait_seq:
                self.waiter.set_result(None)
                self.waiter = None
        elif kind == KIND_KEYFRAME:
            seq, _t0 = STAMP.unpack_from(mv, _OFFS[mv[_BIN_AT]])
            self.keyframes += 1
            self.kf_at.append(time.monotonic())
            if seq + 1 != self.expect and self.keyframes > 1:
                self.resyncs += 1
                if seq + 1 > self.expect:
                    self.skipped += seq + 1 - self.expect
            self.expect = seq + 1  # rebuild from the keyframe
            if self.waiter is not None and seq >= self.wait_seq:
                self.waiter.set_result(None)
                self.waiter = None
        elif self.job.mode == "relay":
            self.control(bytes(mv))

    def on_control(self, msg: protocol.Message) -> None:
        if isinstance(msg, protocol.SessionAccept):
            if not self.accepted.done():
                self.accepted.set_result(None)
        elif isinstance(msg, protocol.SessionDecline | protocol.SessionEnd):
            self.errors.append(f"{type(msg).__name__} {msg}")

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        super().on_ws_disconnected(transport)
        _fail(self.accepted, f"closed {self.close_code} before SESSION_ACCEPT")
        if self.waiter is not None:
            _fail(self.waiter, f"closed {self.close_code}")
            self.waiter = None

    async def until_seq(self, seq: int, timeout: float) -> None:
        if self.expect > seq:
            return
        self.wait_seq = seq
        self.waiter = asyncio.get_running_loop().create_future()
        await asyncio.wait_for(self.waiter, timeout)


# --- connecting --------------------------------------------------------------------
async def _connect(url: str, listener: Conn, timeout: float = 10.0, **kw: Any) -> None:
    """``kw`` goes to ``loop.create_connection`` (``local_addr``: the source address)."""
    await ws_connect(
        lambda: listener,
        url,
        websocket_handshake_timeout=timeout,
        max_frame_size=MAX_MESSAGE,
        extra_headers={"Origin": ORIGIN},
        enable_auto_pong=True,
        **kw,
    )


async def connect_visitor(session: Session, timeout: float = 10.0) -> Visitor:
    job = session.job
    v = Visitor(session)
    session.visitor = v
    if job.mode == "raw":
        await _connect(f"{job.url}/ws/{session.name}/visitor", v, timeout)
        v.welcome.set_result(None)
        return v
    await _connect(f"{job.url}/ws/visitor", v, timeout)
    v.send_msg(protocol.Hello(role="visitor", version=1, client_id=session.name))
    welcome = await asyncio.wait_for(v.welcome, timeout)
    session.short_id = welcome.client_id or session.name  # type: ignore[attr-defined]
    v.send_msg(protocol.Presence(url="http://127.0.0.1/bench", title=f"bench {session.name}", browser="bench"))
    return v


async def connect_viewer(session: Session, slow: bool = False, timeout: float = 10.0, accept: bool = True) -> Viewer:
    job = session.job
    w = Viewer(session, slow)
    if job.mode == "raw":
        await _connect(f"{job.url}/ws/{session.name}/viewer", w, timeout)
        w.welcome.set_result(None)
        w.accepted.set_result(None)
    else:
        token = job.grant(getattr(session, "short_id", session.name), f"agent-{len(session.viewers)}")
        await _connect(f"{job.url}/ws/viewer", w, timeout)
        w.send_msg(protocol.Hello(role="viewer", version=1, token=token))
        await asyncio.wait_for(w.welcome, timeout)
        if accept:
            await asyncio.wait_for(w.accepted, timeout)
    session.viewers.append(w)
    if not slow:
        session.nview += 1
    return w


async def setup_sessions(
    job: Job, n: int, viewers: int, frame: int, keyframe: int, slow: int, concurrency: int, timeout: float
) -> list[Session]:
    sessions = [Session(job, i, frame, keyframe) for i in range(n)]
    sem = asyncio.Semaphore(max(1, concurrency))

    async def one(s: Session) -> None:
        async with sem:
            await connect_visitor(s, timeout)
            nslow = slow if s.index == 0 else 0
            await asyncio.gather(*(connect_viewer(s, i < nslow, timeout) for i in range(viewers + nslow)))

    await asyncio.wait_for(asyncio.gather(*(one(s) for s in sessions)), timeout * 3 + n * 0.05)
    return sessions


async def sync_keyframe(sessions: list[Session], timeout: float) -> None:
    """Send each session's first keyframe and wait until every viewer holds it."""
    for s in sessions:
        s.send_keyframe()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(w.keyframes > 0 for s in sessions for w in s.viewers):
            return
        await asyncio.sleep(0.005)
    missing = sum(1 for s in sessions for w in s.viewers if w.keyframes == 0)
    raise TimeoutError(f"{missing} viewers never received the first keyframe")


async def close_all(conns: list[Conn], timeout: float = 5.0) -> None:
    for c in conns:
        c.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(
        c.transport is not None and not c.transport.is_disconnected for c in conns
    ):
        await asyncio.sleep(0.02)


def all_conns(sessions: list[Session]) -> list[Conn]:
    out: list[Conn] = []
    for s in sessions:
        if s.visitor is not None:
            out.append(s.visitor)
        out.extend(s.viewers)
    return out


# --- statistics --------------------------------------------------------------------
def latency_stats(lat_ns: array[int] | list[int], cdf_points: int = 200) -> dict[str, Any]:
    """Percentiles in µs and a downsampled CDF (value at evenly spaced quantiles)."""
    if not lat_ns:
        return {"n": 0}
    xs = sorted(lat_ns)
    n = len(xs)

    def q(p: float) -> float:
        return round(xs[min(n - 1, int(p * n))] / 1000, 1)

    step = max(1, n // cdf_points)
    cdf = [round(xs[i] / 1000, 1) for i in range(0, n, step)]
    return {
        "n": n,
        "p50_us": q(0.50),
        "p90_us": q(0.90),
        "p99_us": q(0.99),
        "p999_us": q(0.999),
        "max_us": round(xs[-1] / 1000, 1),
        "mean_us": round(sum(xs) / n / 1000, 1),
        "cdf_us": cdf,
    }


class Window:
    """CPU and counters at the edges of the measurement window."""

    def __init__(self, server_pid: int | None) -> None:
        self.pid = server_pid
        self.t0 = time.perf_counter()
        self.own0 = self_cpu()
        self.srv0 = cpu_times(server_pid) if server_pid else None
        self.rss0 = rss_bytes(server_pid) if server_pid else 0

    def close(self, deliveries: int) -> dict[str, Any]:
        wall = time.perf_counter() - self.t0
        own = self_cpu() - self.own0
        out: dict[str, Any] = {
            "wall_s": round(wall, 3),
            "deliveries": deliveries,
            "del_per_s": round(deliveries / wall, 1) if wall > 0 else 0.0,
            "loadgen_cpu_pct": round(100 * own / wall, 1) if wall > 0 else 0.0,
        }
        if self.pid and self.srv0 is not None:
            d = cpu_times(self.pid) - self.srv0
            out["server_cpu_pct"] = round(100 * d.total / wall, 1)
            out["server_user_s"] = round(d.user, 3)
            out["server_sys_s"] = round(d.sys, 3)
            if deliveries:
                out["us_per_del"] = round(1e6 * d.total / deliveries, 2)
                out["us_per_del_user"] = round(1e6 * d.user / deliveries, 2)
                out["us_per_del_sys"] = round(1e6 * d.sys / deliveries, 2)
        if self.pid:
            out["server_rss"] = rss_bytes(self.pid)
            out["server_rss_growth"] = out["server_rss"] - self.rss0
        if out["loadgen_cpu_pct"] > 90:
            out["warning"] = f"load generator at {out['loadgen_cpu_pct']}% of its core: figures may be its limit"
            log("WARNING", out["warning"])
        return out


async def until_idle(pids: list[int], at_least: float, at_most: float, busy: float = 0.1) -> float:
    """Wait ``at_least`` s, then until the servers ``pids`` together use under ``busy`` of a
    core over 0.25 s (what an earlier run left them doing: buffered input, store writes),
    or ``at_most`` s. Returns the seconds waited."""
    t0 = time.monotonic()
    await asyncio.sleep(at_least)
    live = [p for p in pids if os.path.exists(f"/proc/{p}/stat")]
    while live and time.monotonic() - t0 < at_most:
        try:
            c0 = sum(cpu_times(p).total for p in live)
            await asyncio.sleep(0.25)
            if sum(cpu_times(p).total for p in live) - c0 < busy * 0.25:
                break
        except OSError:  # one exited: nothing to wait for
            break
    return round(time.monotonic() - t0, 2)


# --- jobs ----------------------------------------------------------------------------
async def job_fanout(job: Job) -> dict[str, Any]:
    """1 visitor -> N viewers per session, saturated (rate 0) or paced; optional slow viewers."""
    sp = job.spec
    loop = asyncio.get_running_loop()
    n_sessions = int(sp.get("sessions", 1))
    n_viewers = int(sp.get("viewers", 4))
    frame = int(sp.get("frame", 1024))
    rate = float(sp.get("rate", 0))
    warmup = float(sp.get("warmup", 0.5))
    duration = float(sp.get("duration", 2.0))
    slow = int(sp.get("slow", 0))
    kf_every = float(sp.get("keyframe_every", 0))
    timeout = float(sp.get("timeout", 15))
    t_setup = time.perf_counter()
    sessions = await setup_sessions(
        job,
        n_sessions,
        n_viewers,
        frame,
        int(sp.get("keyframe", 4096)),
        slow,
        int(sp.get("concurrency", 32)),
        timeout,
    )
    setup_s = time.perf_counter() - t_setup
    result: dict[str, Any] = {"setup_s": round(setup_s, 2), "connections": len(all_conns(sessions))}
    hop: DirectHop | None = None
    try:
        await sync_keyframe(sessions, timeout)
        if sp.get("direct"):
            hop = DirectHop(job)
            sessions[0].direct = await hop.start(sessions[0], sp.get("sink_core"))
            job.pair = True
        job.sending = True
        if rate > 0:
            for i, s in enumerate(sessions):
                s.start_paced(rate, loop, (i / max(1, n_sessions)) / rate)
        else:
            for s in sessions:
                s.start_saturated(int(sp.get("window", 32)))
        kf_task: asyncio.Task[None] | None = None
        if kf_every > 0:

            async def keyframes() -> None:
                while job.sending:
                    await asyncio.sleep(kf_every)
                    for s in sessions:
                        s.send_keyframe()

            kf_task = asyncio.ensure_future(keyframes())
        slow_viewers = [w for s in sessions for w in s.viewers if w.slow]
        for w in slow_viewers:
            if w.transport is not None:
                w.transport.underlying_transport.pause_reading()
        watchdog_stalled = False

        async def watch(until: float) -> None:
            # Saturated mode is self-clocked by deliveries; if the server drops
            # frames the window never drains, so re-pump and note the stall.
            nonlocal watchdog_stalled
            last = -1
            idle_since = time.monotonic()
            while time.monotonic() < until:
                await asyncio.sleep(0.05)
                total = sum(s.delivered for s in sessions)
                if total != last:
                    last, idle_since = total, time.monotonic()
                elif time.monotonic() - idle_since > 1.0:
                    watchdog_stalled = True
                    for s in sessions:
                        if s.pumping:
                            s.delivered = s.seq * s.nview  # forgive what is lost
                            s.pump()
                    idle_since = time.monotonic()

        await watch(time.monotonic() + warmup)
        base = sum(s.delivered for s in sessions)
        seq0 = [s.seq for s in sessions]
        job.rec = bool(sp.get("latency", True))
        if hop is not None:
            hop.command("rec1")
        win = Window(sp.get("server_pid"))
        await watch(time.monotonic() + duration)
        delivered = sum(s.delivered for s in sessions) - base
        result.update(win.close(delivered))
        job.rec = False
        if hop is not None:
            hop.command("rec0")
        job.sending = False
        for s in sessions:
            s.stop()
        sent = sum(s.seq - a for s, a in zip(sessions, seq0, strict=True))
        result["sent_per_s"] = round(sent / result["wall_s"], 1)
        result["offered_per_s"] = round(rate * n_sessions, 1) if rate else None
        if kf_task is not None:
            kf_task.cancel()
        # drain: every measured viewer should reach its session's last seq
        deadline = time.monotonic() + float(sp.get("drain", 5))
        while time.monotonic() < deadline:
            if all(w.expect > s.seq for s in sessions for w in s.viewers if not w.slow and not w.closed_at):
                break
            await asyncio.sleep(0.01)
        lost = dup = closed = behind = resyncs = 0
        for s in sessions:
            for w in s.viewers:
                if w.slow:
                    continue
                lost += w.lost + w.skipped
                behind += max(0, s.seq - (w.expect - 1))
                dup += w.dup
                resyncs += w.resyncs
                closed += bool(w.closed_at)
        result.update(
            lost=lost,
            undelivered=behind,
            resyncs=resyncs,
            dup=dup,
            viewers_closed=closed,
            stalled=watchdog_stalled,
            frames_sent=sum(s.seq for s in sessions),
        )
        result["latency"] = latency_stats(job.lat)
        if hop is not None:
            rep = await hop.report(sessions[0].seq)
            result["direct"] = {"lost": rep["lost"], "dup": rep["dup"], "latency": rep["latency"]}
            result["added"] = paired(job, rep["pairs"])
        if slow_viewers:
            result["slow"] = await slow_outcome(slow_viewers)
        errs = [e for c in all_conns(sessions) for e in c.errors]
        if errs:
            result["errors"] = errs[:10]
        result["close_codes"] = dict(job.close_codes)
        return result
    finally:
        job.sending = False
        for s in sessions:
            s.stop()
        await close_all(all_conns(sessions))
        if hop is not None:
            await hop.stop()


async def slow_outcome(slow: list[Viewer]) -> list[dict[str, Any]]:
    """What became of viewers that stopped reading: resume, drain 2 s, report."""
    before = [(w.closed_at, w.received) for w in slow]
    t_resume = time.monotonic()
    for w in slow:
        if w.transport is not None and not w.transport.is_disconnected:
            w.transport.underlying_transport.resume_reading()
    await asyncio.sleep(2.0)
    out = []
    for w, (closed0, rx0) in zip(slow, before, strict=True):
        if w.closed_at:
            outcome = f"closed {w.close_code}"
        elif w.resyncs:
            outcome = f"resynced x{w.resyncs}"
        else:
            outcome = "kept all (unbounded queue)"
        out.append(
            {
                "outcome": outcome,
                "closed": bool(w.closed_at),
                "close_code": w.close_code,
                "closed_before_resume": bool(closed0),
                "resyncs": w.resyncs,
                "skipped_by_resync": w.skipped,
                "gaps": w.lost,
                "received_before_resume": rx0,
                "received_total": w.received,
                "behind_at_end": max(0, w.session.seq - (w.expect - 1)),
                "drained_s": round(time.monotonic() - t_resume, 2),
            }
        )
    return out


class DirectHop:
    """A sink process on ``core`` and one raw websocket to it: the direct one-hop path."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.proc: asyncio.subprocess.Process | None = None
        self.conn: Visitor | None = None

    async def start(self, session: Session, core: int | None) -> WSTransport:
        pin = ["taskset", "-c", str(core)] if core is not None else []
        self.proc = await asyncio.create_subprocess_exec(
            *pin, sys.executable, "-m", "bench.loadgen", "--sink",
            stdout=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 15)
        port = int(line.split()[1])
        self.conn = Visitor(session)
        await _connect(f"ws://127.0.0.1:{port}/direct", self.conn)
        assert self.conn.transport is not None
        return self.conn.transport

    def command(self, text: str) -> None:
        if self.conn is not None and self.conn.transport is not None:
            self.conn.transport.send(WSMsgType.TEXT, text.encode())

    async def report(self, last_seq: int) -> dict[str, Any]:
        assert self.conn is not None
        self.command(f"report {last_seq}")
        out: dict[str, Any] = json.loads(await asyncio.wait_for(self.conn.text, 10))
        return out

    async def stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self.proc is not None:
            if self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
            await self.proc.wait()


def paired(job: Job, pairs: list[list[int]]) -> dict[str, Any]:
    """Per-frame relay-added latency: each viewer's latency minus the direct hop's for that seq."""
    direct = {seq: lat for seq, lat in pairs}
    diffs = sorted(lat - direct[seq] for seq, lat in zip(job.lat_seq, job.lat, strict=True) if seq in direct)
    if not diffs:
        return {"n": 0}
    n = len(diffs)
    return {
        "n": n,
        "p50_us": round(diffs[n // 2] / 1000, 1),
        "p90_us": round(diffs[min(n - 1, int(0.9 * n))] / 1000, 1),
        "p99_us": round(diffs[min(n - 1, int(0.99 * n))] / 1000, 1),
    }


async def job_direct(job: Job) -> dict[str, Any]:
    """The direct one-hop path alone: paced frames to a sink process on ``sink_core``.

    The sink (``python -m bench.loadgen --sink``) runs where the relay would,
    so the hop crosses processes and cores with the wake-ups that implies,
    and nothing else. It timestamps with the same system-wide monotonic clock.
    """
    sp = job.spec
    loop = asyncio.get_running_loop()
    s = Session(job, 0, int(sp.get("frame", 1024)), 4096)
    hop = DirectHop(job)
    try:
        await hop.start(s, sp.get("sink_core"))
        s.visitor = hop.conn
        s.nview = 1
        job.sending = True
        s.start_paced(float(sp.get("rate", 60)), loop, 0.0)
        await asyncio.sleep(float(sp.get("warmup", 0.3)))
        hop.command("rec1")
        seq0 = s.seq
        await asyncio.sleep(float(sp.get("duration", 2.0)))
        hop.command("rec0")
        job.sending = False
        s.stop()
        await asyncio.sleep(0.05)
        rep = await hop.report(s.seq)
        return {"sent": s.seq - seq0, "lost": rep["lost"], "dup": rep["dup"], "latency": rep["latency"]}
    finally:
        job.sending = False
        s.stop()
        await hop.stop()


async def sink_main() -> None:
    """Receiver side of :func:`job_direct`: record latencies until told to report."""
    job = Job({"mode": "raw", "url": "ws://unused"})
    job.pair = True
    s = Session(job, 0, 1024, 64)
    s.nview = 1
    finished = asyncio.get_running_loop().create_future()

    class Sink(Viewer):
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type is not WSMsgType.TEXT:
                super().on_ws_frame(transport, frame)
                return
            cmd = frame.get_payload_as_ascii_text()
            if cmd == "rec1":
                job.rec = True
            elif cmd == "rec0":
                job.rec = False
            elif cmd.startswith("report"):
                last = int(cmd.split()[1])
                out: dict[str, Any] = {"lost": self.lost + max(0, last - (self.expect - 1)), "dup": self.dup}
                out["latency"] = latency_stats(job.lat)
                out["pairs"] = list(zip(job.lat_seq, job.lat, strict=True))
                transport.send(WSMsgType.TEXT, json.dumps(out).encode())

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            super().on_ws_disconnected(transport)
            if not finished.done():
                finished.set_result(None)

    server = await ws_create_server(lambda _req: Sink(s), "127.0.0.1", 0, max_frame_size=MAX_MESSAGE)
    print("PORT", server.sockets[0].getsockname()[1], flush=True)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(finished, 300)
    server.close()


async def job_idle(job: Job) -> dict[str, Any]:
    """Open ``count`` connections in sessions of ``group`` (1 visitor + viewers) and hold them."""
    sp = job.spec
    count = int(sp["count"])
    group = int(sp.get("group", 5))
    timeout = float(sp.get("timeout", 20))
    n_sessions = count // group
    first = int(sp.get("first_session", 0))
    sessions = [Session(job, first + i, 1024, 64) for i in range(n_sessions)]
    sem = asyncio.Semaphore(int(sp.get("concurrency", 64)))
    failures: list[str] = []
    done = 0

    deadline = time.perf_counter() + float(sp.get("connect_deadline", 1e9))
    skipped = 0

    async def one(s: Session) -> None:
        nonlocal done, skipped
        async with sem:
            if time.perf_counter() > deadline:  # bounded: stop opening, report what is held
                skipped += 1
                return
            try:
                await connect_visitor(s, timeout)
                done += 1
                res = await asyncio.gather(
                    *(connect_viewer(s, False, timeout, accept=False) for _ in range(group - 1)),
                    return_exceptions=True,
                )
                for r in res:
                    if isinstance(r, BaseException):
                        failures.append(repr(r))
                    else:
                        done += 1
            except (OSError, TimeoutError, ConnectionError) as e:
                failures.append(repr(e))
            except Exception as e:  # picows handshake errors and the like
                failures.append(repr(e))

    t0 = time.perf_counter()
    own0 = self_cpu()
    srv0 = cpu_times(sp["server_pid"]) if sp.get("server_pid") else None
    await asyncio.wait_for(asyncio.gather(*(one(s) for s in sessions)), float(sp.get("budget", 120)))
    elapsed = time.perf_counter() - t0
    result: dict[str, Any] = {
        "connections": done,
        "failures": len(failures),
        "failure_samples": failures[:5],
        "connect_s": round(elapsed, 3),
        "sessions_skipped_at_deadline": skipped,
        "handshakes_per_s": round(done / elapsed, 1) if elapsed else 0.0,
        "loadgen_cpu_pct": round(100 * (self_cpu() - own0) / elapsed, 1) if elapsed else 0.0,
    }
    if srv0 is not None:
        d = cpu_times(sp["server_pid"]) - srv0
        result["server_cpu_s"] = round(d.total, 3)
        result["server_us_per_handshake"] = round(1e6 * d.total / max(1, done), 1)
    if sp.get("barrier"):
        print("EVENT connected " + json.dumps(result), flush=True)
        # wait for the orchestrator to measure RSS (bounded)
        line = await asyncio.wait_for(loop_readline(), float(sp.get("hold_max", 120)))
        _ = line
    else:
        await asyncio.sleep(float(sp.get("hold", 1.0)))
        if sp.get("server_pid"):
            result["server_rss"] = rss_bytes(sp["server_pid"])
    alive = sum(1 for c in all_conns(sessions) if c.transport is not None and not c.transport.is_disconnected)
    result["alive_at_end"] = alive
    await close_all(all_conns(sessions), 10)
    return result


async def loop_readline() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def job_join(job: Job) -> dict[str, Any]:
    """Time for a joining viewer to hold a 1 MiB keyframe and the 500 deltas after it.

    relay: the session's log serves the joiner (the visitor is not involved).
    raw: the baselines hold no log; the visitor resends keyframe + deltas when
    the viewer has connected (what a system without a relay-side log must do).
    """
    sp = job.spec
    kf_size = int(sp.get("keyframe", 1 << 20))
    deltas = int(sp.get("deltas", 500))
    frame = int(sp.get("frame", 1024))
    repeats = int(sp.get("repeats", 5))
    timeout = float(sp.get("timeout", 20))
    s = Session(job, 0, frame, kf_size)
    times: list[float] = []
    welcome_ms: list[float] = []
    try:
        await connect_visitor(s, timeout)

        def burst() -> None:
            s.send_keyframe()
            for _ in range(deltas):
                s.send_delta()

        if job.mode == "relay":
            anchor = await connect_viewer(s, False, timeout)
            burst()
            await anchor.until_seq(s.seq, timeout)
        for _ in range(repeats):
            t0 = time.perf_counter()
            if job.mode == "relay":
                w = await connect_viewer(s, False, timeout, accept=False)
                welcome_ms.append(1000 * (time.perf_counter() - t0))
            else:
                w = await connect_viewer(s, False, timeout)
                welcome_ms.append(1000 * (time.perf_counter() - t0))
                burst()
            await w.until_seq(s.seq, timeout)
            times.append(1000 * (time.perf_counter() - t0))
            if w.keyframes < 1:
                job.errors.append("joined without a keyframe")
            s.viewers.remove(w)
            w.close()
            await asyncio.sleep(0.05)
        times_sorted = sorted(times)
        return {
            "keyframe_bytes": s.kf.size,
            "deltas": deltas,
            "times_ms": [round(t, 2) for t in times],
            "median_ms": round(times_sorted[len(times) // 2], 2),
            "connect_ms_median": round(sorted(welcome_ms)[len(welcome_ms) // 2], 2),
            "errors": job.errors[:5],
        }
    finally:
        await close_all(all_conns([s]))


# --- reconnect storm ---------------------------------------------------------------
def storm_addr(slot: int) -> str:
    """Loopback source address number ``slot``: 127.100.0.1, 127.100.0.2, ... (all of 127/8
    is loopback on Linux), so per-address limits see many clients, as in production."""
    if not 0 <= slot < 250 * 250:
        raise ValueError(f"address slot {slot} out of range")
    return f"127.100.{slot // 250}.{slot % 250 + 1}"


def abort(conn: Conn) -> None:
    """Drop a connection the way a dead network path or a killed tab looks to the server
    soonest: no closing handshake, a TCP RST (SO_LINGER 0), nothing flushed."""
    t = conn.transport
    if t is None or t.is_disconnected:
        return
    ut = t.underlying_transport
    sock = ut.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError, ValueError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ut.abort()


class StormConn(Conn):
    """One connection of a storm visitor. Admitted on WELCOME (relay), or on the pong
    to a websocket PING sent after its first message (baselines: they answer nothing else)."""

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        t = frame.msg_type
        if t is WSMsgType.PONG:
            if self.job.mode == "raw" and not self.welcome.done():
                self.welcome.set_result(None)
            return
        if t is BINARY and frame.fin and self.buf is None:
            data = frame.get_payload_as_bytes()
        else:
            got = self._assemble(frame)
            if got is None:
                return
            data = got
        if self.job.mode == "relay":
            self.control(data)


class StormVisitor:
    """A visitor of the storm: its id and source address survive its reconnects."""

    __slots__ = ("addr", "attempts", "client_id", "conn", "index", "name", "t_admit", "t_start")

    def __init__(self, job: Job, index: int, addr: str) -> None:
        self.index = index
        self.name = f"{job.run_id}v{index}"
        self.addr = addr
        self.client_id = self.name  # the relay keeps a well-formed client id as the short id
        self.conn: StormConn | None = None
        self.t_start = 0.0
        self.t_admit = 0.0
        self.attempts = 0


def _hello_bytes(client_id: str) -> bytes:
    return protocol.encode(protocol.Hello(role="visitor", version=1, client_id=client_id))


PRESENCE = protocol.encode(protocol.Presence(url="http://127.0.0.1/bench", title="bench storm", browser="bench"))


async def storm_attempt(job: Job, v: StormVisitor, timeout: float) -> None:
    """Connect visitor ``v`` from its own source address and wait until it is admitted."""
    c = StormConn(job)
    v.attempts += 1
    try:
        if job.mode == "raw":
            await _connect(f"{job.url}/ws/{v.name}/visitor", c, timeout, local_addr=(v.addr, 0))
            assert c.transport is not None
            c.transport.send(BINARY, _hello_bytes(v.client_id))
            c.transport.send_ping()
            await asyncio.wait_for(c.welcome, timeout)
        else:
            await _connect(f"{job.url}/ws/visitor", c, timeout, local_addr=(v.addr, 0))
            assert c.transport is not None
            c.transport.send(BINARY, _hello_bytes(v.client_id))
            welcome = await asyncio.wait_for(c.welcome, timeout)
            v.client_id = welcome.client_id or v.client_id
        c.transport.send(BINARY, PRESENCE)  # what the SDK sends next, in both modes
    except BaseException:
        abort(c)
        raise
    v.conn = c


def _quantiles_ms(xs: list[float]) -> dict[str, float]:
    """p50/p90/p99/max in ms of sorted seconds."""
    n = len(xs)
    return {k: round(1000 * xs[min(n - 1, int(p * n))], 1) for k, p in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))} | {
        "max": round(1000 * xs[-1], 1)
    }


async def job_storm(job: Job) -> dict[str, Any]:
    """Reconnect storm: ``count`` visitors admitted, all dropped at once (TCP RST),
    all reconnecting at once with the same client ids after a random jitter.

    Visitors spread over loopback source addresses, ``per_addr`` each. Each storm:
    abort every socket, then every visitor reconnects at drop + U(0, jitter) s.
    Clients behave like relay/web/src/sdk.js: an attempt has no client-side
    timeout (a browser WebSocket has none; ``attempt_timeout`` sets one), a failed
    or closed one is retried after the SDK's backoff (0.5 s doubling to 15 s, the
    second half jittered), all bounded by ``storm_budget``. The figure is the time
    from the drop until the last visitor is admitted again, and the server's CPU
    seconds over it.
    """
    sp = job.spec
    loop = asyncio.get_running_loop()
    count = int(sp.get("count", 200))
    per_addr = max(1, int(sp.get("per_addr", 25)))
    jitter = float(sp.get("jitter", 0.5))
    storms = int(sp.get("storms", 1))
    # like the SDK's WebSocket: no client-side timeout on an attempt (0), only the budget
    attempt_timeout = float(sp.get("attempt_timeout", 0))
    budget = float(sp.get("storm_budget", 60))
    settle = float(sp.get("settle", 1.0))
    rng = random.Random(int(sp.get("seed", 5)))
    pid = sp.get("server_pid")
    visitors = [StormVisitor(job, i, storm_addr(i // per_addr)) for i in range(count)]
    failures: dict[str, int] = {}
    samples: list[str] = []

    def failed(e: BaseException) -> None:
        key = type(e).__name__ if not isinstance(e, ConnectionError) else str(e)[:60]
        failures[key] = failures.get(key, 0) + 1
        if len(samples) < 5:
            samples.append(f"{type(e).__name__}: {e}"[:200])

    async def admit(v: StormVisitor, deadline: float) -> None:
        """Attempts until admitted or past ``deadline`` (perf_counter)."""
        v.t_start = time.perf_counter()
        v.t_admit = 0.0
        tries = 0
        while True:
            tries += 1
            left = deadline - time.perf_counter()
            limit = min(left, attempt_timeout) if attempt_timeout > 0 else left
            try:
                await asyncio.wait_for(storm_attempt(job, v, limit), limit)
                v.t_admit = time.perf_counter()
                return
            except Exception as e:  # refused, reset, closed before WELCOME, timed out
                failed(e)
            # relay/web/src/sdk.js: exponential backoff with jitter, 0.5 s doubling to 15 s
            cap = min(15.0, 0.5 * 2 ** min(tries - 1, 5))
            pause = cap / 2 + rng.uniform(0.0, cap / 2)
            if time.perf_counter() + pause > deadline:
                return
            await asyncio.sleep(pause)

    # connect phase: not measured, bounded concurrency
    t0 = time.perf_counter()
    sem = asyncio.Semaphore(int(sp.get("concurrency", 128)))
    connect_deadline = t0 + float(sp.get("connect_budget", 90))

    async def first(v: StormVisitor) -> None:
        async with sem:
            await admit(v, connect_deadline)

    await asyncio.gather(*(first(v) for v in visitors))

    async def again(v: StormVisitor, at: float, deadline: float) -> None:
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        await admit(v, deadline)

    result: dict[str, Any] = {
        "count": count,
        "per_addr": per_addr,
        "addresses": (count + per_addr - 1) // per_addr,
        "jitter_s": jitter,
        "connected": sum(1 for v in visitors if v.t_admit),
        "connect_s": round(time.perf_counter() - t0, 2),
        "connect_failures": dict(failures),
        "storms": [],
    }
    try:
        if result["connected"] < count:
            raise RuntimeError(f"only {result['connected']}/{count} visitors admitted before the storm: {samples[:3]}")
        settle_pids = [int(x) for x in sp.get("settle_pids", [pid] if pid else [])]
        for _ in range(storms):
            settled = await until_idle(settle_pids, settle, 15.0)
            failures.clear()
            samples.clear()
            for v in visitors:
                v.attempts = 0
            delays = [rng.uniform(0.0, jitter) for _ in visitors]
            srv0 = cpu_times(pid) if pid else None
            own0 = self_cpu()
            t_drop = time.perf_counter()
            for v in visitors:
                if v.conn is not None:
                    abort(v.conn)
                    v.conn = None
            deadline = t_drop + budget

            tasks = [loop.create_task(again(v, t_drop + d, deadline)) for v, d in zip(visitors, delays, strict=True)]
            # the storm ends when the last visitor is admitted: CPU read right then
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, timeout=max(0.0, deadline + 5 - time.perf_counter()))
                if not done:
                    break
            t_end = max((v.t_admit for v in visitors), default=t_drop)
            srv1 = cpu_times(pid) if pid else None
            own = self_cpu() - own0
            for t in pending:
                t.cancel()
            admitted = sorted(v.t_admit - t_drop for v in visitors if v.t_admit)
            waits = sorted(v.t_admit - v.t_start for v in visitors if v.t_admit)
            n = len(admitted)
            span = t_end - t_drop
            storm: dict[str, Any] = {
                "settled_s": settled,
                "admitted": n,
                "storm_s": round(span, 3) if n == count else None,
                "last_admitted_s": round(span, 3),
                "handshakes_per_s": round(n / span, 1) if span > 0 else None,
                "retries": sum(max(0, v.attempts - 1) for v in visitors),
                "failures": dict(failures),
                "failure_samples": list(samples),
                "loadgen_cpu_pct": round(100 * own / span, 1) if span > 0 else None,
            }
            if n:
                storm["admitted_after_drop_ms"] = _quantiles_ms(admitted)
                # the recovery curve: ms after the drop by which 5%, 10%, ... 100% were back
                storm["admitted_curve_ms"] = [
                    round(1000 * admitted[min(n - 1, max(0, (n * k) // 20 - 1))], 1) for k in range(1, 21)
                ]
                storm["client_wait_ms"] = _quantiles_ms(waits)
            if srv0 is not None and srv1 is not None:
                d = srv1 - srv0
                storm["server_cpu_s"] = round(d.total, 3)
                storm["server_cpu_pct"] = round(100 * d.total / span, 1) if span > 0 else None
                storm["server_us_per_reconnect"] = round(1e6 * d.total / max(1, n), 1)
            if storm["loadgen_cpu_pct"] and storm["loadgen_cpu_pct"] > 90:
                storm["warning"] = f"load generator at {storm['loadgen_cpu_pct']}% of its core during the storm"
                log("WARNING", storm["warning"])
            result["storms"].append(storm)
            log(f"storm {len(result['storms'])}: {n}/{count} admitted in {span:.2f}s")
        result["close_codes"] = dict(job.close_codes)
        return result
    finally:
        conns: list[Conn] = [v.conn for v in visitors if v.conn is not None]
        await close_all(conns, 10)


# --- flood --------------------------------------------------------------------------
FLOOD_KINDS = ("ping", "presence", "ordered")


class FloodVisitor(Visitor):
    """The flooder's visitor socket: PONGs (one per PING flooded) counted, never decoded."""

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self.pongs = 0
        self.opened = time.monotonic()
        self.frames = 0
        self.bytes = 0

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is BINARY and frame.fin and self.buf is None:
            mv = frame.get_payload_as_memoryview()
            if len(mv) > 1 and mv[1] == K_PONG:
                self.pongs += 1
                return
        super().on_ws_frame(transport, frame)


class Flooder:
    """A hostile visitor B: floods one socket as fast as it can, and when the server
    closes it, reconnects (same client id, 20 ms later) and floods again, until told
    to stop or ``max_s``. Kinds: PING or PRESENCE frames (control class), or big
    ordered frames (DOM_DELTA of ``frame`` bytes) into B's own live session, which has
    one viewer that reads everything."""

    def __init__(self, job: Job) -> None:
        sp = job.spec
        self.job = job
        self.kind: str = sp.get("flood", "ping")
        if self.kind not in FLOOD_KINDS:
            raise ValueError(f"flood kind {self.kind!r}: one of {FLOOD_KINDS}")
        self.source: str = sp.get("source", "127.200.0.1")
        self.timeout = float(sp.get("timeout", 10))
        self.gap = float(sp.get("reconnect_delay", 0.02))
        self.high = int(sp.get("high_water", 256 * 1024))
        self.session = Session(job, 0, int(sp.get("frame", 60 * 1024)), 4096)
        self.session.name = f"{job.run_id}flood"
        self.client_id = self.session.name
        if self.kind == "ping":
            self.payload = protocol.encode(protocol.Ping(t=1))
        elif self.kind == "presence":
            self.payload = protocol.encode(
                protocol.Presence(url="http://127.0.0.1/flood", title="flood", browser="bench", tags=("flood",))
            )
        else:
            self.payload = b""
        self.stopping = False
        self.conns: list[FloodVisitor] = []
        self.connect_errors: list[str] = []
        self.t_flood = 0.0

    async def connect(self) -> FloodVisitor:
        job, s = self.job, self.session
        v = FloodVisitor(s)
        s.visitor = v
        local = {"local_addr": (self.source, 0)}
        if job.mode == "raw":
            await _connect(f"{job.url}/ws/{s.name}/visitor", v, self.timeout, **local)
            v.welcome.set_result(None)
        else:
            await _connect(f"{job.url}/ws/visitor", v, self.timeout, **local)
            v.send_msg(protocol.Hello(role="visitor", version=1, client_id=self.client_id))
            welcome = await asyncio.wait_for(v.welcome, self.timeout)
            self.client_id = welcome.client_id or self.client_id
            s.short_id = self.client_id  # type: ignore[attr-defined]
            v.send_msg(protocol.Presence(url="http://127.0.0.1/flood", title="flood", browser="bench"))
        v.opened = time.monotonic()
        self.conns.append(v)
        return v

    async def setup(self) -> None:
        await self.connect()
        if self.kind == "ordered":  # a live session of B's own, with a viewer that reads
            await connect_viewer(self.session, False, self.timeout)
            self.session.send_keyframe()

    async def flood_one(self, v: FloodVisitor, until: float) -> None:
        t = v.transport
        assert t is not None
        ut = t.underlying_transport
        s = self.session
        if self.kind == "ordered":
            s.send_keyframe()  # after a reconnect the log needs one, as the SDK sends
        payload = self.payload
        size = len(payload) if payload else s.tmpl.size
        batch = 64 if payload else 8
        while not self.stopping and not t.is_disconnected and time.monotonic() < until:
            if ut.get_write_buffer_size() < self.high:
                for _ in range(batch):
                    if payload:
                        t.send(BINARY, payload)
                    else:
                        s.send_delta()
                v.frames += batch
                v.bytes += batch * size
            await asyncio.sleep(0 if ut.get_write_buffer_size() < self.high else 0.001)

    async def run(self, max_s: float, started: Callable[[], None]) -> dict[str, Any]:
        until = time.monotonic() + max_s
        v = self.conns[-1]
        self.t_flood = time.monotonic()
        started()
        while not self.stopping and time.monotonic() < until:
            await self.flood_one(v, until)
            if self.stopping or time.monotonic() >= until:
                break
            # closed: by the server (its code), or the connection was lost (1006)
            if v.transport is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(v.transport.wait_disconnected(), 2)
            await asyncio.sleep(self.gap)
            while not self.stopping and time.monotonic() < until:
                try:
                    v = await asyncio.wait_for(self.connect(), self.timeout)
                    break
                except Exception as e:  # refused, closed before WELCOME...: try again
                    self.connect_errors.append(f"{type(e).__name__}: {e}"[:160])
                    await asyncio.sleep(0.05)
        return self.report()

    def report(self) -> dict[str, Any]:
        elapsed = max(1e-9, time.monotonic() - self.t_flood)
        codes: dict[str, int] = {}
        reasons: dict[str, int] = {}
        closed = [c for c in self.conns if c.closed_at]
        for c in closed:
            key = str(c.close_code or 1006)
            codes[key] = codes.get(key, 0) + 1
            why = f"{key} {c.close_reason}".strip()
            reasons[why] = reasons.get(why, 0) + 1
        lifetimes = sorted(c.closed_at - c.opened for c in closed)
        frames = sum(c.frames for c in self.conns)
        sent = sum(c.bytes for c in self.conns)
        errs = [e for c in self.conns for e in c.errors]
        viewer = self.session.viewers[0] if self.session.viewers else None
        return {
            "flood": self.kind,
            "frame_bytes": len(self.payload) if self.payload else self.session.tmpl.size,
            "seconds": round(elapsed, 2),
            "connects": len(self.conns),
            "closed": len(closed),
            "close_codes": codes,
            "close_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:6]),
            "median_lifetime_s": round(lifetimes[len(lifetimes) // 2], 3) if lifetimes else None,
            "median_frames_per_socket": sorted(c.frames for c in self.conns)[len(self.conns) // 2],
            "frames_sent": frames,
            "frames_per_s": round(frames / elapsed, 1),
            "mib_per_s": round(sent / elapsed / 2**20, 2),
            "pongs": sum(c.pongs for c in self.conns),
            "viewer_received": viewer.received if viewer is not None else None,
            "viewer_close_code": (viewer.close_code or (1006 if viewer.closed_at else None)) if viewer else None,
            "connect_errors": len(self.connect_errors),
            "connect_error_samples": self.connect_errors[:3],
            "errors": errs[:5],
        }

    async def close(self) -> None:
        self.stopping = True
        await close_all(all_conns([self.session]), 5)


async def flood_main() -> None:
    """``python -m bench.loadgen --flood``: the hostile visitor B in its own process.

    Reads its spec (one JSON line), runs in the SCHED_IDLE class (and at nice +10)
    so the measured client A, on the same core, is never delayed by it,
    prints ``FLOODING`` when the first flood frame is out, stops on a ``stop``
    line (or ``max_s``) and prints ``REPORT {json}``.
    """
    spec = json.loads(sys.stdin.readline())
    with contextlib.suppress(OSError):
        os.nice(int(spec.get("nice_add", 10)))
    if spec.get("idle_class", True) and hasattr(os, "SCHED_IDLE"):
        # SCHED_IDLE: B runs whenever A (same core) does not want the CPU, and never delays it, so
        # what A measures is the server under B's flood, not a core shared with B.
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    job = Job(spec)
    fl = Flooder(job)
    try:
        await asyncio.wait_for(fl.setup(), 30)

        async def stop_on_line() -> None:
            await loop_readline()
            fl.stopping = True

        stopper = asyncio.ensure_future(stop_on_line())
        rep = await fl.run(float(spec.get("max_s", 60)), lambda: print("FLOODING", flush=True))
        stopper.cancel()
    except Exception as e:
        rep = {"error": f"{type(e).__name__}: {e}"}
    finally:
        await fl.close()
    print("REPORT " + json.dumps(rep), flush=True)


async def job_flood(job: Job) -> dict[str, Any]:
    """Client A's latency quiet, then while a flooder B (its own process) floods.

    A: one visitor -> one viewer, paced ``rate`` frames/s of ``frame`` bytes, each
    frame's latency recorded (as the paced scenarios do). ``quiet`` s without B,
    then ``flood_s`` s with B flooding (``flood``: ping, presence or ordered).
    """
    sp = job.spec
    loop = asyncio.get_running_loop()
    rate = float(sp.get("rate", 50))
    quiet = float(sp.get("quiet", 3.0))
    flood_s = float(sp.get("flood_s", 3.0))
    timeout = float(sp.get("timeout", 15))
    pid = sp.get("server_pid")
    sessions = await setup_sessions(job, 1, 1, int(sp.get("frame", 1024)), 4096, 0, 1, timeout)
    s = sessions[0]
    w = s.viewers[0]
    result: dict[str, Any] = {}
    proc: asyncio.subprocess.Process | None = None
    try:
        # every server on the core idle first: an earlier flood may leave one busy for a while
        result["settled_s"] = await until_idle(
            [int(x) for x in sp.get("settle_pids", [pid] if pid else [])], 0.0, float(sp.get("settle_max", 15))
        )
        await sync_keyframe(sessions, timeout)
        job.sending = True
        s.start_paced(rate, loop, 0.0)
        await asyncio.sleep(float(sp.get("warmup", 0.5)))

        async def window(seconds: float) -> dict[str, Any]:
            job.lat = array("q")
            d0 = s.delivered
            job.rec = True
            win = Window(pid)
            await asyncio.sleep(seconds)
            out = win.close(s.delivered - d0)
            job.rec = False
            out["latency"] = latency_stats(job.lat, 100)
            return out

        result["quiet"] = await window(quiet)
        # B: its own process on this core, so its flooding is not A's latency
        fspec = {
            "mode": sp.get("flood_mode", job.mode),
            "url": sp.get("flood_url", job.url),  # another server: a control run of the harness
            "secret": sp.get("secret", ""),
            "flood": sp.get("flood", "ping"),
            "frame": int(sp.get("flood_frame", 60 * 1024)),
            "source": sp.get("flood_source", "127.200.0.1"),
            "max_s": flood_s + 30,
            "run_id": f"{job.run_id}b",
        }
        pin = ["taskset", "-c", str(sp["flood_core"])] if sp.get("flood_core") is not None else []
        proc = await asyncio.create_subprocess_exec(
            *pin, sys.executable, "-m", "bench.loadgen", "--flood",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write((json.dumps(fspec) + "\n").encode())
        await proc.stdin.drain()
        line = await asyncio.wait_for(proc.stdout.readline(), 40)
        if not line.startswith(b"FLOODING"):
            rest = line + await asyncio.wait_for(proc.stdout.read(), 10)
            raise RuntimeError(f"flooder did not start: {rest.decode(errors='replace')[:300]}")
        result["flood"] = await window(flood_s)
        proc.stdin.write(b"stop\n")
        await proc.stdin.drain()
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        result["flooder"] = json.loads(line[7:]) if line.startswith(b"REPORT ") else {"error": line.decode()[:300]}
        await asyncio.wait_for(proc.wait(), 10)
        job.sending = False
        s.stop()
        deadline = time.monotonic() + float(sp.get("drain", 3))
        while time.monotonic() < deadline and w.expect <= s.seq and not w.closed_at:
            await asyncio.sleep(0.01)
        q50, f50 = result["quiet"]["latency"].get("p50_us"), result["flood"]["latency"].get("p50_us")
        q99, f99 = result["quiet"]["latency"].get("p99_us"), result["flood"]["latency"].get("p99_us")
        result.update(
            p50_ratio=round(f50 / q50, 3) if q50 and f50 else None,
            p99_ratio=round(f99 / q99, 3) if q99 and f99 else None,
            lost=w.lost + w.skipped,
            undelivered=max(0, s.seq - (w.expect - 1)),
            a_closed=[c.close_code or 1006 for c in (s.visitor, w) if c is not None and c.closed_at],
            frames_sent=s.seq,
            close_codes=dict(job.close_codes),
        )
        errs = [e for c in all_conns(sessions) for e in c.errors]
        if errs:
            result["errors"] = errs[:10]
        return result
    finally:
        job.sending = False
        s.stop()
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        await close_all(all_conns(sessions))


# --- cluster: nodes sharing one Redis ---------------------------------------------------
EPOCH_SEQ = struct.Struct(">IQ")  # header bytes 4-15 of an ordered frame: the relay's epoch and seq
REDIRECT_JITTER = 0.25  # s: relay/web/src/redirect.js REDIRECT_JITTER_MS
MAX_REDIRECTS = 5  # redirect.js MAX_REDIRECTS: redirects in a row without a WELCOME


def ws_base(url: str) -> str:
    """An http(s) base URL (a NODE_URL) as ws(s); "" stays ""."""
    url = url.rstrip("/")
    return "ws" + url[4:] if url.startswith("http") else url


class ClusterSession(Session):
    """A session whose sockets may move between nodes. While the visitor is between sockets its
    frames are dropped (seq still advances, as a page's DOM keeps changing); ``node`` is the node
    serving it (the one that welcomed its viewer), and the failover bookkeeping lives here."""

    def __init__(self, job: Job, index: int, frame: int, keyframe: int, entry: int) -> None:
        super().__init__(job, index, frame, keyframe)
        self.entry = entry  # the node the visitor first connects to
        self.viewer_entry = 0  # the node the viewer first connects to
        self.short_id = self.name
        self.node = ""
        self.watching = False  # failover: waiting for a keyframe of an epoch other than old_epoch
        self.old_epoch = 0
        self.back_at = 0.0  # monotonic time that keyframe arrived
        self.visitor_back = 0.0
        self.viewer_back = 0.0

    def _up(self) -> bool:
        """The visitor socket is admitted (WELCOME read) and open: frames may go out."""
        v = self.visitor
        return (
            isinstance(v, ClusterVisitor) and v.admitted and v.transport is not None and not v.transport.is_disconnected
        )

    def send_delta(self) -> None:
        if self._up():
            super().send_delta()
        else:
            self.seq += 1

    def send_keyframe(self) -> None:
        if self._up():
            super().send_keyframe()


class ClusterVisitor(Visitor):
    """A visitor socket; ``admitted`` from the moment its WELCOME is read (nothing but HELLO goes
    out before: the paced stream and keyframe answers wait for it)."""

    def __init__(self, session: ClusterSession, on_drop: Callable[[Conn], None]) -> None:
        super().__init__(session)
        self.on_drop = on_drop
        self.admitted = False
        self.base = ""

    def control(self, data: bytes) -> None:
        super().control(data)
        if not self.admitted and self.welcome.done() and self.welcome.exception() is None:
            self.admitted = True

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        super().on_ws_disconnected(transport)
        if self.admitted:
            self.on_drop(self)


class ClusterViewer(Viewer):
    """A viewer that also reads the relay's epoch and seq from each ordered frame's header (to
    resume with, and to see the first keyframe of a new epoch after a failover)."""

    def __init__(self, session: ClusterSession, on_drop: Callable[[Conn], None]) -> None:
        super().__init__(session)
        self.cs = session
        self.on_drop = on_drop
        self.admitted = False
        self.base = ""
        self.epoch = 0
        self.hseq = 0
        self.resume = ""

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if self.buf is None and frame.fin and frame.msg_type is BINARY:
            mv = frame.get_payload_as_memoryview()
            kind = mv[1] if len(mv) >= 16 else -1
            if kind in (KIND_DELTA, KIND_KEYFRAME):
                self.epoch, self.hseq = EPOCH_SEQ.unpack_from(mv, 4)
                s = self.cs
                if kind == KIND_KEYFRAME and s.watching and not s.back_at and self.epoch != s.old_epoch:
                    s.back_at = time.monotonic()
        super().on_ws_frame(transport, frame)

    def control(self, data: bytes) -> None:
        super().control(data)
        if not self.admitted and self.welcome.done() and self.welcome.exception() is None:
            self.admitted = True
            self.resume = self.welcome.result().resume or self.resume

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        super().on_ws_disconnected(transport)
        if self.admitted:
            self.on_drop(self)


async def open_following(
    make: Callable[[], Conn],
    role: str,
    hello: protocol.Hello,
    bases: list[str],
    nodes: dict[str, str],
    timeout: float,
    rng: random.Random,
    stats: dict[str, int],
) -> tuple[Conn, protocol.Welcome]:
    """Connect ``role`` as the SDK and the watch page do behind deploy/haproxy.cfg: to the first
    of ``bases`` that takes the TCP connection (one refused is tried on the next at once, as
    the balancer's ``option redispatch`` does), following 4003 hints to
    ``{url or base}/ws/<role>?node=NAME`` after 0-250 ms, MAX_REDIRECTS in a row at most.
    Anything else raises (the caller backs off)."""
    target = ""
    for _ in range(MAX_REDIRECTS + 1):
        urls = [target] if target else [f"{b}/ws/{role}" for b in bases]
        c = make()
        for i, url in enumerate(urls):
            try:
                await _connect(url, c, timeout)
                c.base = url.split("/ws/")[0]  # type: ignore[attr-defined]
                break
            except OSError:  # refused: a dead node
                if i == len(urls) - 1:
                    raise
                stats["redispatched"] += 1
                c = make()
        c.send_msg(hello)
        try:
            welcome = await asyncio.wait_for(c.welcome, timeout)
        except ConnectionError:
            err = c.error
            if c.close_code == protocol.CloseCode.SESSION_MOVED and err is not None and err.node:
                stats["redirects"] += 1
                target = f"{ws_base(err.url) or nodes.get(err.node) or bases[0]}/ws/{role}?node={err.node}"
                await asyncio.sleep(rng.uniform(0.0, REDIRECT_JITTER))
                continue
            raise ConnectionError(f"closed {c.close_code} before WELCOME: {c.error}") from None
        except BaseException:
            abort(c)
            raise
        return c, welcome
    raise ConnectionError(f"{MAX_REDIRECTS} redirects without a WELCOME")


class RedisInfo:
    """INFO of the bench's redis-server over one connection (inline commands)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def info(self, section: str) -> dict[str, str]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(f"INFO {section}\r\n".encode())
        head = await asyncio.wait_for(self.reader.readline(), 5)
        body = await asyncio.wait_for(self.reader.readexactly(int(head[1:]) + 2), 5)
        out = {}
        for line in body.decode().splitlines():
            k, sep, v = line.partition(":")
            if sep and not k.startswith("#"):
                out[k] = v
        return out

    async def commands(self) -> dict[str, int]:
        """Calls per command since the server started (commands run by scripts included)."""
        raw = await self.info("commandstats")
        return {k[len("cmdstat_") :]: int(v.split(",")[0].split("=")[1]) for k, v in raw.items()}

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _diff(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    """b - a per command, without the INFO calls the bench made itself; busiest first."""
    d = {k: v - a.get(k, 0) for k, v in b.items() if k != "info" and v - a.get(k, 0) > 0}
    return dict(sorted(d.items(), key=lambda kv: -kv[1]))


class ClusterSide:
    """The sessions of one side of the cluster scenario: on a single node, or spread over nodes."""

    def __init__(self, name: str, job: Job, nodes: list[dict[str, Any]], rng: random.Random) -> None:
        self.name = name
        self.job = job
        self.nodes = nodes
        self.urls = {str(n["name"]): ws_base(str(n["url"])) for n in nodes}
        self.rng = rng
        self.sessions: list[ClusterSession] = []
        self.active: list[ClusterSession] = []  # the sessions streaming now (or last)
        self.timeout = float(job.spec.get("timeout", 15))
        self.jitter = float(job.spec.get("jitter", 0.5))
        # A dropped socket reconnects as the SDK and the watch page would, unless the side is
        # closing; one dropped outside a failover (the relay closed it: 4003 after a lapsed lease,
        # say) is counted in ``unexpected_drops``, with its close code in ``drop_codes``.
        self.closing = False
        self.failover = False
        self.drop_codes: dict[str, int] = {}
        self.stats = {"redirects": 0, "redispatched": 0, "drops": 0, "unexpected_drops": 0, "retries": 0}
        self.failures: dict[str, int] = {}
        self.samples: list[str] = []
        self.tasks: set[asyncio.Task[None]] = set()

    def bases(self, first: int | str) -> list[str]:
        """Every node's base, starting with ``first`` (an index or a base URL)."""
        urls = [ws_base(str(n["url"])) for n in self.nodes]
        i = urls.index(first) if isinstance(first, str) and first in urls else (first if isinstance(first, int) else 0)
        return urls[i:] + urls[:i]

    def failed(self, e: BaseException) -> None:
        key = f"{type(e).__name__}: {e}"[:80]
        self.failures[key] = self.failures.get(key, 0) + 1
        if len(self.samples) < 5:
            self.samples.append(f"{type(e).__name__}: {e}"[:200])

    # --- sockets ----------------------------------------------------------------------
    def on_drop(self, conn: Conn) -> None:
        if self.closing:
            return
        self.stats["drops" if self.failover else "unexpected_drops"] += 1
        if not self.failover:
            code = str(conn.close_code or 1006)
            self.drop_codes[code] = self.drop_codes.get(code, 0) + 1
        if isinstance(conn, ClusterVisitor):
            coro = self._rejoin_visitor(cast(ClusterSession, conn.session), conn.base)
        else:
            coro = self._rejoin_viewer(cast(ClusterViewer, conn))
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _visitor(self, s: ClusterSession) -> ClusterVisitor:
        v = ClusterVisitor(s, self.on_drop)
        s.visitor = v  # before WELCOME: a RESYNC_REQUEST right behind it is answered on this socket
        return v

    async def open_visitor(self, s: ClusterSession, bases: list[str]) -> None:
        hello = protocol.Hello(role="visitor", version=1, client_id=s.short_id)
        v, welcome = await open_following(
            lambda: self._visitor(s), "visitor", hello, bases, self.urls, self.timeout, self.rng, self.stats
        )
        assert isinstance(v, ClusterVisitor)
        s.short_id = welcome.client_id or s.short_id
        v.send_msg(protocol.Presence(url="http://127.0.0.1/bench", title=f"bench {s.name}", browser="bench"))

    async def open_viewer(self, s: ClusterSession, bases: list[str], old: ClusterViewer | None) -> ClusterViewer:
        if old is None:
            hello = protocol.Hello(role="viewer", version=1, token=self.job.grant(s.short_id, "agent-0"))
        else:  # as the watch page: its resume token, the last ordered frame it holds
            hello = protocol.Hello(
                role="viewer", version=1, token=old.resume, resume_epoch=old.epoch, resume_seq=old.hseq
            )
        w, welcome = await open_following(
            lambda: ClusterViewer(s, self.on_drop),
            "viewer",
            hello,
            bases,
            self.urls,
            self.timeout,
            self.rng,
            self.stats,
        )
        assert isinstance(w, ClusterViewer)
        w.resume = welcome.resume or (old.resume if old is not None else "")
        if old is not None:
            w.epoch, w.hseq = max(w.epoch, old.epoch), max(w.hseq, old.hseq)
        s.node = welcome.node
        if s.viewers:
            s.viewers[0] = w
        else:
            s.viewers.append(w)
            s.nview = 1
        return w

    async def setup(self, n: int, frame: int, concurrency: int) -> float:
        """``n`` sessions of visitor + 1 viewer: every visitor first (``i`` enters at node ``i % N``),
        then the viewers, as agents join visitors already online (``i`` enters at node
        ``(i // 2) % N``: with two nodes half of them are redirected to the owner)."""
        k = len(self.nodes)
        self.sessions = [ClusterSession(self.job, i, frame, 4096, i % k) for i in range(n)]
        sem = asyncio.Semaphore(max(1, concurrency))
        t0 = time.perf_counter()

        async def visitor(s: ClusterSession) -> None:
            async with sem:
                try:
                    await self.open_visitor(s, self.bases(s.entry))
                except Exception as e:
                    raise RuntimeError(f"{self.name} session {s.index}: visitor: {type(e).__name__}: {e}") from e

        async def viewer(s: ClusterSession) -> None:
            async with sem:
                stage = "viewer"
                try:
                    s.viewer_entry = (s.index // 2) % k
                    w = await self.open_viewer(s, self.bases(s.viewer_entry), None)
                    stage = f"SESSION_ACCEPT (viewer welcomed by {s.node}, its visitor entered at node {s.entry + 1})"
                    await asyncio.wait_for(w.accepted, self.timeout)
                except Exception as e:
                    raise RuntimeError(f"{self.name} session {s.index}: {stage}: {type(e).__name__}: {e}") from e

        budget = self.timeout * 3 + n * 0.05
        await asyncio.wait_for(asyncio.gather(*(visitor(s) for s in self.sessions)), budget)
        await asyncio.sleep(0.5)  # visitors online before agents join them (their location written)
        await asyncio.wait_for(asyncio.gather(*(viewer(s) for s in self.sessions)), budget)
        await sync_keyframe(cast(list[Session], self.sessions), self.timeout)
        return round(time.perf_counter() - t0, 2)

    # --- failover -----------------------------------------------------------------------
    async def _backoff(self, attempt: int) -> None:
        """relay/web/src/redirect.js backoffDelay with SDK_BACKOFF: half the step plus up to half."""
        step = min(15.0, 0.5 * 2 ** min(attempt, 5))
        await asyncio.sleep(step / 2 + self.rng.uniform(0.0, step / 2))

    async def _rejoin_visitor(self, s: ClusterSession, base: str) -> None:
        await asyncio.sleep(self.rng.uniform(0.0, self.jitter))
        attempt = 0
        while not self.closing:
            try:
                await self.open_visitor(s, self.bases(base))
                s.visitor_back = time.monotonic()
                return
            except Exception as e:
                self.failed(e)
                self.stats["retries"] += 1
                await self._backoff(attempt)
                attempt += 1

    async def _rejoin_viewer(self, old: ClusterViewer) -> None:
        s = old.cs
        await asyncio.sleep(self.rng.uniform(0.0, self.jitter))
        attempt = 0
        while not self.closing:
            try:
                await self.open_viewer(s, self.bases(old.base), old)
                s.viewer_back = time.monotonic()
                return
            except Exception as e:
                self.failed(e)
                self.stats["retries"] += 1
                await self._backoff(attempt)
                attempt += 1

    # --- streaming ------------------------------------------------------------------------
    def start(self, rate: float, count: int | None = None) -> None:
        """Stream the first ``count`` sessions (all by default: :attr:`active`), evenly phased."""
        loop = asyncio.get_running_loop()
        self.job.sending = True
        self.active = self.sessions[:count] if count is not None else self.sessions
        n = len(self.active)
        for i, s in enumerate(self.active):
            s.start_paced(rate, loop, (i / max(1, n)) / rate)

    def stop(self) -> None:
        self.job.sending = False
        self.job.rec = False
        for s in self.sessions:
            s.stop()

    def viewers(self) -> list[Viewer]:
        return [w for s in self.active for w in s.viewers]

    async def drain(self, seconds: float) -> int:
        """Wait until every streaming session's viewer holds its last frame (``seconds`` at most);
        the frames still missing."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if all(w.expect > s.seq for s in self.active for w in s.viewers if not w.closed_at):
                break
            await asyncio.sleep(0.01)
        return sum(max(0, s.seq - (w.expect - 1)) for s in self.active for w in s.viewers)

    def close_all(self) -> list[Conn]:
        self.closing = True
        for t in self.tasks:
            t.cancel()
        return all_conns(cast(list[Session], self.sessions))


def _cpu(pids: list[int]) -> dict[int, float]:
    out = {}
    for p in pids:
        with contextlib.suppress(OSError):
            out[p] = cpu_times(p).total
    return out


async def cluster_window(
    side: ClusterSide,
    label: str,
    count: int | None,
    rate: float,
    warmup: float,
    window: float,
    redis: RedisInfo | None,
    redis_pid: int | None,
) -> dict[str, Any]:
    """Stream ``count`` of ``side``'s sessions (all: None) at ``rate`` frames/s each; measure
    ``window`` s after ``warmup``: deliveries (per node: a session's are its owner's), each
    node's CPU seconds, Redis's commands and CPU, the generator's CPU, latency; then stop,
    drain and count losses."""
    job = side.job
    side.start(rate, count)
    lost0 = sum(w.lost + w.skipped for w in side.viewers())
    await asyncio.sleep(warmup)
    pids = {str(n["name"]): int(n["pid"]) for n in side.nodes}
    by_node0 = {name: sum(s.delivered for s in side.active if s.node == name) for name in pids}
    cmds0 = await redis.commands() if redis is not None else {}
    job.lat = array("q")
    job.rec = True
    cpu0 = _cpu([*pids.values(), *([redis_pid] if redis_pid else [])])
    own0 = self_cpu()
    t0 = time.perf_counter()
    await asyncio.sleep(window)
    wall = time.perf_counter() - t0
    own = self_cpu() - own0
    cpu1 = _cpu([*pids.values(), *([redis_pid] if redis_pid else [])])
    by_node1 = {name: sum(s.delivered for s in side.active if s.node == name) for name in pids}
    job.rec = False
    cmds1 = await redis.commands() if redis is not None else {}
    side.stop()
    undelivered = await side.drain(3.0)
    lost = sum(w.lost + w.skipped for w in side.viewers()) - lost0
    nodes: dict[str, Any] = {}
    for name, pid in pids.items():
        cpu = cpu1.get(pid, 0.0) - cpu0.get(pid, 0.0)
        d = by_node1[name] - by_node0[name]
        nodes[name] = {
            "deliveries": d,
            "cpu_s": round(cpu, 3),
            "cpu_pct": round(100 * cpu / wall, 1),
            "del_per_cpu_s": round(d / cpu, 1) if cpu > 0 else None,
        }
    deliveries = sum(v["deliveries"] for v in nodes.values())
    relay_cpu = sum(v["cpu_s"] for v in nodes.values())
    out: dict[str, Any] = {
        "side": label,
        "sessions": len(side.active),
        "wall_s": round(wall, 3),
        "deliveries": deliveries,
        "del_per_s": round(deliveries / wall, 1),
        "relay_cpu_s": round(relay_cpu, 3),
        "del_per_cpu_s": round(deliveries / relay_cpu, 1) if relay_cpu > 0 else None,
        "us_per_del": round(1e6 * relay_cpu / deliveries, 2) if deliveries else None,
        "nodes": nodes,
        "loadgen_cpu_pct": round(100 * own / wall, 1),
        "lost": lost,
        "undelivered": undelivered,
        "latency": {k: v for k, v in latency_stats(job.lat).items() if k != "cdf_us"},
    }
    if redis is not None:
        diff = _diff(cmds0, cmds1)
        out["redis_commands"] = sum(diff.values())
        out["redis_by_command"] = diff
    if redis_pid:
        cpu = cpu1.get(redis_pid, 0.0) - cpu0.get(redis_pid, 0.0)
        out["redis_cpu_s"] = round(cpu, 3)
        out["del_per_cpu_s_with_redis"] = round(deliveries / (relay_cpu + cpu), 1) if relay_cpu + cpu > 0 else None
    return out


async def cluster_failover(
    side: ClusterSide, victim: dict[str, Any], rate: float, budget: float, redis: RedisInfo
) -> dict[str, Any]:
    """SIGKILL node ``victim`` while every session streams; its sessions' visitors and viewers
    reconnect after U(0, jitter) s (to the next node: the balancer's redispatch), following
    hints, backing off as the SDK does. Per affected session: time from the kill until its
    viewer receives a keyframe of a new epoch."""
    name = str(victim["name"])
    survivors = {str(n["name"]): int(n["pid"]) for n in side.nodes if n["name"] != name}
    if rate > 0:
        side.start(rate)
    await asyncio.sleep(1.0)
    affected = [s for s in side.sessions if s.node == name]
    for s in affected:
        s.watching = True
        s.old_epoch = cast(ClusterViewer, s.viewers[0]).epoch
        s.back_at = s.visitor_back = s.viewer_back = 0.0
    for k in ("redirects", "redispatched", "drops", "unexpected_drops", "retries"):
        side.stats[k] = 0
    side.failures.clear()
    side.samples.clear()
    side.failover = True
    cpu0 = _cpu(list(survivors.values()))
    cmds0 = await redis.commands()
    t_kill = time.monotonic()
    os.kill(int(victim["pid"]), 9)  # SIGKILL: no drain, no goodbye, sockets reset by the kernel
    deadline = t_kill + budget
    while time.monotonic() < deadline:
        if all(s.back_at and s.visitor_back and s.viewer_back for s in affected):
            break
        await asyncio.sleep(0.01)
    span = time.monotonic() - t_kill
    cpu1 = _cpu(list(survivors.values()))
    cmds1 = await redis.commands()
    side.stop()
    side.failover = False
    back = sorted(s.back_at - t_kill for s in affected if s.back_at)
    out: dict[str, Any] = {
        "killed": name,
        "affected": len(affected),
        "watching": len(back),
        "span_s": round(span, 3),
        "visitors_back": sum(1 for s in affected if s.visitor_back),
        "viewers_back": sum(1 for s in affected if s.viewer_back),
        "survivor_cpu_s": {n: round(cpu1.get(p, 0.0) - cpu0.get(p, 0.0), 3) for n, p in survivors.items()},
        "redis_commands": sum(_diff(cmds0, cmds1).values()),
        "redis_by_command": _diff(cmds0, cmds1),
        **side.stats,
        "failures": dict(side.failures),
        "failure_samples": list(side.samples),
        "moved_to": sorted({s.node for s in affected if s.back_at}),
    }
    if back:
        out["kill_to_watching_ms"] = _quantiles_ms(back)
    vb = sorted(s.visitor_back - t_kill for s in affected if s.visitor_back)
    wb = sorted(s.viewer_back - t_kill for s in affected if s.viewer_back)
    if vb:
        out["visitor_back_ms"] = _quantiles_ms(vb)
    if wb:
        out["viewer_back_ms"] = _quantiles_ms(wb)
    return out


async def job_cluster(job: Job) -> dict[str, Any]:
    """Scenario 10: one node against nodes sharing one Redis, the same sessions on each side.

    Spec: ``single`` ({name, url, pid}: a relay without REDIS_URL), ``nodes`` (a list of the
    same for the cluster's nodes), ``redis_port``/``redis_pid``, ``sessions``, ``rate``,
    ``rounds`` of ``window`` s per run (interleaved, after ``warmup``), ``kill`` (the index of
    the node to SIGKILL afterwards, or None), ``jitter``, ``failover_budget``. Both sides are set
    up first and stay connected; one streams while the other idles. The runs of a round:
    ``single`` (every session on the one node), ``single-half`` (half of them streaming on the
    one node: the load each cluster node carries) and ``cluster`` (every session, spread).
    """
    sp = job.spec
    rng = random.Random(int(sp.get("seed", 10)))
    n = int(sp.get("sessions", 400))
    rate = float(sp.get("rate", 60))
    frame = int(sp.get("frame", 1024))
    warmup = float(sp.get("warmup", 1.0))
    window = float(sp.get("window", 5.0))
    rounds = int(sp.get("rounds", 3))
    redis = RedisInfo(int(sp["redis_port"]))
    redis_pid = int(sp["redis_pid"]) if sp.get("redis_pid") else None
    sides: list[ClusterSide] = []
    if sp.get("single"):
        sides.append(ClusterSide("single", Job({**sp, "url": sp["single"]["url"]}), [sp["single"]], rng))
    cluster = ClusterSide("cluster", Job({**sp, "url": sp["nodes"][0]["url"]}), list(sp["nodes"]), rng)
    sides.append(cluster)
    result: dict[str, Any] = {"sessions": n, "rate": rate, "windows": [], "phases": []}

    def phase(name: str) -> None:  # wall-clock times, to place the nodes' log lines
        result["phases"].append([name, time.time()])

    try:
        for side in sides:
            phase(f"setup {side.name}")
            result[f"setup_{side.name}_s"] = await side.setup(n, frame, int(sp.get("concurrency", 32)))
            result[f"setup_{side.name}"] = dict(side.stats)
            result[f"owners_{side.name}"] = {
                str(x["name"]): sum(1 for s in side.sessions if s.node == x["name"]) for x in side.nodes
            }
        await until_idle([int(x["pid"]) for s in sides for x in s.nodes], 0.5, 10.0)
        phase("steady")
        t_steady = time.perf_counter()
        cmds_steady0 = await redis.commands()
        cluster_time = 0.0
        cmds_cluster: dict[str, int] = {}
        runs: list[tuple[str, ClusterSide, int | None]] = [("cluster", cluster, None)]
        if len(sides) > 1:
            runs = [("single", sides[0], None), ("single-half", sides[0], n // len(cluster.nodes)), *runs]
        for r in range(rounds):
            for label, side, count in runs if r % 2 == 0 else runs[::-1]:
                w = await cluster_window(side, label, count, rate, warmup, window, redis, redis_pid)
                w["round"] = r
                result["windows"].append(w)
                if side is cluster:
                    cluster_time += w["wall_s"]
                    for k, v in w.get("redis_by_command", {}).items():
                        cmds_cluster[k] = cmds_cluster.get(k, 0) + v
                log(
                    f"cluster round {r} {label}: {w['del_per_s']:.0f} deliveries/s, "
                    f"{w['del_per_cpu_s']} per relay CPU-s, lost {w['lost']}"
                )
        steady = time.perf_counter() - t_steady
        all_steady = _diff(cmds_steady0, await redis.commands())
        result["redis_steady"] = {
            "seconds": round(steady, 2),
            "commands": sum(all_steady.values()),
            "per_s": round(sum(all_steady.values()) / steady, 1),
            "by_command_per_s": {k: round(v / steady, 1) for k, v in all_steady.items()},
            "streaming_seconds": round(cluster_time, 2),
            "streaming_per_s": round(sum(cmds_cluster.values()) / cluster_time, 1) if cluster_time else None,
        }
        for side in sides:
            result[f"drops_{side.name}"] = side.stats["unexpected_drops"]
            result[f"drop_codes_{side.name}"] = dict(side.drop_codes)
        if sp.get("kill") is not None:
            phase("failover")
            victim = sp["nodes"][int(sp["kill"])]
            f_rate = float(sp.get("failover_rate", rate))
            result["failover"] = await cluster_failover(
                cluster, victim, f_rate, float(sp.get("failover_budget", 20)), redis
            )
            result["failover"]["rate"] = f_rate
            f = result["failover"]
            log(f"cluster failover: {f['watching']}/{f['affected']} watching again, {f.get('kill_to_watching_ms')}")
        phase("teardown")
        errs = [e for side in sides for c in side.close_all() for e in c.errors]
        if errs:
            result["errors"] = errs[:10]
        result["close_codes"] = {side.name: dict(side.job.close_codes) for side in sides}
        return result
    finally:
        redis.close()
        for side in sides:
            side.stop()
            await close_all(side.close_all(), 10)


JOBS: dict[str, Callable[[Job], Any]] = {
    "fanout": job_fanout,
    "direct": job_direct,
    "idle": job_idle,
    "join": job_join,
    "storm": job_storm,
    "flood": job_flood,
    "cluster": job_cluster,
}


async def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    job = Job(spec)
    t0 = time.perf_counter()
    try:
        result = await asyncio.wait_for(JOBS[spec["type"]](job), float(spec.get("budget", 120)))
        result["ok"] = True
    except Exception as e:  # reported, never silently
        result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        log("job failed:", spec.get("type"), spec.get("label", ""), result["error"])
    result["label"] = spec.get("label", spec["type"])
    result["elapsed_s"] = round(time.perf_counter() - t0, 2)
    return dict(result)


async def run_jobs(specs: list[dict[str, Any]], emit: Callable[[dict[str, Any]], None]) -> None:
    for spec in specs:
        emit(await run_job(spec))
        await asyncio.sleep(float(spec.get("pause", 0.1)))


def main() -> None:
    raise_nofile()
    import uvloop

    if sys.argv[1:] == ["--sink"]:
        uvloop.run(sink_main())
        return
    if sys.argv[1:] == ["--flood"]:
        uvloop.run(flood_main())
        return
    line = sys.stdin.readline()
    spec = json.loads(line)

    def emit(r: dict[str, Any]) -> None:
        print("RESULT " + json.dumps(r), flush=True)

    uvloop.run(run_jobs(spec["jobs"], emit))


if __name__ == "__main__":
    main()
