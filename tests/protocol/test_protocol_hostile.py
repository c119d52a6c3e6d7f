"""Hostile frames: each is refused with its exact error code and close code."""

from __future__ import annotations

import tracemalloc

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import protocol as p
from protocol import CloseCode, Kind
from tests.protocol.protocol_strategies import KINDS

LIM = p.DEFAULT_LIMITS
PE, TOO_BIG, BAD_VERSION, UNKNOWN_KIND = (
    CloseCode.PROTOCOL_ERROR,
    CloseCode.FRAME_TOO_BIG,
    CloseCode.UNSUPPORTED_VERSION,
    CloseCode.UNKNOWN_KIND,
)


def frame(kind: int, payload: bytes = b"", *, version: int = 1, reserved: int = 0) -> bytes:
    return bytes([version, kind]) + reserved.to_bytes(2, "big") + bytes(12) + payload


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


CLICK = pack({"node": 1, "x": 2, "y": 3})
CLICK_PREFIX = b"\x84\xa4node\x01\xa1x\x02\xa1y\x03\xa1z"  # a 4-map missing its last value
TS32 = pack(msgpack.Timestamp(1, 0))  # d6 ff ...
TS64 = pack(msgpack.Timestamp(1, 1))  # d7 ff ...
TS96 = pack(msgpack.Timestamp(2**40, 1))  # c7 0c ff ...


def click_with(**fields: object) -> bytes:
    body: dict[str, object] = {"node": 1, "x": 2, "y": 3}
    body.update(fields)
    return frame(Kind.CLICK, pack({k: v for k, v in body.items() if v is not MISSING}))


MISSING = object()


def padded(kind: Kind, size: int) -> bytes:
    """A valid frame of ``kind`` (DOM_DELTA/DOM_KEYFRAME) exactly ``size`` bytes long."""
    cls = p.MESSAGE_TYPES[kind]
    overhead = len(p.encode(cls(data=b"x" * size))) - size  # type: ignore[call-arg]
    for n in (size - overhead, size - overhead + 2):  # bin32 or bin16 header
        out = p.encode(cls(data=b"x" * n))  # type: ignore[call-arg]
        if len(out) == size:
            return out
    raise AssertionError(size)


