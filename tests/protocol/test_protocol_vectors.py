"""protocol/vectors.json: the bytes both codecs (Python and JavaScript) must produce."""

from __future__ import annotations

import dataclasses
import json

import pytest

import protocol as p
from tests.protocol import make_vectors

DATA = json.loads(make_vectors.VECTORS_PATH.read_text(encoding="utf-8"))
VECTORS = DATA["vectors"]


def test_vectors_file_is_what_make_vectors_writes():
    on_disk = make_vectors.VECTORS_PATH.read_text(encoding="utf-8")
    assert on_disk == make_vectors.render(), "run: .venv/bin/python tests/protocol/make_vectors.py"


def test_vectors_file_has_the_documented_shape():
    assert list(DATA) == ["wire_version", "protocol_version", "vectors"]
    assert DATA["wire_version"] == p.WIRE_VERSION
    assert DATA["protocol_version"] == p.PROTOCOL_VERSION
    names = [v["name"] for v in VECTORS]
    assert len(names) == len(set(names))
    assert sorted(VECTORS, key=lambda v: (v["code"], v["name"])) == VECTORS
    for v in VECTORS:
        assert list(v) == ["name", "kind", "code", "epoch", "seq", "message", "hex"]


def test_every_kind_has_at_least_one_vector():
    covered = {v["kind"] for v in VECTORS}
    assert covered == set(p.Kind.__members__)


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector_decodes_to_its_message_and_encodes_to_its_bytes(vector):
    kind = p.Kind[vector["kind"]]
    assert int(kind) == vector["code"]
    cls = p.MESSAGE_TYPES[kind]
    assert list(vector["message"]) == [f.name for f in dataclasses.fields(cls)]
    msg = make_vectors.from_json(cls, vector["message"])
    data = bytes.fromhex(vector["hex"])

    assert p.decode(data) == msg
    assert p.encode(msg, epoch=vector["epoch"], seq=vector["seq"]).hex() == vector["hex"]
    header = p.peek(data)
    assert (header.kind, header.epoch, header.seq) == (kind, vector["epoch"], vector["seq"])
    assert data[0] == DATA["wire_version"] and data[1] == vector["code"]


# Vectors that pin one msgpack encoding each: (vector, bytes its payload must contain).
ENCODINGS = [
    ("click-basic", "a178cb4059200000000000"),  # float64 for a non-integral num
    ("click-basic", "a17914"),  # positive fixint for an integral num
    ("pong-negative-fixint", "a174e0"),  # negative fixint -32
    ("remote-scroll-int8", "a26478d080"),  # int8 -128
    ("remote-scroll-int8", "a26479d0df"),  # int8 -33
    ("pong-uint16", "a174cdffff"),  # uint16
    ("type-defaults", "a46e6f6465ce00010000"),  # uint32
    ("click-big-node", "a46e6f6465cf0000000100000000"),  # uint64
    ("ping-negative", "a174d3ffe0000000000001"),  # int64
    ("console-eval-str8", "a4636f6465d920"),  # str8 at 32 bytes
    ("console-eval-str16", "a4636f6465da0100"),  # str16 at 256 bytes
    ("dom-delta-empty-bin", "a464617461c400"),  # empty bin8
    ("dom-keyframe-bin16", "a464617461c5"),  # bin16
    ("console-lines-many", "a56c696e6573dc0012"),  # array16 of 18
    ("draw-stroke-defaults", "a6706f696e747390"),  # empty array
    ("cmd-reboot-safe", "a473616665c3"),  # true
    ("cmd-result-failed", "a26f6bc2"),  # false
]


@pytest.mark.parametrize(("name", "fragment"), ENCODINGS, ids=[f"{n}-{f[-8:]}" for n, f in ENCODINGS])
def test_vectors_pin_the_interesting_msgpack_encodings(name, fragment):
    vector = next(v for v in VECTORS if v["name"] == name)
    assert fragment in vector["hex"][2 * p.HEADER_SIZE :]


def test_vectors_include_stamped_frames_and_non_integral_floats():
    assert any(v["epoch"] and v["seq"] for v in VECTORS)
    assert any(isinstance(x, float) and not x.is_integer() for v in VECTORS for x in v["message"].values())


def test_vector_floats_survive_json():
    for v in VECTORS:
        for value in v["message"].values():
            if isinstance(value, float):
                assert json.loads(json.dumps(value)) == value
