"""Keepalive: the relay pings; a peer that never answers is closed with 4002."""

from __future__ import annotations

import os
import socket
import struct
import time
from typing import Any

import protocol as p

from .client import upgrade_request


def _masked(payload: bytes, opcode: int = 0x2) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _frames(buf: bytes) -> list[tuple[int, bytes]]:
    out = []
    while len(buf) >= 2:
        opcode, n, at = buf[0] & 0x0F, buf[1] & 0x7F, 2
        if n == 126:
            n, at = struct.unpack(">H", buf[2:4])[0], 4
        elif n == 127:
            n, at = struct.unpack(">Q", buf[2:10])[0], 10
        if len(buf) < at + n:
            break
        out.append((opcode, buf[at : at + n]))
        buf = buf[at + n :]
    return out


def test_peer_that_never_answers_pings_is_closed_with_4002(relay_factory: Any) -> None:
    relay = relay_factory(PING_INTERVAL="0.3", PING_TIMEOUT="0.3").start()
    sock = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
    sock.sendall(upgrade_request(origin=relay.origin))
    data = b""
    while b"\r\n\r\n" not in data:  # like any real client, wait for the 101 before sending
        data += sock.recv(65536)
    sock.sendall(_masked(p.encode(p.Hello(role="visitor", version=1))))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # read everything, answer nothing
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    sock.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    frames = _frames(rest)
    opcodes = [op for op, _ in frames]
    binary = [payload for op, payload in frames if op == 0x2]
    assert isinstance(p.decode(binary[0]), p.Welcome)  # a ping may come before or after it
    assert 0x9 in opcodes  # pinged
    assert opcodes[-1] == 0x8  # then closed
    assert struct.unpack(">H", frames[-1][1][:2])[0] == p.CloseCode.KEEPALIVE_TIMEOUT