HOSTILE = [
    # header
    ("empty-frame", b"", "short_header", PE),
    ("header-only-partially", frame(Kind.CLICK, CLICK)[:15], "short_header", PE),
    ("bad-version-0", frame(Kind.CLICK, CLICK, version=0), "bad_version", BAD_VERSION),
    ("bad-version-2", frame(Kind.CLICK, CLICK, version=2), "bad_version", BAD_VERSION),
    ("bad-version-ff", frame(Kind.CLICK, CLICK, version=0xFF), "bad_version", BAD_VERSION),
    ("reserved-low-byte", frame(Kind.CLICK, CLICK, reserved=1), "reserved_bits", PE),
    ("reserved-high-byte", frame(Kind.CLICK, CLICK, reserved=0x8000), "reserved_bits", PE),
    ("unknown-kind-00", frame(0x00, CLICK), "unknown_kind", UNKNOWN_KIND),
    ("unknown-kind-05", frame(0x05, CLICK), "unknown_kind", UNKNOWN_KIND),
    ("unknown-kind-ff", frame(0xFF, CLICK), "unknown_kind", UNKNOWN_KIND),
    # size
    ("oversize-small-kind", padded(Kind.DOM_DELTA, LIM.max_frame + 1), "too_big", TOO_BIG),
    (
        "oversize-control-kind",
        frame(Kind.CLICK, CLICK) + bytes(LIM.max_frame + 1 - len(frame(Kind.CLICK, CLICK))),
        "too_big",
        TOO_BIG,
    ),
    ("oversize-big-kind", padded(Kind.DOM_KEYFRAME, LIM.max_keyframe + 1), "too_big", TOO_BIG),
    # truncation
    ("payload-missing", frame(Kind.CLICK), "truncated", PE),
    ("payload-cut", frame(Kind.CLICK, CLICK[:-1]), "truncated", PE),
    ("payload-cut-in-string", frame(Kind.URL_CHANGE, b"\x81\xa3url\xa5ab"), "truncated", PE),
    ("payload-cut-in-float", frame(Kind.CLICK, b"\x83\xa4node\x01\xa1x\xcb\x40\x59"), "truncated", PE),
    # 4 GiB declared, 10 bytes present
    ("bin32-4gib", frame(Kind.DOM_DELTA, b"\x81\xa4data\xc6\xff\xff\xff\xff" + bytes(10)), "truncated", PE),
    (
        "bin32-4gib-big-kind",
        frame(Kind.DOM_KEYFRAME, b"\x81\xa4data\xc6\xff\xff\xff\xff" + bytes(10)),
        "truncated",
        PE,
    ),
    ("str32-4gib", frame(Kind.URL_CHANGE, b"\x81\xa3url\xdb\xff\xff\xff\xff" + bytes(10)), "truncated", PE),
    (
        "array32-4gib",
        frame(Kind.CONSOLE_LINES, b"\x81\xa5lines\xdd\xff\xff\xff\xff" + bytes(10)),
        "too_long",
        PE,
    ),
    ("map32-4gib", frame(Kind.CLICK, b"\xdf\xff\xff\xff\xff" + bytes(10)), "too_long", PE),
    ("ext32-4gib", frame(Kind.CLICK, CLICK_PREFIX + b"\xc9\xff\xff\xff\xff\x05" + bytes(10)), "ext_type", PE),
    # invalid msgpack
    ("reserved-byte-c1", frame(Kind.CLICK, b"\x81\xa1x\xc1"), "malformed", PE),
    ("reserved-byte-c1-top", frame(Kind.CLICK, b"\xc1"), "malformed", PE),
    ("invalid-utf8-value", frame(Kind.URL_CHANGE, b"\x81\xa3url\xa2\xff\xfe"), "malformed", PE),
    ("invalid-utf8-key", frame(Kind.CLICK, b"\x81\xa2\xc3\x28\x01"), "malformed", PE),
    ("nesting-10000-arrays", frame(Kind.CLICK, b"\x91" * 10_000 + b"\xc0"), "too_deep", PE),
    (
        "nesting-10000-arrays-in-field",
        frame(Kind.CLICK, CLICK_PREFIX + b"\x91" * 10_000 + b"\xc0"),
        "too_deep",
        PE,
    ),
    ("nesting-10000-maps", frame(Kind.CLICK, b"\x81\xa1a" * 10_000 + b"\xc0"), "too_deep", PE),
    # ext types, anywhere
    ("fixext1-unknown-field", frame(Kind.CLICK, CLICK_PREFIX + b"\xd4\x05\x00"), "ext_type", PE),
    ("fixext16-unknown-field", frame(Kind.CLICK, CLICK_PREFIX + b"\xd8\x05" + bytes(16)), "ext_type", PE),
    ("ext8-unknown-field", frame(Kind.CLICK, CLICK_PREFIX + b"\xc7\x03\x05abc"), "ext_type", PE),
    ("ext8-empty-body", frame(Kind.CLICK, CLICK_PREFIX + b"\xc7\x00\x05"), "ext_type", PE),
    ("ext16-unknown-field", frame(Kind.CLICK, CLICK_PREFIX + b"\xc8\x00\x02\x7fab"), "ext_type", PE),
    ("ext-in-coordinate", frame(Kind.CLICK, b"\x83\xa4node\x01\xa1x\xd4\x05\x00\xa1y\x02"), "ext_type", PE),
    ("ext-top-level", frame(Kind.CLICK, b"\xd4\x05\x00"), "ext_type", PE),
    ("ext-as-map-key", frame(Kind.CLICK, b"\x81\xd4\x05\x00\x01"), "ext_type", PE),
    ("ext-in-nested-array", frame(Kind.CLICK, CLICK_PREFIX + b"\x92\x01\xd4\x05\x00"), "ext_type", PE),
    ("timestamp32-unknown-field", frame(Kind.CLICK, CLICK_PREFIX + TS32), "ext_type", PE),
    ("timestamp64-in-coordinate", click_with(x=msgpack.Timestamp(1, 1)), "ext_type", PE),
    ("timestamp96-unknown-field", frame(Kind.CLICK, CLICK_PREFIX + TS96), "ext_type", PE),
    ("timestamp-top-level", frame(Kind.CLICK, TS64), "ext_type", PE),
    ("timestamp-empty-body", frame(Kind.CLICK, CLICK_PREFIX + b"\xc7\x00\xff"), "ext_type", PE),
    # map shape
    ("int-key-top-level", frame(Kind.CLICK, CLICK_PREFIX[:-2] + b"\x01\x02"), "bad_key", PE),
    ("bytes-key-top-level", frame(Kind.CLICK, CLICK_PREFIX[:-2] + b"\xc4\x01z\x02"), "bad_key", PE),
    ("nil-key-top-level", frame(Kind.CLICK, b"\x81\xc0\x01"), "bad_key", PE),
    ("array-key-top-level", frame(Kind.CLICK, b"\x81\x91\x01\x01"), "bad_key", PE),
    ("trailing-byte", frame(Kind.CLICK, CLICK + b"\x00"), "trailing_bytes", PE),
    ("trailing-second-map", frame(Kind.CLICK, CLICK + CLICK), "trailing_bytes", PE),
    ("payload-array", frame(Kind.CLICK, pack([1, 2, 3])), "not_a_map", PE),
    ("payload-int", frame(Kind.PING, pack(5)), "not_a_map", PE),
    ("payload-nil", frame(Kind.PING, pack(None)), "not_a_map", PE),
    ("payload-string", frame(Kind.PING, pack("t")), "not_a_map", PE),
    ("payload-bin", frame(Kind.DOM_DELTA, pack(b"data")), "not_a_map", PE),
    ("map-over-64-keys", frame(Kind.PING, pack({f"k{i}": i for i in range(65)})), "too_long", PE),
    # fields
    ("missing-required-field", click_with(node=MISSING), "missing_field", PE),
    ("missing-field-empty-map", frame(Kind.DOM_DELTA, pack({})), "missing_field", PE),
    ("missing-hello-role", frame(Kind.HELLO, pack({"version": 1})), "missing_field", PE),
    ("bool-as-int", click_with(node=True), "wrong_type", PE),
    ("bool-as-num", click_with(x=False), "wrong_type", PE),
    ("float-as-int", click_with(node=1.0), "wrong_type", PE),
    ("string-as-int", click_with(node="1"), "wrong_type", PE),
    ("nil-as-num", click_with(y=None), "wrong_type", PE),
    ("int-as-bool", frame(Kind.CMD_RESULT, pack({"id": "c", "ok": 1})), "wrong_type", PE),
    ("string-as-bin", frame(Kind.DOM_DELTA, pack({"data": "abc"})), "wrong_type", PE),
    ("bin-as-string", frame(Kind.URL_CHANGE, pack({"url": b"https://x"})), "wrong_type", PE),
    ("string-as-list", frame(Kind.CONSOLE_LINES, pack({"level": "log", "lines": "x"})), "wrong_type", PE),
    (
        "int-in-string-list",
        frame(Kind.CONSOLE_LINES, pack({"level": "log", "lines": ["a", 1]})),
        "wrong_type",
        PE,
    ),
    ("point-not-an-array", frame(Kind.DRAW_STROKE, pack({"points": [1, 2]})), "wrong_type", PE),
    ("point-of-three", frame(Kind.DRAW_STROKE, pack({"points": [[1, 2, 3]]})), "bad_value", PE),
    ("point-of-one", frame(Kind.DRAW_STROKE, pack({"points": [[1]]})), "bad_value", PE),
    ("nil-role", frame(Kind.HELLO, pack({"role": None, "version": 1})), "wrong_type", PE),
    # numbers
    ("nan-coordinate", click_with(x=float("nan")), "not_finite", PE),
    ("plus-inf-coordinate", click_with(x=float("inf")), "not_finite", PE),
    ("minus-inf-coordinate", click_with(y=float("-inf")), "not_finite", PE),
    (
        "float32-nan-coordinate",
        frame(Kind.CLICK, b"\x83\xa4node\x01\xa1x\xca\x7f\xc0\x00\x00\xa1y\x02"),
        "not_finite",
        PE,
    ),
    ("nan-in-point", frame(Kind.DRAW_STROKE, pack({"points": [[0, float("nan")]]})), "not_finite", PE),
    ("nan-width", frame(Kind.VIEWPORT, pack({"width": float("nan"), "height": 1})), "not_finite", PE),
    ("huge-coordinate-1e300", click_with(x=1e300), "out_of_range", PE),
    ("huge-negative-coordinate", click_with(x=-1e300), "out_of_range", PE),
    ("coordinate-just-over-coord-max", click_with(x=LIM.coord_max + 0.5), "out_of_range", PE),
    ("integer-coordinate-over-coord-max", click_with(y=int(LIM.coord_max) + 1), "out_of_range", PE),
    ("uint64-max-coordinate", click_with(y=2**64 - 1), "out_of_range", PE),
    ("int-at-2-pow-53", click_with(node=2**53), "out_of_range", PE),
    ("int-at-minus-2-pow-53", click_with(node=-(2**53)), "out_of_range", PE),
    ("uint64-max-int", frame(Kind.PING, pack({"t": 2**64 - 1})), "out_of_range", PE),
    ("int64-min-int", frame(Kind.PING, pack({"t": -(2**63)})), "out_of_range", PE),
    # lengths
    (
        "string-over-max-string",
        frame(Kind.CONSOLE_EVAL, pack({"code": "a" * (LIM.max_string + 1)})),
        "too_long",
        PE,
    ),
    (
        "multibyte-string-over-max-string",
        frame(
            Kind.SCREEN_FRAME,
            pack({"mime": "é" * (LIM.max_string + 1), "width": 1, "height": 1, "image": b""}),
        ),
        "too_long",
        PE,
    ),
    (
        "astral-string-over-max-string",
        frame(
            Kind.SCREEN_FRAME,
            pack({"mime": "\U0001f600" * (LIM.max_string + 1), "width": 1, "height": 1, "image": b""}),
        ),
        "too_long",
        PE,
    ),
    (
        "list-over-max-list",
        frame(Kind.PERMISSIONS_UPDATE, pack({"permissions": [""] * (LIM.max_list + 1)})),
        "too_long",
        PE,
    ),
    (
        "points-over-max-list",
        frame(Kind.DRAW_STROKE, pack({"points": [[0, 0]] * (LIM.max_list + 1)})),
        "too_long",
        PE,
    ),
    (
        "unknown-field-list-over-max-list",
        frame(Kind.PING, pack({"junk": [0] * (LIM.max_list + 1)})),
        "too_long",
        PE,
    ),
    # values
    ("hello-role-admin", p.encode(p.Hello(role="admin", version=1)), "bad_value", PE),
    ("hello-role-relay", p.encode(p.Hello(role="relay", version=1)), "bad_value", PE),
    ("hello-role-empty", p.encode(p.Hello(role="", version=1)), "bad_value", PE),
]


