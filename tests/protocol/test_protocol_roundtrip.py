"""encode / decode / peek / stamp agree with each other on valid messages."""

from __future__ import annotations

import dataclasses
import typing

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import protocol as p
from tests.protocol.protocol_strategies import KINDS, epochs, messages, messages_of, seqs

FAST = settings(max_examples=20, deadline=None)
MANY = settings(max_examples=250, deadline=None)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
@FAST
@given(data=st.data())
def test_every_kind_round_trips_through_encode_and_decode(kind, data):
    msg = data.draw(messages_of(kind))
    frame = p.encode(msg)
    decoded = p.decode(frame)
    assert type(decoded) is type(msg)
    assert decoded == msg
    assert p.encode(decoded) == frame


@MANY
@given(msg=messages(), epoch=epochs, seq=seqs)
def test_peek_agrees_with_decode_and_the_inputs_on_every_valid_frame(msg, epoch, seq):
    frame = p.encode(msg, epoch=epoch, seq=seq)
    header = p.peek(frame)
    assert header.kind is msg.KIND
    assert header.info is p.kind_info(msg.KIND)
    assert header.routing is header.info.routing
    assert (header.epoch, header.seq) == (epoch, seq)
    decoded = p.decode(frame)
    assert decoded.KIND is header.kind
    assert decoded == msg


@MANY
@given(msg=messages(), epoch=epochs, seq=seqs, epoch2=epochs, seq2=seqs)
def test_stamp_changes_only_epoch_and_seq(msg, epoch, seq, epoch2, seq2):
    frame = p.encode(msg, epoch=epoch, seq=seq)
    stamped = p.stamp(frame, epoch2, seq2)
    assert len(stamped) == len(frame)
    assert stamped[:4] == frame[:4]
    assert stamped[p.HEADER_SIZE :] == frame[p.HEADER_SIZE :]
    assert stamped == p.encode(msg, epoch=epoch2, seq=seq2)
    header = p.peek(stamped)
    assert (header.kind, header.epoch, header.seq) == (msg.KIND, epoch2, seq2)
    assert p.decode(stamped) == msg


@MANY
@given(msg=messages())
def test_peek_and_decode_accept_bytearray_and_memoryview(msg):
    frame = p.encode(msg, epoch=1, seq=2)
    for view in (bytearray(frame), memoryview(frame)):
        assert p.peek(view) == p.peek(frame)
        assert p.decode(view) == msg


@MANY
@given(msg=messages())
def test_encode_writes_every_field_in_declaration_order(msg):
    body = msgpack.unpackb(p.encode(msg)[p.HEADER_SIZE :], raw=False)
    assert list(body) == [f.name for f in dataclasses.fields(msg)]


@FAST
@given(
    msg=messages_of(p.Kind.CLICK),
    extra=st.dictionaries(st.text(max_size=8), st.integers(-(2**63), 2**64 - 1), max_size=3),
)
def test_unknown_fields_are_ignored(msg, extra):
    body = {f.name: getattr(msg, f.name) for f in dataclasses.fields(msg)}
    for key, value in extra.items():
        body.setdefault(key, value)
    frame = p.encode(msg)[: p.HEADER_SIZE] + msgpack.packb(body)
    assert p.decode(frame) == msg


SAMPLES = {
    str: "a",
    int: 1,
    float: 2.5,
    bool: True,
    bytes: b"\x00",
    tuple[str, ...]: ("a",),
    tuple[tuple[float, float], ...]: ((1.5, 2.0),),
}


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_a_frame_with_only_the_required_fields_decodes_with_the_defaults(kind):
    cls = p.MESSAGE_TYPES[kind]
    hints = typing.get_type_hints(cls)
    body = {
        f.name: SAMPLES[hints[f.name]]
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    if cls is p.Hello:
        body["role"] = "viewer"
    frame = bytes([p.WIRE_VERSION, kind, 0, 0]) + bytes(12) + msgpack.packb(body)
    msg = p.decode(frame)
    assert msg == cls(**body)
    for f in dataclasses.fields(cls):
        if f.name not in body:
            assert getattr(msg, f.name) == f.default


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (20.0, b"\x14"),
        (-1.0, b"\xff"),
        (100.5, b"\xcb\x40\x59\x20\x00\x00\x00\x00\x00"),
        (1e7, b"\xce\x00\x98\x96\x80"),
    ],
)
def test_integral_floats_are_written_as_ints_like_javascript(value, wire):
    frame = p.encode(p.Pointer(x=value, y=0.0))
    assert frame.endswith(b"\xa1x" + wire + b"\xa1y\x00")
    decoded = p.decode(frame)
    assert decoded == p.Pointer(x=value, y=0.0)
    assert type(decoded.x) is float
