"""Per-address limits across nodes: what one node exports and another absorbs (the exchange itself
runs through Redis: tests/cluster/test_cluster.py::test_per_address_limits_hold_across_nodes)."""

from __future__ import annotations

from relay.core.limits import AddressLimits


def test_a_node_counts_what_others_hold_of_an_address_sockets_new_ids_and_cool_downs() -> None:
    one, two = AddressLimits(20, 6), AddressLimits(20, 6)
    for _ in range(14):
        assert one.open_socket("203.0.113.9")
    for _ in range(4):
        assert one.new_visitor("203.0.113.9", 100.0)
    assert one.open_socket("198.51.100.1")  # 1 socket: under a tenth of the limit, not published
    one.strike("192.0.2.7", 100.0)
    exported = one.export(100.0)
    assert set(exported) == {"203.0.113.9", "192.0.2.7"}
    two.absorb([exported], 100.0)
    assert [two.open_socket("203.0.113.9") for _ in range(7)] == [True] * 6 + [False]  # 14 + 6 = 20
    assert [two.new_visitor("203.0.113.9", 100.0) for _ in range(3)] == [True, True, False]  # 4 + 2 = 6
    assert two.cooling("192.0.2.7", 100.5) and not two.cooling("192.0.2.7", 102.0)
    assert two.open_socket("198.51.100.1")
    two.absorb([], 101.0)  # the other node gone: its share is forgotten
    assert two.open_socket("203.0.113.9")


def test_absorb_ignores_malformed_entries() -> None:
    limits = AddressLimits(2, 2)
    limits.absorb([{"a": ["x", 1, 2]}, {"b": [1]}, {"c": [1, 0.0, 0.0]}], 0.0)
    assert set(limits.remote) == {"c"}
