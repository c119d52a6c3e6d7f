"""Benchmarks: the relay against a `websockets` and a picows forwarder, side by side.

Run ``python -m bench quick`` (scenarios 1-2, under 90 s) or ``python -m bench all``
(every scenario, under 10 minutes). See ``bench/README.md``.
"""
