"""What an anonymous or hostile client can make the relay hold, and what it cannot.

Each test attacks a real relay process on 127.0.0.1 with raw sockets or the
test client, with bounded loops, and checks both the refusal (the status or
close code the relay documents) and that the relay goes on serving others.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import socket
import time
import urllib.request
from typing import Any

import psutil
from websockets.exceptions import ConnectionClosed, InvalidStatus

import protocol as p

from .client import Peer, live_session, open_socket, rest, run, upgrade_request, viewer, visitor, wait_for, watch_token

_ids = itertools.count(1)


def vid() -> str:
    return f"HARD{next(_ids):06d}"


def healthy(relay: Any) -> bool:
    with urllib.request.urlopen(f"{relay.base}/health", timeout=5) as r:
        return bool(r.status == 200)


def raw(relay: Any) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    return s


def read_all(s: socket.socket, limit: float = 10.0) -> bytes:
    """Read until the relay closes the socket (bounded by ``limit`` seconds)."""
    s.settimeout(limit)
    out = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        out += chunk
    return out


# --- request heads ---------------------------------------------------------------------
def test_an_upgrade_with_200_headers_is_answered_431_and_closed(relay: Any) -> None:
    extra = "".join(f"X-H{i}: v\r\n" for i in range(200))
    with raw(relay) as s:
        s.sendall(upgrade_request(extra=extra))
        answer = read_all(s)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
    assert b'"error":"request_header_fields_too_large"' in answer
    assert healthy(relay)


def test_a_16_kib_header_line_is_answered_431_and_closed_for_http_and_websocket(relay: Any) -> None:
    big = "X-Big: " + "a" * 16384 + "\r\n"
    for head in (upgrade_request(extra=big), f"GET /health HTTP/1.1\r\nHost: x\r\n{big}\r\n".encode()):
        with raw(relay) as s:
            s.sendall(head)
            answer = read_all(s)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
    assert healthy(relay)


def test_a_declared_body_over_max_body_is_refused_413_before_it_is_sent(relay_factory: Any) -> None:
    relay = relay_factory(MAX_BODY="2048").start()
    with raw(relay) as s:
        s.sendall(
            b"POST /api/visitors/x/watch_url HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: " + relay.rest_key.encode() + b"\r\nContent-Length: 10000000\r\n\r\n"
        )
        answer = read_all(s)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:80]
    assert b'"error":"request_too_large"' in answer


def test_slowloris_heads_are_closed_by_the_handshake_timeout_and_health_is_served(relay_factory: Any) -> None:
    relay = relay_factory(HANDSHAKE_TIMEOUT="1").start()
    head = upgrade_request()
    sockets = [raw(relay) for _ in range(100)]
    try:
        for s in sockets:
            s.setblocking(False)
        closed: set[int] = set()
        start = time.monotonic()
        # 1 byte per socket every 100 ms: never a complete head. Bounded to 6 s.
        for i in range(60):
            if len(closed) == len(sockets):
                break
            for n, s in enumerate(sockets):
                if n in closed:
                    continue
                try:
                    s.send(head[i % len(head) : i % len(head) + 1])
                    if s.recv(4096) == b"":
                        closed.add(n)
                except BlockingIOError:
                    continue
                except OSError:
                    closed.add(n)
            if i == 10:
                assert healthy(relay)  # the relay answers others while it holds them
            time.sleep(0.1)
        # Every socket has been answered (408) or closed by now.
        for n, s in enumerate(sockets):
            if n in closed:
                continue
            s.setblocking(True)
            s.settimeout(2.0)
            data = read_all(s, 2.0)
            assert data == b"" or data.startswith(b"HTTP/1.1 408 "), data[:60]
        assert time.monotonic() - start < 8
    finally:
        for s in sockets:
            s.close()
    assert healthy(relay)


def test_sigterm_with_half_open_sockets_exits_0_and_keeps_what_was_stored(relay_factory: Any) -> None:
    relay = relay_factory().start()
    v = vid()

    async def register() -> None:
        _vis, _ = await visitor(relay, v)
        await asyncio.sleep(0.1)

    run(register())
    half: list[socket.socket] = []
    big = "X-Big: " + "a" * 16384 + "\r\n"
    for i in range(40):
        s = raw(relay)
        if i % 4 == 0:
            s.sendall(upgrade_request(extra=big))  # refused
        elif i % 4 == 1:
            s.sendall(upgrade_request(origin=relay.origin)[:30])  # half a head
        elif i % 4 == 2:
            s.sendall(upgrade_request(origin=relay.origin))  # upgraded, no HELLO
        half.append(s)  # and i % 4 == 3: nothing at all
    try:
        time.sleep(0.3)
        assert relay.stop(signal.SIGTERM) == 0
    finally:
        for s in half:
            s.close()
    log = relay.log()
    assert "Traceback" not in log and " ERROR " not in log, log
    again = relay_factory(data_dir=relay.data_dir).start()
    status, body = rest(again, "GET", f"/api/visitors/{v}")
    assert status == 200 and body["visitor"]["short_id"] == v


def test_a_socket_upgraded_without_hello_is_closed_4006_at_the_deadline(relay_factory: Any) -> None:
    relay = relay_factory(HANDSHAKE_TIMEOUT="1").start()

    async def scenario() -> None:
        ws = await open_socket(relay, "/ws/visitor")
        peer = Peer(ws)
        t0 = time.monotonic()
        assert await peer.closed(5) == p.CloseCode.HANDSHAKE_TIMEOUT
        assert time.monotonic() - t0 < 3

    run(scenario())


# --- the memory budget ----------------------------------------------------------------
def test_before_a_session_is_live_a_visitor_message_over_max_frame_is_refused_4501(relay: Any) -> None:
    async def scenario() -> None:
        vis, _ = await visitor(relay, vid())
        await vis.raw(p.encode(p.Ping(t=1))[:16] + b"\x00" * (200 * 1024))
        assert await vis.closed() == p.CloseCode.FRAME_TOO_BIG

    run(scenario())


def test_an_oversize_frame_in_flight_closes_with_4501_not_a_reset_20_times_of_20(relay: Any) -> None:
    async def one() -> int | None:
        vis, _ = await visitor(relay, vid())
        big = b"\x01" + b"\x00" * (2 * 1024 * 1024)  # 2 MiB, over MAX_FRAME before any session
        with contextlib.suppress(Exception):
            await vis.raw(big)
        return await vis.closed()

    async def scenario() -> list[int | None]:
        return [await one() for _ in range(20)]

    codes = run(scenario())
    assert codes == [p.CloseCode.FRAME_TOO_BIG] * 20


def frame_header(n: int) -> bytes:
    """A masked binary websocket frame header for ``n`` payload bytes (mask of zeros)."""
    if n < 126:
        return bytes((0x82, 0x80 | n)) + b"\x00" * 4
    if n < 65536:
        return bytes((0x82, 0x80 | 126)) + n.to_bytes(2, "big") + b"\x00" * 4
    return bytes((0x82, 0x80 | 127)) + n.to_bytes(8, "big") + b"\x00" * 4


def test_partial_big_messages_are_capped_by_the_inflight_budget_and_rss_stays_bounded(relay_factory: Any) -> None:
    """16 live visitors each send 7 MiB of an 8 MiB keyframe and stop: the relay holds at most
    MAX_INFLIGHT_BYTES of them; the rest are closed with 4005, and its RSS grows by about that."""
    cap = 16 * 1024 * 1024
    relay = relay_factory(MAX_INFLIGHT_BYTES=str(cap), MIN_RECV_RATE="1").start()
    proc = psutil.Process(relay.proc.pid)

    async def scenario() -> tuple[list[int | None], int, int]:
        sessions = [await live_session(relay, vid()) for _ in range(16)]
        await asyncio.sleep(0.2)
        rss0 = proc.memory_info().rss
        size = 8 * 1024 * 1024
        head = frame_header(size)
        part = b"\x01" * (7 * 1024 * 1024)
        for vis, _, _ in sessions:
            transport = vis.ws.transport
            transport.write(head + part)  # raw bytes: an unfinished message
        await asyncio.sleep(3.0)
        rss1 = proc.memory_info().rss
        codes = []
        for vis, _, _ in sessions:
            try:
                async with asyncio.timeout(0.5):
                    await vis.ws.wait_closed()
            except TimeoutError:
                pass
            codes.append(vis.ws.close_code)
        return codes, rss0, rss1

    codes, rss0, rss1 = run(scenario())
    refused = codes.count(p.CloseCode.OVERLOADED)
    assert refused >= 16 - cap // (7 * 1024 * 1024) - 1, codes
    assert set(codes) <= {None, p.CloseCode.OVERLOADED}, codes
    # Held: at most the cap plus one read per socket; the attack as it stood held 112 MiB.
    assert rss1 - rss0 < cap + 24 * 1024 * 1024, (rss1 - rss0) / 2**20


def test_a_message_trickled_under_min_recv_rate_is_closed_4007(relay_factory: Any) -> None:
    relay = relay_factory(MIN_RECV_RATE="100000").start()

    async def scenario() -> int | None:
        vis, _, _ = await live_session(relay, vid())
        transport = vis.ws.transport
        transport.write(frame_header(1024 * 1024))
        for _ in range(60):  # 1 KiB per 100 ms: 10 KiB/s, under 100 KB/s; at most 6 s
            if vis.ws.close_code is not None:
                break
            try:
                transport.write(b"\x00" * 1024)
            except Exception:
                break
            await asyncio.sleep(0.1)
        return await vis.closed(5)

    assert run(scenario()) == p.CloseCode.SLOW_MESSAGE


# --- rate and connection limits ---------------------------------------------------------
def test_visitor_sockets_past_the_per_address_limit_are_closed_4004(relay_factory: Any) -> None:
    relay = relay_factory(MAX_SOCKETS_PER_IP="5").start()

    async def scenario() -> None:
        for _ in range(5):
            await visitor(relay, vid())
        extra = Peer(await open_socket(relay, "/ws/visitor"))
        err = await extra.recv()
        assert isinstance(err, p.Error) and err.code == "rate_limited"
        assert await extra.closed() == p.CloseCode.RATE_LIMITED
        status, _ = rest(relay, "GET", "/api/visitors/list/latest")
        assert status == 200

    run(scenario())

    async def after() -> None:  # the slots were given back when those sockets closed
        for _ in range(5):
            await visitor(relay, vid())

    run(after())


def test_new_visitor_ids_past_the_per_address_rate_are_refused_and_leave_no_row(relay_factory: Any) -> None:
    relay = relay_factory(NEW_VISITORS_PER_IP="3").start()
    known = "KNOWNVISITOR1"

    async def scenario() -> None:
        for client_id in (known, "", ""):  # three new ids: the minute's allowance
            vis, _ = await visitor(relay, client_id)
            await vis.close()
        peer = Peer(await open_socket(relay, "/ws/visitor"))
        await peer.send(p.Hello(role="visitor", version=p.PROTOCOL_VERSION))
        err = await peer.recv()
        assert isinstance(err, p.Error) and err.code == "rate_limited"
        assert await peer.closed() == p.CloseCode.RATE_LIMITED
        back, welcome = await visitor(relay, known)  # a returning visitor is not new: admitted
        assert welcome.client_id == known
        await back.close()

    run(scenario())
    time.sleep(0.3)
    status, body = rest(relay, "GET", "/api/visitors/list/latest")
    assert status == 200 and len(body["visitors"]) == 3, body  # the refused one left no row


def test_a_ping_flood_is_closed_4004_and_another_session_keeps_flowing(relay_factory: Any) -> None:
    relay = relay_factory(RATE_CONTROL="20", RATE_BURST="2").start()

    async def scenario() -> None:
        vis, view, _ = await live_session(relay, vid())
        await vis.send(p.DomKeyframe(data=b"kf"))
        await view.expect(p.DomKeyframe)
        flooder, _ = await visitor(relay, vid())
        ping = p.encode(p.Ping(t=1))
        code = None
        for i in range(2000):
            try:
                await flooder.raw(ping)
            except Exception:
                break
            if i % 100 == 0:
                await vis.send(p.DomDelta(data=b"d%d" % i))
                await view.expect(p.DomDelta)  # the other session flows during the flood
        code = await flooder.closed()
        assert code == p.CloseCode.RATE_LIMITED
        await vis.send(p.DomDelta(data=b"after"))
        assert (await view.expect(p.DomDelta)).data == b"after"

    run(scenario())


def test_a_presence_flood_is_closed_4004(relay_factory: Any) -> None:
    relay = relay_factory(RATE_CONTROL="20", RATE_BURST="2").start()

    async def scenario() -> int | None:
        flooder, _ = await visitor(relay, vid())
        return await flooder.flood(p.encode(p.Presence(url="https://shop.example/x")), 1000)

    assert run(scenario()) == p.CloseCode.RATE_LIMITED


# --- resume and resync -------------------------------------------------------------------
def test_a_viewer_that_left_cannot_come_back_on_its_resume_token(relay: Any) -> None:
    async def scenario() -> None:
        v = vid()
        _vis, view, welcome = await live_session(relay, v)
        await viewer(relay, watch_token(relay, v))  # a second viewer keeps the session alive
        await view.send(p.SessionEnd(session=welcome.session))
        assert await view.closed() == p.CloseCode.NORMAL
        again = Peer(await open_socket(relay, "/ws/viewer", origin=None))
        await again.send(p.Hello(role="viewer", version=p.PROTOCOL_VERSION, token=welcome.resume))
        err = await again.recv()
        assert isinstance(err, p.Error) and err.code == "session_ended"
        assert await again.closed() == p.CloseCode.SESSION_ENDED

    run(scenario())


def test_past_the_window_a_returning_viewer_gets_a_fresh_keyframe_not_the_log(relay_factory: Any) -> None:
    relay = relay_factory(RESUME_WINDOW="1").start()

    async def scenario() -> None:
        v = vid()
        vis, view, welcome = await live_session(relay, v)
        _other, _ = await viewer(relay, watch_token(relay, v))  # keeps the session alive
        await vis.send(p.DomKeyframe(data=b"kf1"))
        seq = None
        for n in range(3):
            await vis.send(p.DomDelta(data=b"d%d" % n))
        for _ in range(4):
            frame = await view.recv_frame()
            seq = p.peek(frame).seq
        await view.close()
        await asyncio.sleep(2.5)  # past the window: the slot is gone, the session lives on
        back = Peer(await open_socket(relay, "/ws/viewer", origin=None))
        await back.send(
            p.Hello(
                role="viewer",
                version=p.PROTOCOL_VERSION,
                token=welcome.resume,
                resume_epoch=welcome.epoch,
                resume_seq=seq or 0,
            )
        )
        assert isinstance(await back.recv(), p.Welcome)
        first = await back.expect(p.DomKeyframe)
        assert first.data == b"kf1"  # the whole log from its keyframe, not "nothing missed"

    run(scenario())


def test_resync_requests_cannot_amplify_the_log_onto_a_socket(relay: Any) -> None:
    async def scenario() -> None:
        vis, view, _ = await live_session(relay, vid())
        await vis.send(p.DomKeyframe(data=b"k" * 60000))
        for _n in range(30):
            await vis.send(p.DomDelta(data=b"d" * 60000))
        for _ in range(31):
            await view.recv_frame()
        for _ in range(40):  # under the session-frame rate: only the resync limit applies
            await view.send(p.ResyncRequest(reason="again"))
        await vis.send(p.DomDelta(data=b"marker"))
        keyframes = 0
        while True:
            msg = await view.recv()
            if isinstance(msg, p.DomKeyframe):
                keyframes += 1
            if isinstance(msg, p.DomDelta) and msg.data == b"marker":
                break
        stats = rest(relay, "GET", "/stats")[1]
        assert keyframes <= 4, keyframes  # burst of 3, then one per 2 s; never 40 copies of 1.8 MB
        assert stats["resyncs_refused"] >= 36

    run(scenario())


def test_end_with_session_end_and_close_in_one_read_logs_no_error(relay_factory: Any) -> None:
    relay = relay_factory(LOG_LEVEL="info").start()

    async def scenario() -> None:
        for _ in range(5):
            vis, view, welcome = await live_session(relay, vid())
            frame = p.encode(p.SessionEnd(session=welcome.session))
            transport = view.ws.transport
            # One write: the SESSION_END frame and a close frame, as a browser's End click sends them.
            close = bytes((0x88, 0x80 | 2)) + b"\x00" * 4 + (1000).to_bytes(2, "big")
            transport.write(frame_header(len(frame)) + frame + close)
            await view.closed()
            await vis.expect(p.SessionEnd)

    run(scenario())
    time.sleep(0.3)
    log = relay.log()
    assert " ERROR " not in log and "Traceback" not in log, log


def test_a_trusted_proxys_forwarded_address_is_what_the_socket_limit_counts(relay_factory: Any) -> None:
    trusting = relay_factory(MAX_SOCKETS_PER_IP="2", TRUSTED_PROXIES="127.0.0.1").start()
    plain = relay_factory(MAX_SOCKETS_PER_IP="2").start()

    async def open_from(relay: Any, address: str) -> int | None:
        """Open a visitor socket claiming ``address``; None when admitted, else the close code."""
        ws = await open_socket(relay, "/ws/visitor", additional_headers={"X-Forwarded-For": address})
        peer = Peer(ws)
        msg = None
        with contextlib.suppress(ConnectionClosed):
            await peer.send(p.Hello(role="visitor", version=p.PROTOCOL_VERSION, client_id=vid()))
            msg = await peer.recv()
        if isinstance(msg, p.Welcome):
            return None
        return await peer.closed()

    async def scenario() -> None:
        # Behind a trusted proxy: two clients, each with its own allowance.
        assert [await open_from(trusting, "203.0.113.1") for _ in range(3)] == [None, None, 4004]
        assert await open_from(trusting, "203.0.113.2") is None
        # Without one, the header is anyone's to forge and is ignored: all count as 127.0.0.1.
        assert await open_from(plain, "203.0.113.1") is None
        assert await open_from(plain, "203.0.113.2") is None
        assert await open_from(plain, "203.0.113.3") == 4004

    run(scenario())


def test_visitors_that_never_had_a_session_are_deleted_after_the_retention(relay_factory: Any) -> None:
    relay = relay_factory().start()
    kept, gone = vid(), vid()

    async def scenario() -> None:
        vis, view, _ = await live_session(relay, kept)  # had a session: kept
        await view.close()
        await vis.close()
        passer, _ = await visitor(relay, gone)
        await passer.close()

    run(scenario())
    time.sleep(0.5)
    assert relay.stop() == 0
    time.sleep(1.0)
    # 1e-5 days is 0.864 s: both were last seen before that; only the one without a session goes.
    again = relay_factory(data_dir=relay.data_dir, VISITOR_RETENTION_DAYS="0.00001").start()
    assert rest(again, "GET", f"/api/visitors/{kept}")[0] == 200
    wait_for(lambda: rest(again, "GET", f"/api/visitors/{gone}")[0] == 404, 5, "the sessionless visitor deleted")


def test_an_address_whose_socket_was_rate_limited_cools_down_then_is_admitted(relay_factory: Any) -> None:
    relay = relay_factory(RATE_CONTROL="20", RATE_BURST="1").start()

    async def scenario() -> None:
        flooder, _ = await visitor(relay, vid())
        assert await flooder.flood(p.encode(p.Ping(t=1)), 200) == p.CloseCode.RATE_LIMITED
        # Reconnecting at once is refused before the upgrade: no handshake, no admission.
        try:
            await open_socket(relay, "/ws/visitor")
            raise AssertionError("admitted while cooling down")
        except InvalidStatus as e:
            assert e.response.status_code == 429
        assert healthy(relay)  # plain HTTP from the address is not refused
        # After the cool-down (1 s for a first offence) it is admitted again.
        deadline = time.monotonic() + 10
        while True:
            try:
                back, _ = await visitor(relay, vid())
                break
            except InvalidStatus:
                assert time.monotonic() < deadline, "still refused 10 s after a first offence"
                await asyncio.sleep(0.2)
        await back.close()
        assert rest(relay, "GET", "/stats")[1]["rate_limited"] == 1

    run(scenario())


def test_a_socket_still_in_its_handshake_at_sigterm_is_told_1001_like_the_admitted_ones(relay_factory: Any) -> None:
    relay = relay_factory().start()

    async def scenario() -> tuple[int | None, int | None]:
        admitted, _ = await visitor(relay, vid())
        pending = Peer(await open_socket(relay, "/ws/visitor"))  # upgraded, no HELLO yet
        await asyncio.sleep(0.1)
        relay.proc.send_signal(signal.SIGTERM)
        return await admitted.closed(), await pending.closed()

    assert run(scenario()) == (p.CloseCode.GOING_AWAY, p.CloseCode.GOING_AWAY)
    assert relay.stop() == 0
