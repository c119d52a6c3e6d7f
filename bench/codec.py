"""Micro-benchmark of the wire codec: encode, decode and peek rates.

Run ``python -m bench.codec`` (``--quick`` for a fast pass, ``--json`` for
the figures as JSON). :func:`run` returns the same figures as a dict so a
bench runner can put them into its results.

Cases: a small control event (CLICK), a 1 KiB DOM_DELTA, a 256 KiB
DOM_KEYFRAME, and plain ``msgpack.unpackb`` of the keyframe's payload bytes
as the floor decode is measured against (target: decode ≤ 2x unpackb).
``peek`` reads the 16-byte header only, so its cost must not grow with the
frame size: the 1 KiB and 256 KiB figures are reported side by side.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import msgpack  # type: ignore[import-untyped]

import protocol as p

__all__ = ["run", "main", "DECODE_VS_UNPACKB_TARGET"]

DECODE_VS_UNPACKB_TARGET = 2.0
PEEK_GROWTH_LIMIT = 2.0  # peek(256 KiB) / peek(1 KiB): anything near 1 is O(1)


def _rrweb_like(size: int) -> bytes:
    """A msgpack array of rrweb-ish events, padded to exactly ``size`` bytes."""
    event = {"type": 3, "data": {"source": 0, "id": 123456, "attributes": {"class": "row item"}}}
    count = max(1, (size - 8) // len(msgpack.packb(event)))
    blob: bytes = msgpack.packb([event] * count)
    while len(blob) > size:
        count -= 1
        blob = msgpack.packb([event] * count)
    return blob + b"\x00" * (size - len(blob))  # opaque to the relay: padding is fine


def _cases() -> dict[str, p.Message]:
    return {
        "click": p.Click(node=12, x=100.5, y=20.0),
        "delta_1k": p.DomDelta(data=_rrweb_like(1024)),
        "keyframe_256k": p.DomKeyframe(data=_rrweb_like(256 * 1024)),
    }


def _calibrate(fn: Callable[[], object], budget: float) -> int:
    """How many calls of ``fn`` take about ``budget`` seconds."""
    number, dt = 1, 0.0
    while number < 1 << 22:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        dt = time.perf_counter() - t0
        if dt >= budget / 8:
            break
        number *= 8
    return max(1, round(number * budget / max(dt, 1e-9)))


def _time_all(fns: dict[str, Callable[[], object]], *, repeat: int, budget: float) -> dict[str, float]:
    """Seconds per call of each function: best of ``repeat`` rounds.

    Rounds interleave the functions, so a slow patch of the machine (another
    process, a frequency change) hits every figure alike, not one of them.
    """
    numbers = {key: _calibrate(fn, budget) for key, fn in fns.items()}
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for key, fn in fns.items():
            number = numbers[key]
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            best[key] = min(best[key], (time.perf_counter() - t0) / number)
    return best


def _figure(seconds: float) -> dict[str, float]:
    return {"ops_per_s": round(1.0 / seconds, 1), "us_per_op": round(seconds * 1e6, 4)}


def run(quick: bool = False) -> dict[str, Any]:
    """Time every case; return JSON-able figures."""
    repeat, budget = (5, 0.01) if quick else (15, 0.025)
    fns: dict[str, Callable[[], object]] = {}
    info: dict[str, tuple[str, int]] = {}
    payload = b""
    for name, msg in _cases().items():
        frame = p.encode(msg, epoch=7, seq=1)
        assert p.decode(frame) == msg and p.peek(frame).kind is msg.KIND
        info[name] = (msg.KIND.name, len(frame))
        fns[f"{name}.encode"] = partial(p.encode, msg, epoch=7, seq=1)
        fns[f"{name}.decode"] = partial(p.decode, frame)
        fns[f"{name}.peek"] = partial(p.peek, frame)
        payload = frame[p.HEADER_SIZE :]  # the keyframe's, last
    fns["unpackb"] = lambda: msgpack.unpackb(payload)
    t = _time_all(fns, repeat=repeat, budget=budget)

    cases = {
        name: {
            "kind": kind,
            "frame_bytes": size,
            **{op: _figure(t[f"{name}.{op}"]) for op in ("encode", "decode", "peek")},
        }
        for name, (kind, size) in info.items()
    }
    ratio = t["keyframe_256k.decode"] / t["unpackb"]
    growth = t["keyframe_256k.peek"] / t["delta_1k.peek"]
    return {
        "quick": quick,
        "python": platform.python_version(),
        "msgpack": ".".join(map(str, msgpack.version)),
        "cases": cases,
        "unpackb_keyframe_256k": {"payload_bytes": len(payload), **_figure(t["unpackb"])},
        "peek_1k_us": round(t["delta_1k.peek"] * 1e6, 4),
        "peek_256k_us": round(t["keyframe_256k.peek"] * 1e6, 4),
        "peek_256k_over_1k": round(growth, 3),
        "decode_over_unpackb_256k": round(ratio, 3),
        "decode_over_unpackb_target": DECODE_VS_UNPACKB_TARGET,
        "ok": ratio <= DECODE_VS_UNPACKB_TARGET and growth <= PEEK_GROWTH_LIMIT,
    }


def format_table(res: dict[str, Any]) -> str:
    lines = [
        f"codec micro-benchmark (python {res['python']}, msgpack {res['msgpack']}"
        f"{', quick' if res['quick'] else ''}; best of N, time.perf_counter)",
        "",
        f"{'case':<15} {'kind':<13} {'bytes':>8}  {'op':<7} {'ops/s':>13} {'µs/op':>10}",
        "-" * 72,
    ]
    for name, case in res["cases"].items():
        for op in ("encode", "decode", "peek"):
            fig = case[op]
            lines.append(
                f"{name:<15} {case['kind']:<13} {case['frame_bytes']:>8}  {op:<7} "
                f"{fig['ops_per_s']:>13,.0f} {fig['us_per_op']:>10.3f}"
            )
    u = res["unpackb_keyframe_256k"]
    lines.append(
        f"{'msgpack.unpackb':<15} {'(payload)':<13} {u['payload_bytes']:>8}  {'unpackb':<7} "
        f"{u['ops_per_s']:>13,.0f} {u['us_per_op']:>10.3f}"
    )
    lines += [
        "",
        f"peek 1 KiB: {res['peek_1k_us']:.3f} µs   peek 256 KiB: {res['peek_256k_us']:.3f} µs   "
        f"ratio {res['peek_256k_over_1k']:.2f} (must not grow with size)",
        f"decode(256 KiB) / unpackb(256 KiB) = {res['decode_over_unpackb_256k']:.2f}x "
        f"(target ≤ {res['decode_over_unpackb_target']:.0f}x)   {'OK' if res['ok'] else 'OVER TARGET'}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.codec", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing loops")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    res = run(quick=args.quick)
    print(json.dumps(res, indent=1) if args.json else format_table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
