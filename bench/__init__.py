"""Benchmarks: the relay against a `websockets` and a picows forwarder, side by side.

Run ``python -m bench quick`` (scenarios 1, 2, 8, 9, about 2 minutes) or ``python -m bench all``
(every scenario, under 12 minutes). See ``bench/README.md``.
"""