def test_hostile_table_ids_are_unique():
    ids = [case[0] for case in HOSTILE]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(("data", "code", "close_code"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_frame_is_refused_with_its_exact_code(data, code, close_code):
    with pytest.raises(p.ProtocolError) as info:
        p.decode(data)
    assert info.value.code == code, info.value
    assert info.value.close_code == close_code
    assert p.ERROR_CLOSE_CODES[code] == close_code


HEADER_CODES = {"short_header", "bad_version", "reserved_bits", "unknown_kind", "too_big"}


@pytest.mark.parametrize(("data", "code", "close_code"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_peek_refuses_exactly_the_header_failures(data, code, close_code):
    if code in HEADER_CODES:
        with pytest.raises(p.ProtocolError) as info:
            p.peek(data)
        assert (info.value.code, info.value.close_code) == (code, close_code)
    else:
        header = p.peek(data)
        assert header.kind == data[1]


def test_a_big_kind_between_max_frame_and_max_keyframe_is_accepted():
    for size in (LIM.max_frame + 1, 3 * LIM.max_frame, LIM.max_keyframe):
        data = padded(Kind.DOM_KEYFRAME, size)
        assert p.peek(data).kind is Kind.DOM_KEYFRAME
        msg = p.decode(data)
        assert isinstance(msg, p.DomKeyframe)
        assert p.encode(msg) == data
    shot = p.ScreenFrame(mime="image/png", width=1, height=1, image=bytes(LIM.max_frame * 2))
    assert p.decode(p.encode(shot)) == shot


def test_a_small_kind_of_exactly_max_frame_is_accepted():
    data = padded(Kind.DOM_DELTA, LIM.max_frame)
    assert p.decode(data).KIND is Kind.DOM_DELTA


def test_strings_and_lists_exactly_at_their_limits_are_accepted():
    text = "\U0001f600" * LIM.max_string  # 4 bytes each: the limit is in characters
    shot = p.ScreenFrame(mime=text, width=1, height=1, image=b"")
    assert p.decode(p.encode(shot)) == shot
    perms = p.PermissionsUpdate(permissions=("",) * LIM.max_list)
    assert p.decode(p.encode(perms)) == perms
    edge = p.Click(node=2**53 - 1, x=LIM.coord_max, y=-LIM.coord_max)
    assert p.decode(p.encode(edge)) == edge


SMALL = p.Limits(max_frame=200, max_keyframe=1000, max_string=8, max_list=3, coord_max=100.0)


@pytest.mark.parametrize(
    ("msg", "code"),
    [
        (p.UrlChange(url="a" * 8), None),
        (p.UrlChange(url="ü" * 8), None),
        (p.UrlChange(url="a" * 9), "too_long"),
        (p.PermissionsUpdate(permissions=("a", "b", "c")), None),
        (p.PermissionsUpdate(permissions=("a", "b", "c", "d")), "too_long"),
        (p.Pointer(x=100.0, y=-100.0), None),
        (p.Pointer(x=100.5, y=0.0), "out_of_range"),
        (p.DomDelta(data=bytes(200 - 24)), None),
        (p.DomDelta(data=bytes(200 - 23)), "too_big"),
        (p.DomKeyframe(data=bytes(990)), "too_big"),
        (p.DomKeyframe(data=bytes(900)), None),
    ],
)
def test_custom_limits_are_enforced_at_their_edges(msg, code):
    data = p.encode(msg)
    if code is None:
        assert p.decode(data, SMALL) == msg
    else:
        with pytest.raises(p.ProtocolError) as info:
            p.decode(data, SMALL)
        assert info.value.code == code


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    epoch=st.integers(0, 2**32 - 1),
    seq=st.integers(0, 2**64 - 1),
    payload=st.binary(max_size=256),
)
def test_no_payload_byte_changes_what_peek_reports(kind, epoch, seq, payload):
    head = bytes([1, kind, 0, 0]) + epoch.to_bytes(4, "big") + seq.to_bytes(8, "big")
    header = p.peek(head + payload)
    assert (header.kind, header.epoch, header.seq) == (kind, epoch, seq)
    assert header == p.peek(head)


@pytest.mark.parametrize(
    "data",
    [
        frame(Kind.DOM_DELTA, b"\x81\xa4data\xc6\xff\xff\xff\xff" + bytes(10)),
        frame(Kind.DOM_KEYFRAME, b"\x81\xa4data\xc6\xff\xff\xff\xff" + bytes(10)),
        frame(Kind.URL_CHANGE, b"\x81\xa3url\xdb\xff\xff\xff\xff" + bytes(10)),
        frame(Kind.CONSOLE_LINES, b"\x81\xa5lines\xdd\xff\xff\xff\xff" + bytes(10)),
        frame(Kind.CLICK, b"\xdf\xff\xff\xff\xff" + bytes(10)),
        frame(Kind.CLICK, CLICK_PREFIX + b"\xc9\xff\xff\xff\xff\x05" + bytes(10)),
        frame(Kind.CLICK, CLICK_PREFIX + b"\xc9\x7f\xff\xff\xff\x05" + bytes(10)),
    ],
    ids=["bin32", "bin32-big-kind", "str32", "array32", "map32", "ext32", "ext32-2gib"],
)
def test_a_frame_declaring_4_gib_is_refused_without_allocating(data):
    p.decode(p.encode(p.Ping()))  # warm up caches outside the measurement
    with pytest.raises(p.ProtocolError):
        p.decode(data)
    tracemalloc.start()
    try:
        with pytest.raises(p.ProtocolError):
            p.decode(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024
