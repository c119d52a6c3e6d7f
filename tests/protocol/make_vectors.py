"""Write ``protocol/vectors.json``: shared wire vectors for every kind.

Run ``.venv/bin/python tests/protocol/make_vectors.py`` to rewrite the file;
``test_vectors.py`` fails when the committed file and this script disagree.

Each vector: a message (every field of its dataclass, in declaration order;
bytes as ``{"$bin": hex}``, tuples as arrays), the epoch and seq it is
encoded with, and the full frame in hex. The JavaScript codec is checked
against the same file: integral numbers are written as msgpack ints,
non-integral ones as float64, fields in declaration order.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import msgpack  # noqa: E402

import protocol as p  # noqa: E402

VECTORS_PATH = ROOT / "protocol" / "vectors.json"

_RRWEB_META = msgpack.packb([{"type": 4, "data": {"href": "https://example.com/", "width": 1280}}])
_RRWEB_BIG = msgpack.packb(
    [
        {"type": 4, "data": {"href": "https://example.com/shop?q=ü", "width": 1280, "height": 720}},
        {"type": 2, "data": {"node": {"type": 0, "childNodes": [{"type": 2, "tagName": "p"}] * 30}}},
    ]
)
_PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360f8ffff3f0005fe02fea7d6a4c40000000049454e44ae426082"
)
_EMOJI = "\U0001f600"  # 4 bytes of UTF-8, a surrogate pair in JavaScript

# (name, message, epoch, seq). Ordered kinds carry a relay stamp.
CASES: list[tuple[str, p.Message, int, int]] = [
    # handshake
    ("hello-visitor-defaults", p.Hello(role="visitor", version=1), 0, 0),
    (
        "hello-viewer-resume",
        p.Hello(
            role="viewer",
            version=1,
            token="eyJhbGciOiJIUzI1NiJ9.e30.sig",
            client_id="v_3kT9",
            resume_epoch=4294967295,
            resume_seq=9007199254740991,
            capabilities=("screen", "console"),
        ),
        0,
        0,
    ),
    (
        "hello-device",
        p.Hello(role="device", version=1, token="s" * 40, client_id="dev-01"),
        0,
        0,
    ),
    (
        "welcome-full",
        p.Welcome(
            version=1,
            session="sess_abc123",
            client_id="v_3kT9",
            epoch=3735928559,
            node="relay-1",
            heartbeat=20,
            resume="r.token",
            permissions=("click", "scroll", "type", "draw"),
        ),
        0,
        0,
    ),
    (
        "welcome-defaults",
        p.Welcome(version=1, session="", client_id="v_1", epoch=0, node="n", heartbeat=20000),
        0,
        0,
    ),
    ("error-defaults", p.Error(code="forbidden"), 0, 0),
    (
        "error-fatal",
        p.Error(code="version_mismatch", message="protocol 2 not supported", close_code=4502),
        0,
        0,
    ),
    (
        "error-session-moved-hint",
        p.Error(
            code="session_moved",
            message="the session is on node2",
            close_code=4003,
            node="node2",
            url="https://relay-2.example.com/cobrowsing",
        ),
        0,
        0,
    ),
    (
        "error-session-moved-node-only",
        p.Error(code="session_moved", close_code=4003, node="relay-b"),
        0,
        0,
    ),
    ("bye-defaults", p.Bye(), 0, 0),
    ("bye-unicode-reason", p.Bye(code=4508, reason="Sitzung beendet — ça va ✓"), 0, 0),
    # visitor -> viewers
    ("dom-keyframe-small", p.DomKeyframe(data=_RRWEB_META), 3735928559, 1),
    ("dom-keyframe-bin16", p.DomKeyframe(data=_RRWEB_BIG), 3735928559, 9007199254740991),
    ("dom-delta-basic", p.DomDelta(data=b"\x91\x82\xa4type\x03\xa4data\x80"), 7, 2),
    ("dom-delta-empty-bin", p.DomDelta(data=b""), 1, 4294967296),
    ("pointer-integral", p.Pointer(x=640.0, y=360.0), 0, 0),
    ("pointer-fractional", p.Pointer(x=100.5, y=-3.25), 0, 0),
    ("scroll-zero", p.Scroll(x=0.0, y=0.0), 0, 0),
    ("scroll-large", p.Scroll(x=0.1, y=10000000.0), 0, 0),
    ("viewport-basic", p.Viewport(width=1280.0, height=720.5), 0, 0),
    ("url-change-defaults", p.UrlChange(url="https://example.com/"), 0, 0),
    (
        "url-change-unicode",
        p.UrlChange(url="https://例え.jp/パス?q=ü", title=f"日本語のタイトル {_EMOJI}"),
        0,
        0,
    ),
    (
        "screen-frame-png",
        p.ScreenFrame(mime="image/png", width=1.0, height=1.0, image=_PNG_1PX),
        0,
        0,
    ),
    (
        "screen-frame-fractional",
        p.ScreenFrame(mime="image/jpeg", width=1920.5, height=1080.0, image=b"\xff\xd8\xff\xd9"),
        0,
        0,
    ),
    ("console-lines-empty", p.ConsoleLines(level="log", lines=()), 12, 3),
    (
        "console-lines-many",
        p.ConsoleLines(level="error", lines=(*(f"line {i}" for i in range(16)), "x" * 40, _EMOJI)),
        12,
        4,
    ),
    # viewer -> visitor
    ("click-basic", p.Click(node=12, x=100.5, y=20.0), 7, 1),
    ("click-right-button", p.Click(node=0, x=-0.5, y=1e-05, button=2), 0, 0),
    ("click-big-node", p.Click(node=4294967296, x=-10000000.0, y=10000000.0, button=1), 0, 0),
    ("remote-scroll-negative", p.RemoteScroll(node=0, dx=-120.0, dy=-3.25), 0, 0),
    ("remote-scroll-int8", p.RemoteScroll(node=-1, dx=-128.0, dy=-33.0), 0, 0),
    ("type-text", p.Type(node=33, text="héllo wörld 你好"), 0, 0),
    ("type-key", p.Type(node=33, key="Backspace"), 0, 0),
    ("type-defaults", p.Type(node=65536), 0, 0),
    (
        "draw-stroke-mixed",
        p.DrawStroke(points=((0.0, 0.0), (10.5, -2.0), (1e-05, 123456.75)), color="#00ff00", width=2.5),
        0,
        0,
    ),
    ("draw-stroke-defaults", p.DrawStroke(points=()), 0, 0),
    ("draw-clear", p.DrawClear(), 0, 0),
    ("redirect-basic", p.Redirect(url="https://example.com/checkout"), 0, 0),
    ("reload", p.Reload(), 0, 0),
    ("console-eval-basic", p.ConsoleEval(code='document.title = "x" + 1;'), 0, 0),
    ("console-eval-str8", p.ConsoleEval(code="a" * 32), 0, 0),
    ("console-eval-str16", p.ConsoleEval(code="é" * 128), 0, 0),
    ("viewer-pointer-basic", p.ViewerPointer(x=3.0, y=4.75), 0, 0),
    # session control
    (
        "session-request-basic",
        p.SessionRequest(
            session="sess_abc123",
            agent_id="agent-7",
            agent_name="Zoë Ångström",
            permissions=("click", "scroll"),
        ),
        0,
        0,
    ),
    (
        "session-request-defaults",
        p.SessionRequest(session="s", agent_id="a", agent_name=""),
        0,
        0,
    ),
    ("session-accept-defaults", p.SessionAccept(), 0, 0),
    ("session-accept-basic", p.SessionAccept(session="sess_abc123"), 0, 0),
    ("session-decline-basic", p.SessionDecline(session="sess_abc123", reason="busy"), 0, 0),
    ("session-end-defaults", p.SessionEnd(), 0, 0),
    ("session-end-basic", p.SessionEnd(session="sess_abc123", reason="agent_left"), 0, 0),
    ("resync-request-defaults", p.ResyncRequest(), 0, 0),
    ("resync-request-reason", p.ResyncRequest(reason="gap"), 0, 0),
    ("permissions-update-basic", p.PermissionsUpdate(permissions=("click", "draw")), 0, 0),
    ("permissions-update-empty", p.PermissionsUpdate(permissions=()), 0, 0),
    ("presence-defaults", p.Presence(), 0, 0),
    (
        "presence-full",
        p.Presence(
            url="https://example.com/cart",
            title="Cart (2) — Shop",
            unique_id="user-42",
            identities=("ana@example.com", "Ana Müller"),
            tags=("vip",),
            lookup_code="7K2Q",
            browser="Firefox 128",
            device_type="desktop",
            allow=("click", "scroll", "type", "draw", "agent_redirect"),
        ),
        0,
        0,
    ),
    ("pageview-defaults", p.Pageview(url="https://example.com/"), 0, 0),
    (
        "pageview-full",
        p.Pageview(url="https://例え.jp/cart?q=ü#top", title=f"Cart (2) — Shop {_EMOJI}", at=1764470000123),
        0,
        0,
    ),
    # device agent
    ("inventory-minimal", p.Inventory(hostname="pc-01", os="linux"), 0, 0),
    (
        "inventory-full",
        p.Inventory(
            hostname="PC-ÄÖÜ",
            os="windows",
            os_version="10.0.22631",
            cpu="Intel(R) Core(TM) i7",
            cores=16,
            memory=34359738368,
            disk=1000204886016,
            macs=("00:11:22:33:44:55",),
            ips=("10.0.0.5", "fe80::1"),
            agent_version="0.1.0",
        ),
        0,
        0,
    ),
    ("cmd-reboot-defaults", p.CmdReboot(id="c1"), 0, 0),
    ("cmd-reboot-safe", p.CmdReboot(id="c2", safe=True), 0, 0),
    ("cmd-wake-defaults", p.CmdWake(id="c3", mac="00:11:22:33:44:55"), 0, 0),
    ("cmd-wake-broadcast", p.CmdWake(id="c4", mac="00:11:22:33:44:55", broadcast="10.0.0.255"), 0, 0),
    ("cmd-logout-basic", p.CmdLogout(id="c5"), 0, 0),
    ("cmd-result-ok", p.CmdResult(id="c1", ok=True), 0, 0),
    ("cmd-result-failed", p.CmdResult(id="c2", ok=False, message="access denied"), 0, 0),
    ("device-status-defaults", p.DeviceStatus(status="online"), 0, 0),
    ("device-status-detail", p.DeviceStatus(status="busy", detail="installing updates"), 0, 0),
    # keepalive
    ("ping-defaults", p.Ping(), 0, 0),
    ("ping-max-safe", p.Ping(t=9007199254740991), 0, 0),
    ("ping-negative", p.Ping(t=-9007199254740991), 0, 0),
    ("pong-uint16", p.Pong(t=65535), 0, 0),
    ("pong-negative-fixint", p.Pong(t=-32), 0, 0),
]


def to_json(value: Any) -> Any:
    """A field value as it appears under "message" in the vectors file."""
    if isinstance(value, bytes):
        return {"$bin": value.hex()}
    if isinstance(value, tuple):
        return [to_json(v) for v in value]
    return value


def from_json(cls: type[p.Message], fields: dict[str, Any]) -> p.Message:
    """Build a message from a vector's "message" object."""
    hints = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, value in fields.items():
        if name not in hints:
            raise KeyError(f"{cls.__name__} has no field {name!r}")
        kwargs[name] = _from_json_value(value)
    return cls(**kwargs)


def _from_json_value(value: Any) -> Any:
    if isinstance(value, dict):
        return bytes.fromhex(value["$bin"])
    if isinstance(value, list):
        return tuple(_from_json_value(v) for v in value)
    return value


def vector(name: str, msg: p.Message, epoch: int, seq: int) -> dict[str, Any]:
    kind = msg.KIND
    return {
        "name": name,
        "kind": kind.name,
        "code": int(kind),
        "epoch": epoch,
        "seq": seq,
        "message": {f.name: to_json(getattr(msg, f.name)) for f in dataclasses.fields(msg)},
        "hex": p.encode(msg, epoch=epoch, seq=seq).hex(),
    }


def build() -> dict[str, Any]:
    vectors = [vector(*case) for case in CASES]
    vectors.sort(key=lambda v: (v["code"], v["name"]))
    return {
        "wire_version": p.WIRE_VERSION,
        "protocol_version": p.PROTOCOL_VERSION,
        "vectors": vectors,
    }


def render() -> str:
    return json.dumps(build(), indent=1, ensure_ascii=False) + "\n"


def main() -> None:
    VECTORS_PATH.write_text(render(), encoding="utf-8")
    print(f"wrote {len(CASES)} vectors to {VECTORS_PATH.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
