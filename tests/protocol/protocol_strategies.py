"""Hypothesis strategies for valid protocol messages and frames.

Built from the message dataclasses' type hints, so a new field or kind is
covered without touching this file. Sizes are kept small for speed; all
values respect :data:`protocol.DEFAULT_LIMITS`.
"""

from __future__ import annotations

import dataclasses
import typing
from functools import cache
from typing import Any

from hypothesis import strategies as st

import protocol as p

LIMITS = p.DEFAULT_LIMITS
SAFE = 2**53 - 1

texts = st.text(max_size=12)
ints = st.one_of(
    st.integers(-SAFE, SAFE),
    st.sampled_from([0, -1, 127, 128, -32, -33, 255, 256, 65535, 65536, 2**32 - 1, 2**32, SAFE, -SAFE]),
)
nums = st.one_of(
    st.floats(-LIMITS.coord_max, LIMITS.coord_max, allow_nan=False, allow_infinity=False),
    st.integers(-int(LIMITS.coord_max), int(LIMITS.coord_max)).map(float),
)
FIELD_STRATEGIES: dict[object, st.SearchStrategy[Any]] = {
    str: texts,
    int: ints,
    float: nums,
    bool: st.booleans(),
    bytes: st.binary(max_size=48),
    tuple[str, ...]: st.lists(texts, max_size=4).map(tuple),
    tuple[tuple[float, float], ...]: st.lists(st.tuples(nums, nums), max_size=4).map(tuple),
}
ROLES = st.sampled_from(["visitor", "viewer", "device"])
KINDS = list(p.Kind)


@cache
def messages_of(kind: p.Kind) -> st.SearchStrategy[p.Message]:
    """Valid messages of one kind; fields with a default are sometimes left out."""
    cls = p.MESSAGE_TYPES[kind]
    hints = typing.get_type_hints(cls)
    required: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for f in dataclasses.fields(cls):
        strategy = FIELD_STRATEGIES[hints[f.name]]
        if cls is p.Hello and f.name == "role":
            strategy = ROLES
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        (optional if has_default else required)[f.name] = strategy
    return st.fixed_dictionaries(required, optional=optional).map(lambda kw: cls(**kw))


def messages() -> st.SearchStrategy[p.Message]:
    return st.sampled_from(KINDS).flatmap(messages_of)


epochs = st.integers(0, 2**32 - 1)
seqs = st.integers(0, 2**64 - 1)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """A valid encoded frame of any kind, with an arbitrary epoch and seq."""
    return p.encode(draw(messages()), epoch=draw(epochs), seq=draw(seqs))


# Arbitrary msgpack values, for payloads that are well-formed msgpack but
# not necessarily valid messages.
msgpack_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(),
        st.text(max_size=8),
        st.binary(max_size=8),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=6), children, max_size=4),
    ),
    max_leaves=12,
)
