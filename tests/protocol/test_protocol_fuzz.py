"""Fuzzing: whatever bytes arrive, only ProtocolError ever escapes."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import protocol as p
from tests.protocol.protocol_strategies import KINDS, frames, msgpack_values

FUZZ = settings(max_examples=400, deadline=None)
STRUCTURED = settings(max_examples=250, deadline=None)


def check_contract(data: bytes) -> None:
    """decode and peek either succeed or raise ProtocolError, and agree."""
    try:
        header = p.peek(data)
    except p.ProtocolError as e:
        assert e.close_code == p.ERROR_CLOSE_CODES[e.code]
        with pytest.raises(p.ProtocolError) as info:
            p.decode(data)
        assert info.value.code == e.code  # decode checks the header first
        return
    try:
        msg = p.decode(data)
    except p.ProtocolError as e:
        assert e.close_code == p.ERROR_CLOSE_CODES[e.code]
        return
    assert msg.KIND is header.kind
    assert isinstance(msg, p.MESSAGE_TYPES[header.kind])
    assert p.decode(p.encode(msg)) == msg


headers = st.builds(
    lambda kind, epoch, seq: bytes([p.WIRE_VERSION, kind, 0, 0]) + epoch.to_bytes(4, "big") + seq.to_bytes(8, "big"),
    st.sampled_from(KINDS),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**64 - 1),
)


@FUZZ
@given(data=st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_protocol_error(data):
    check_contract(data)


@FUZZ
@given(header=headers, payload=st.binary(max_size=64))
def test_arbitrary_payloads_behind_a_valid_header_raise_only_protocol_error(header, payload):
    check_contract(header + payload)


@STRUCTURED
@given(header=headers, body=st.dictionaries(st.text(max_size=10), msgpack_values, max_size=6))
def test_well_formed_msgpack_of_the_wrong_shape_raises_only_protocol_error(header, body):
    check_contract(header + msgpack.packb(body))


@STRUCTURED
@given(header=headers, data=st.data())
def test_known_field_names_with_arbitrary_values_raise_only_protocol_error(header, data):
    names = list(p.MESSAGE_TYPES[p.Kind(header[1])].__dataclass_fields__)
    keys = st.sampled_from(names) if names else st.text(max_size=4)
    body = data.draw(st.dictionaries(keys, msgpack_values, max_size=len(names) + 1))
    check_contract(header + msgpack.packb(body))


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    frame = bytearray(draw(frames()))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "splice"]))
        i = draw(st.integers(0, max(len(frame) - 1, 0)))
        if op == "flip" and frame:
            frame[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and frame:
            frame[i] = draw(st.sampled_from([0x00, 0xC1, 0xC7, 0xD4, 0xDD, 0xDF, 0xC6, 0xFF, 0x7F, 0x80]))
        elif op == "insert":
            frame[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del frame[i : i + draw(st.integers(1, 8))]
        elif op == "truncate":
            del frame[i:]
        elif op == "splice":
            other = draw(frames())
            j = draw(st.integers(0, len(other)))
            frame[i:] = other[j:]
    return bytes(frame)


@settings(max_examples=500, deadline=None)
@given(data=mutated_frames())
def test_mutated_valid_frames_raise_only_protocol_error(data):
    check_contract(data)


@FUZZ
@given(frame=frames(), cut=st.integers(0, 10_000))
def test_every_strict_prefix_of_a_valid_frame_is_rejected(frame, cut):
    prefix = frame[: cut % len(frame)]
    with pytest.raises(p.ProtocolError) as info:
        p.decode(prefix)
    expected = {"short_header"} if len(prefix) < p.HEADER_SIZE else {"truncated"}
    assert info.value.code in expected


@FUZZ
@given(frame=frames(), junk=st.binary(min_size=1, max_size=16))
def test_bytes_after_the_payload_map_are_rejected(frame, junk):
    with pytest.raises(p.ProtocolError) as info:
        p.decode(frame + junk)
    assert info.value.code == "trailing_bytes"
