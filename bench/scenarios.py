"""The seven scenarios of issue #5, a reconnect storm, a flood and a cluster: jobs for the load
generator, medians, rows.

Each scenario returns ``{"title", "rows", "runs", "notes"}``. A row is one
figure for every target side by side (see :func:`row`), with the relay's
ratio to each baseline and, where the issue sets one, its target and
whether it was met. Runs of different targets are interleaved round by
round, so a slow minute on this shared machine hits all of them alike.
"""

from __future__ import annotations

import contextlib
import json
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.proc import child_setup, nofile_hard, pin_prefix, rss_bytes
from bench.targets import BASELINES, ORIGIN, REPO, SECRET, TARGETS, Target, start_node, start_redis, start_target

__all__ = ["Ctx", "SCENARIOS", "QUICK", "ALL", "row", "run_loadgen"]

KiB = 1024


@dataclass
class Ctx:
    quick: bool
    server_core: int | None
    loadgen_core: int | None
    log_dir: Path
    only: tuple[str, ...] = TARGETS
    # scenario 5 compares with the websockets baseline; picows too when asked by name (time)
    idle_targets: tuple[str, ...] = ("relay", "websockets")
    t_end: float = float("inf")  # monotonic time the whole command should be done by
    targets: dict[str, Target] = field(default_factory=dict)

    def start(self) -> None:
        for name in self.only:
            if name not in self.targets or not self.targets[name].ok:
                t = start_target(name, self.server_core, self.log_dir)
                self.targets[name] = t
                if t.error:
                    say(f"  ! {name} did not start: {t.error}")

    def stop(self) -> None:
        for t in self.targets.values():
            t.stop()
        self.targets.clear()

    def live(self) -> list[Target]:
        if not self.targets:  # started lazily; scenario 5 stops them
            self.start()
        return [self.targets[n] for n in self.only if n in self.targets and self.targets[n].ok]

    def missing(self) -> dict[str, str]:
        return {n: t.error or "not running" for n, t in self.targets.items() if not t.ok}


def say(*a: object, end: str = "\n") -> None:
    print(*a, end=end, flush=True)


# --- running the load generator ------------------------------------------------------------
def run_loadgen(
    jobs: list[dict[str, Any]],
    core: int | None,
    timeout: float,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run jobs in one pinned load generator process; bounded by ``timeout`` seconds."""
    proc = subprocess.Popen(
        [*pin_prefix(core), sys.executable, "-m", "bench.loadgen"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(REPO),
        preexec_fn=child_setup,
    )
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    errs: list[str] = []

    def drain_err() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            line = line.rstrip()
            if "WARNING" in line or "failed" in line or "Error" in line or "Traceback" in line:
                errs.append(line)
                say("  " + line)

    t_err = threading.Thread(target=drain_err, daemon=True)
    t_err.start()
    out: list[dict[str, Any]] = []
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps({"jobs": jobs}) + "\n")
        proc.stdin.flush()
        for line in proc.stdout:
            if line.startswith("RESULT "):
                r = json.loads(line[7:])
                out.append(r)
                if on_result is not None:
                    on_result(r)
        proc.wait(10)
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        t_err.join(2)
    if len(out) < len(jobs):
        say(f"  ! load generator returned {len(out)}/{len(jobs)} results (timeout {timeout:.0f}s or crash)")
    return out


def progress(r: dict[str, Any]) -> None:
    mark = "." if r.get("ok") else "x"
    print(mark, end="", flush=True)


# --- figures --------------------------------------------------------------------------------
def med(xs: Iterable[float | int | None]) -> float | None:
    vals = [float(x) for x in xs if x is not None]
    return round(statistics.median(vals), 2) if vals else None


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def row(
    scenario: str,
    case: str,
    metric: str,
    unit: str,
    values: dict[str, float | None],
    better: str = "lower",
    target: str = "",
    met: bool | None = None,
) -> dict[str, Any]:
    """One figure for every target, with the relay's ratio to each baseline."""
    rel = values.get("relay")
    return {
        "scenario": scenario,
        "case": case,
        "metric": metric,
        "unit": unit,
        "values": values,
        "ratios": {f"relay/{b}": ratio(rel, values.get(b)) for b in BASELINES},
        "better": better,
        "target": target,
        "met": met,
    }


def check(value: float | None, op: str, limit: float) -> bool | None:
    if value is None:
        return None
    return value <= limit if op == "<=" else value >= limit


def group(results: list[dict[str, Any]]) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """Results by their label minus the trailing round number."""
    out: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in results:
        key = tuple(r["label"].split("|")[:-1])
        out.setdefault(key, []).append(r)
    return out


def field_med(rs: list[dict[str, Any]] | None, name: str) -> float | None:
    if not rs:
        return None
    return med(r.get(name) for r in rs if r.get("ok", True))


def lat_med(rs: list[dict[str, Any]] | None, name: str) -> float | None:
    if not rs:
        return None
    return med(r.get("latency", {}).get(name) for r in rs if r.get("ok", True))


def strip_runs(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs as stored in the JSON: CDFs kept only where the chart needs them."""
    out = []
    for r in results:
        r = dict(r)
        if "latency" in r and not r.get("keep_cdf"):
            r["latency"] = {k: v for k, v in r["latency"].items() if k != "cdf_us"}
        out.append(r)
    return out


def base_notes(ctx: Ctx, results: list[dict[str, Any]]) -> list[str]:
    notes = [f"{n}: {e}" for n, e in ctx.missing().items()]
    for r in results:
        if not r.get("ok"):
            notes.append(f"{r['label']}: {r.get('error')}")
        if r.get("warning"):
            notes.append(f"{r['label']}: {r['warning']}")
        if r.get("errors"):
            notes.append(f"{r['label']}: {r['errors'][:3]}")
    return notes[:30]


# --- 1. saturated fan-out ----------------------------------------------------------------------
WINDOW = {1 * KiB: 128, 32 * KiB: 16}  # frames in flight per viewer: saturates, stays under 1 MiB queued


def saturated(ctx: Ctx) -> dict[str, Any]:
    rounds = 3 if ctx.quick else 5
    duration = 1.0 if ctx.quick else 1.5
    sizes = (1 * KiB, 32 * KiB)
    jobs = []
    for rnd in range(rounds):
        for size in sizes:
            for t in ctx.live():
                jobs.append(
                    {
                        **t.spec(),
                        "type": "fanout",
                        "label": f"{t.name}|{size}|{rnd}",
                        "viewers": 4,
                        "frame": size,
                        "window": WINDOW[size],
                        "warmup": 0.4,
                        "duration": duration,
                        "latency": False,
                        "drain": 3,
                    }
                )
    say(f"1. saturated fan-out 1->4, {rounds} rounds x {duration}s ", end="")
    results = run_loadgen(jobs, ctx.loadgen_core, 60 + len(jobs) * (duration + 6), progress)
    say()
    g = group(results)
    rows = []
    for size in sizes:
        case = f"{size // KiB} KiB, 1->4"
        by = {t: g.get((t, str(size))) for t in TARGETS}
        dps = {t: field_med(by[t], "del_per_s") for t in TARGETS}
        us = {t: field_med(by[t], "us_per_del") for t in TARGETS}
        if size == 1 * KiB:
            r_us = ratio(us["relay"], us["websockets"])
            r_dps = ratio(dps["relay"], dps["websockets"])
            rows.append(
                row(
                    "1 saturated",
                    case,
                    "deliveries/s",
                    "/s",
                    dps,
                    "higher",
                    ">=0.9x ws",
                    check(r_dps, ">=", 0.9),
                )
            )
            rows.append(
                row(
                    "1 saturated",
                    case,
                    "CPU per delivery",
                    "µs",
                    us,
                    "lower",
                    "<=1.11x ws",
                    check(r_us, "<=", 1.11),
                )
            )
            rows.append(
                row(
                    "1 saturated",
                    case,
                    "CPU per delivery (stretch)",
                    "µs",
                    us,
                    "lower",
                    "<=9.8 µs",
                    check(us["relay"], "<=", 9.8),
                )
            )
        else:
            r_dps = ratio(dps["relay"], dps["websockets"])
            rows.append(
                row(
                    "1 saturated",
                    case,
                    "deliveries/s",
                    "/s",
                    dps,
                    "higher",
                    ">=1.0x ws",
                    check(r_dps, ">=", 1.0),
                )
            )
            rows.append(row("1 saturated", case, "CPU per delivery", "µs", us, "lower"))
        rows.append(
            row(
                "1 saturated",
                case,
                "  user part",
                "µs",
                {t: field_med(by[t], "us_per_del_user") for t in TARGETS},
            )
        )
        rows.append(
            row(
                "1 saturated",
                case,
                "  sys part",
                "µs",
                {t: field_med(by[t], "us_per_del_sys") for t in TARGETS},
            )
        )
        rows.append(
            row(
                "1 saturated",
                case,
                "server CPU",
                "%",
                {t: field_med(by[t], "server_cpu_pct") for t in TARGETS},
                "info",
            )
        )
        rows.append(
            row(
                "1 saturated",
                case,
                "loadgen CPU (max)",
                "%",
                {t: _max(by[t], "loadgen_cpu_pct") for t in TARGETS},
                "info",
            )
        )
        lost = {t: _loss(by[t]) for t in TARGETS}
        rows.append(row("1 saturated", case, "lost frames", "", lost, "lower", "0", check(lost["relay"], "<=", 0)))
    return {
        "title": "1. Saturated fan-out 1 -> 4",
        "rows": rows,
        "runs": strip_runs(results),
        "notes": base_notes(ctx, results),
    }


def _loss(rs: list[dict[str, Any]] | None) -> float | None:
    """Frames never delivered: sequence gaps, frames skipped by a resync, and
    frames still missing when the drain after the run gave up."""
    a, b = _sum(rs, "lost"), _sum(rs, "undelivered")
    return None if a is None else a + (b or 0)


def _mib(v: float | None) -> float | None:
    return None if v is None else round(v / 2**20, 1)


def _max(rs: list[dict[str, Any]] | None, name: str) -> float | None:
    vals = [float(r[name]) for r in rs or [] if r.get("ok", True) and r.get(name) is not None]
    return max(vals) if vals else None


def _sum(rs: list[dict[str, Any]] | None, name: str) -> float | None:
    vals = [float(r[name]) for r in rs or [] if r.get("ok", True) and r.get(name) is not None]
    return sum(vals) if vals else None


# --- 2. paced latency ----------------------------------------------------------------------------
def paced(ctx: Ctx) -> dict[str, Any]:
    """p50/p99 latency at 60 and 1000 frames/s, and what the relay adds to a direct hop.

    Every run also sends each frame, at the same instant and with the same
    stamp, over a direct websocket to a sink process on the server core. The
    relay-added latency is per frame: a viewer's latency minus the direct
    hop's for the same frame, so noise both paths share cancels out.
    """
    rounds = 2 if ctx.quick else 3
    rates = {60: 2.0 if ctx.quick else 3.0, 1000: 1.0 if ctx.quick else 2.0}
    jobs = []
    for rnd in range(rounds):
        for rate, duration in rates.items():
            for t in ctx.live():
                jobs.append(
                    {
                        **t.spec(),
                        "type": "fanout",
                        "label": f"{t.name}|{rate}|{rnd}",
                        "viewers": 4,
                        "rate": rate,
                        "frame": KiB,
                        "duration": duration,
                        "warmup": 0.2 if ctx.quick else 0.3,
                        "direct": True,
                        "sink_core": ctx.server_core,
                        "drain": 3,
                    }
                )
    say(f"2. paced latency 60 and 1000 frames/s, 1->4 + direct hop, {rounds} rounds ", end="")
    budget = 60 + len(jobs) * 6 + rounds * len(ctx.live()) * sum(rates.values())
    results = run_loadgen(jobs, ctx.loadgen_core, budget, progress)
    say()
    g = group(results)
    rows = []
    cdfs: dict[str, dict[str, list[float]]] = {}
    for rate in rates:
        case = f"{rate} frames/s, 1 KiB, 1->4"
        by = {t: g.get((t, str(rate))) for t in TARGETS}
        directs = [r["direct"] for t in TARGETS for r in by[t] or [] if r.get("ok") and r.get("direct")]
        p50: dict[str, float | None] = {t: lat_med(by[t], "p50_us") for t in TARGETS}
        p99: dict[str, float | None] = {t: lat_med(by[t], "p99_us") for t in TARGETS}
        p50["direct"] = lat_med(directs, "p50_us")
        p99["direct"] = lat_med(directs, "p99_us")
        added = {t: med(r.get("added", {}).get("p50_us") for r in by[t] or [] if r.get("ok")) for t in TARGETS}
        added99 = {t: med(r.get("added", {}).get("p99_us") for r in by[t] or [] if r.get("ok")) for t in TARGETS}
        limit = 250.0 if rate == 60 else 100.0
        rows.append(row("2 paced", case, "p50 latency", "µs", p50))
        rows.append(row("2 paced", case, "p99 latency", "µs", p99))
        rows.append(
            row(
                "2 paced",
                case,
                "added p50 vs direct hop",
                "µs",
                added,
                "lower",
                f"<={limit:.0f} µs",
                check(added["relay"], "<=", limit),
            )
        )
        rows.append(row("2 paced", case, "added p99 vs direct hop", "µs", added99))
        lost = {t: _loss(by[t]) for t in TARGETS}
        lost["direct"] = _sum(directs, "lost")
        rows.append(row("2 paced", case, "lost frames", "", lost, "lower", "0", check(lost["relay"], "<=", 0)))
        rows.append(row("2 paced", case, "dup frames", "", {t: _sum(by[t], "dup") for t in TARGETS}, "lower"))
        cpu = {t: field_med(by[t], "server_cpu_pct") for t in TARGETS}
        rows.append(row("2 paced", case, "server CPU", "%", cpu, "info"))
        first = {t: _median_run(by[t]) for t in TARGETS}
        cdfs[str(rate)] = {t: first[t].get("latency", {}).get("cdf_us", []) for t in TARGETS}
        cdfs[str(rate)]["direct"] = first["relay"].get("direct", {}).get("latency", {}).get("cdf_us", [])
    runs = strip_runs(results)
    for r in runs:
        if "direct" in r:
            r["direct"] = {**r["direct"], "latency": {k: v for k, v in r["direct"]["latency"].items() if k != "cdf_us"}}
    return {
        "title": "2. Paced latency",
        "rows": rows,
        "runs": runs,
        "cdf_us": cdfs,
        "notes": base_notes(ctx, results),
    }


def _median_run(rs: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The run whose p50 is the median: its CDF is the one charted."""
    ok = sorted((r for r in rs or [] if r.get("ok")), key=lambda r: r.get("latency", {}).get("p50_us") or 0.0)
    return ok[len(ok) // 2] if ok else {}


# --- 3. fan-out scaling ---------------------------------------------------------------------------
def fanout(ctx: Ctx) -> dict[str, Any]:
    rounds = 2
    duration = 1.0 if ctx.quick else 1.2
    counts = (1, 4, 16, 64)
    jobs = []
    for rnd in range(rounds):
        for n in counts:
            for t in ctx.live():
                jobs.append(
                    {
                        **t.spec(),
                        "type": "fanout",
                        "label": f"{t.name}|{n}|{rnd}",
                        "viewers": n,
                        "frame": KiB,
                        "window": max(16, 512 // n),
                        "warmup": 0.4,
                        "duration": duration,
                        "latency": False,
                        "drain": 3,
                    }
                )
    say(f"3. fan-out scaling 1/4/16/64 viewers, 1 KiB, {rounds} rounds ", end="")
    results = run_loadgen(jobs, ctx.loadgen_core, 60 + len(jobs) * (duration + 6), progress)
    say()
    g = group(results)
    rows = []
    for n in counts:
        by = {t: g.get((t, str(n))) for t in TARGETS}
        case = f"1->{n}, 1 KiB"
        rows.append(
            row(
                "3 fan-out",
                case,
                "deliveries/s",
                "/s",
                {t: field_med(by[t], "del_per_s") for t in TARGETS},
                "higher",
            )
        )
        rows.append(
            row(
                "3 fan-out",
                case,
                "CPU per delivery",
                "µs",
                {t: field_med(by[t], "us_per_del") for t in TARGETS},
            )
        )
        lost = {t: _loss(by[t]) for t in TARGETS}
        rows.append(row("3 fan-out", case, "lost frames", "", lost, "lower", "0", check(lost["relay"], "<=", 0)))
    return {
        "title": "3. Fan-out scaling",
        "rows": rows,
        "runs": strip_runs(results),
        "notes": base_notes(ctx, results),
    }


# --- 4. many sessions ----------------------------------------------------------------------------
def sessions(ctx: Ctx) -> dict[str, Any]:
    n_sessions = 400
    rate = 60
    duration = 2.0 if ctx.quick else 4.0
    jobs = [
        {
            **t.spec(),
            "type": "fanout",
            "label": f"{t.name}|400|0",
            "sessions": n_sessions,
            "viewers": 4,
            "rate": rate,
            "frame": KiB,
            "warmup": 1.0,
            "duration": duration,
            "concurrency": 32,
            "timeout": 30,
            "drain": 5,
            "budget": 150,
        }
        for t in ctx.live()
    ]
    say(f"4. {n_sessions} sessions of 1+4 at {rate} frames/s, 1 KiB ", end="")
    results = run_loadgen(jobs, ctx.loadgen_core, 60 + len(jobs) * 120, progress)
    say()
    g = group(results)
    by = {t: g.get((t, "400")) for t in TARGETS}
    case = f"{n_sessions}x(1+4) @{rate}/s"
    offered = n_sessions * 4 * rate
    rows = [
        row(
            "4 sessions",
            case,
            "deliveries/s",
            "/s",
            {t: field_med(by[t], "del_per_s") for t in TARGETS},
            "higher",
            f"{offered} offered",
        ),
        row("4 sessions", case, "server CPU", "%", {t: field_med(by[t], "server_cpu_pct") for t in TARGETS}),
        row("4 sessions", case, "CPU per delivery", "µs", {t: field_med(by[t], "us_per_del") for t in TARGETS}),
        row("4 sessions", case, "p50 latency", "µs", {t: lat_med(by[t], "p50_us") for t in TARGETS}),
        row("4 sessions", case, "p99 latency", "µs", {t: lat_med(by[t], "p99_us") for t in TARGETS}),
        row("4 sessions", case, "lost frames", "", {t: _loss(by[t]) for t in TARGETS}, "lower", "0"),
        row("4 sessions", case, "viewer resyncs", "", {t: _sum(by[t], "resyncs") for t in TARGETS}, "info"),
        row("4 sessions", case, "setup (2000 sockets)", "s", {t: field_med(by[t], "setup_s") for t in TARGETS}),
        row(
            "4 sessions",
            case,
            "loadgen CPU",
            "%",
            {t: field_med(by[t], "loadgen_cpu_pct") for t in TARGETS},
            "info",
        ),
    ]
    lost = rows[5]["values"].get("relay")
    rows[5]["met"] = check(lost, "<=", 0)
    return {
        "title": "4. Many sessions",
        "rows": rows,
        "runs": strip_runs(results),
        "notes": base_notes(ctx, results),
    }


# --- 5. idle sockets ---------------------------------------------------------------------------
def idle(ctx: Ctx) -> dict[str, Any]:
    """20,000 sockets in sessions of 5: RSS per connection and handshakes/s.

    Each target is started fresh (RSS deltas on a process that already served
    heavy load would reuse freed memory), warmed with 50 sockets, then two
    load generator processes (file limits are per process) open half each.
    """
    hard = nofile_hard()
    want = 20_000
    # the server holds every socket plus a few dozen fds of its own
    n = min(want, (hard - 64) // 5 * 5)
    rows_vals: dict[str, dict[str, float | None]] = {}
    runs: list[dict[str, Any]] = []
    notes: list[str] = []
    if n < want:
        notes.append(
            f"RLIMIT_NOFILE hard limit here is {hard} per process and cannot be raised (no CAP_SYS_RESOURCE): "
            f"{n} sockets is the most one server process can hold, not {want}"
        )
    ctx.stop()
    for name in [n for n in ctx.only if n in ctx.idle_targets]:
        t = start_target(name, ctx.server_core, ctx.log_dir)
        if t.error:
            notes.append(f"{name}: {t.error}")
            continue
        try:
            say(f"5. idle sockets: {name}, {n} connections ", end="")
            left = [x for x in ctx.only if x in ctx.idle_targets]
            per = (ctx.t_end - time.monotonic()) / max(1, len(left) - left.index(name)) - 25
            r = _idle_one(ctx, t, n, max(20.0, min(150.0 if len(left) > 2 else 90.0, per)))
            say(f" {r.get('connections')} up, {r.get('rss_per_conn_kib')} KiB/conn, {r.get('handshakes_per_s')}/s")
            runs.append({"target": name, **r})
            if r.get("stopped_at_deadline"):
                notes.append(
                    f"{name}: connect phase stopped at its time budget with {r.get('connections')} sockets "
                    "(handshakes too slow to open all in time on this machine)"
                )
            rows_vals[name] = r
        finally:
            t.stop()

    def v(key: str) -> dict[str, float | None]:
        return {t: rows_vals.get(t, {}).get(key) for t in TARGETS}

    case = f"{n} sockets, sessions of 5"
    rss = v("rss_per_conn_kib")
    hs = v("handshakes_per_s")
    conns = v("connections")
    rows = [
        row(
            "5 idle",
            case,
            "connections held",
            "",
            conns,
            "higher",
            f">={want}",
            check(conns["relay"], ">=", want),
        ),
        row(
            "5 idle",
            case,
            "RSS per connection",
            "KiB",
            rss,
            "lower",
            "<=18.5 KiB",
            check(rss["relay"], "<=", 18.5),
        ),
        row(
            "5 idle",
            case,
            "RSS per connection (aim)",
            "KiB",
            rss,
            "lower",
            "<=12.5 KiB",
            check(rss["relay"], "<=", 12.5),
        ),
        row(
            "5 idle",
            case,
            "handshakes/s",
            "/s",
            hs,
            "higher",
            ">=1.0x ws",
            check(ratio(hs["relay"], hs["websockets"]), ">=", 1.0),
        ),
        row("5 idle", case, "server CPU per handshake", "µs", v("server_us_per_handshake")),
        row("5 idle", case, "failed connects", "", v("failures")),
    ]
    return {"title": "5. Idle sockets", "rows": rows, "runs": runs, "notes": notes}


def _idle_one(ctx: Ctx, t: Target, n: int, deadline: float) -> dict[str, Any]:
    spec = t.spec()
    assert t.server is not None
    pid = t.server.pid
    warm = run_loadgen(
        [{**spec, "type": "idle", "label": "warm|0", "count": 50, "hold": 0.2, "run_id": "warm"}],
        ctx.loadgen_core,
        60,
    )
    time.sleep(0.5)
    rss0 = rss_bytes(pid)
    halves = [n // 10 * 5, n - n // 10 * 5]
    procs = []
    for i, count in enumerate(halves):
        job = {
            **spec,
            "type": "idle",
            "label": f"idle{i}|0",
            "count": count,
            "group": 5,
            "concurrency": 48,
            "barrier": True,
            "run_id": f"idle{i}",
            "timeout": 30,
            "budget": 150,
            "hold_max": 120,
            "connect_deadline": deadline,
        }
        p = subprocess.Popen(
            [*pin_prefix(ctx.loadgen_core), sys.executable, "-m", "bench.loadgen"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=str(REPO),
            preexec_fn=child_setup,
        )
        assert p.stdin is not None
        p.stdin.write(json.dumps({"jobs": [job]}) + "\n")
        p.stdin.flush()
        procs.append(p)
    killers = [threading.Timer(200, p.kill) for p in procs]
    for k in killers:
        k.start()
    connected: list[dict[str, Any]] = []
    finals: list[dict[str, Any]] = []
    try:
        for p in procs:
            assert p.stdout is not None
            for line in p.stdout:
                if line.startswith("EVENT connected "):
                    connected.append(json.loads(line[len("EVENT connected ") :]))
                    break
                if line.startswith("RESULT "):  # failed before the barrier
                    finals.append(json.loads(line[7:]))
                    break
            print(".", end="", flush=True)
        time.sleep(1.0)
        rss1 = rss_bytes(pid)
        for p in procs:
            assert p.stdin is not None
            try:
                p.stdin.write("\n")
                p.stdin.flush()
            except OSError:
                pass
        for p in procs:
            assert p.stdout is not None
            for line in p.stdout:
                if line.startswith("RESULT "):
                    finals.append(json.loads(line[7:]))
            p.wait(30)
    finally:
        for k in killers:
            k.cancel()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    conns = sum(c.get("connections", 0) for c in connected)
    elapsed = max((c.get("connect_s", 0.0) for c in connected), default=0.0)
    cpu = sum(c.get("server_cpu_s", 0.0) for c in connected)
    out: dict[str, Any] = {
        "connections": conns,
        "failures": sum(c.get("failures", 0) for c in connected) + sum(1 for f in finals if not f.get("ok")),
        "failure_samples": [s for c in connected for s in c.get("failure_samples", [])][:5]
        + [f.get("error") for f in finals if not f.get("ok")][:3],
        "connect_s": elapsed,
        "handshakes_per_s": round(conns / elapsed, 1) if elapsed else None,
        "rss_before": rss0,
        "rss_after": rss1,
        "rss_per_conn_kib": round((rss1 - rss0) / conns / 1024, 2) if conns else None,
        # both generators overlap in time: CPU is summed, so this is per handshake
        "server_us_per_handshake": round(1e6 * cpu / conns / 2, 1) if conns else None,
        "loadgen_cpu_pct": [c.get("loadgen_cpu_pct") for c in connected],
        "alive_at_end": sum(f.get("alive_at_end", 0) for f in finals),
        "stopped_at_deadline": sum(c.get("sessions_skipped_at_deadline", 0) for c in connected) > 0,
        "warm_ok": bool(warm and warm[0].get("ok")),
    }
    return out


# --- 6. slow viewer --------------------------------------------------------------------------
def slow(ctx: Ctx) -> dict[str, Any]:
    duration = 3.0 if ctx.quick else 4.0
    rounds = 1 if ctx.quick else 2
    frame = 4 * KiB
    rate = 1000
    jobs = []
    for rnd, variant in ((r, v) for r in range(rounds) for v in ("without", "with")):
        for t in ctx.live():
            jobs.append(
                {
                    **t.spec(),
                    "type": "fanout",
                    "label": f"{t.name}|{variant}|{rnd}",
                    "viewers": 4,
                    "slow": 1 if variant == "with" else 0,
                    "rate": rate,
                    "frame": frame,
                    "keyframe": 32 * KiB,
                    "keyframe_every": 1.0,
                    "warmup": 0.5,
                    "duration": duration,
                    "drain": 3,
                }
            )
    say(
        f"6. slow viewer: 1->4 (+1 that stops reading), {rate}/s of {frame // KiB} KiB, {duration}s, {rounds} rounds ",
        end="",
    )
    results = run_loadgen(jobs, ctx.loadgen_core, 60 + len(jobs) * (duration + 12), progress)
    say()
    g = group(results)
    rows = []
    p99 = {v: {t: lat_med(g.get((t, v)), "p99_us") for t in TARGETS} for v in ("without", "with")}
    dps = {v: {t: field_med(g.get((t, v)), "del_per_s") for t in TARGETS} for v in ("without", "with")}
    case = f"1->4 @{rate}/s {frame // KiB} KiB"
    rows.append(row("6 slow viewer", case, "others' p99 without slow", "µs", p99["without"]))
    rows.append(row("6 slow viewer", case, "others' p99 with slow", "µs", p99["with"]))
    grow = {t: ratio(p99["with"][t], p99["without"][t]) for t in TARGETS}
    rows.append(
        row(
            "6 slow viewer",
            case,
            "p99 with/without",
            "x",
            grow,
            "lower",
            "<=1.2x",
            check(grow["relay"], "<=", 1.2),
        )
    )
    rows.append(row("6 slow viewer", case, "others' deliveries/s without", "/s", dps["without"], "higher"))
    rows.append(row("6 slow viewer", case, "others' deliveries/s with", "/s", dps["with"], "higher"))
    lost = {t: _loss(g.get((t, "with"))) for t in TARGETS}
    rows.append(
        row(
            "6 slow viewer",
            case,
            "others' lost frames",
            "",
            lost,
            "lower",
            "0",
            check(lost["relay"], "<=", 0),
        )
    )
    outcome: dict[str, Any] = {}
    for name in TARGETS:
        rs = g.get((name, "with"))
        if rs and rs[0].get("ok") and rs[0].get("slow"):
            outcome[name] = rs[0]["slow"][0]
    notes = base_notes(ctx, results)
    for name, o in outcome.items():
        notes.append(
            f"slow viewer on {name}: {o.get('outcome')}; skipped {o.get('skipped_by_resync')} frames by resync, "
            f"{o.get('behind_at_end')} behind 2 s after it resumed"
        )
    ok = outcome.get("relay", {}).get("outcome", "")
    for variant in ("with", "without"):
        mib = {t: _mib(field_med(g.get((t, variant)), "server_rss_growth")) for t in TARGETS}
        rows.append(row("6 slow viewer", case, f"server RSS growth {variant} slow", "MiB", mib, "lower"))
    rows.append(
        {
            **row(
                "6 slow viewer",
                case,
                "slow viewer resynced or closed",
                "",
                {t: None for t in TARGETS},
                "info",
                "yes",
            ),
            "text": {t: o.get("outcome") for t, o in outcome.items()},
            "met": (ok.startswith("closed") or ok.startswith("resynced")) if ok else None,
        }
    )
    return {
        "title": "6. Slow viewer",
        "rows": rows,
        "runs": strip_runs(results),
        "slow": outcome,
        "notes": notes,
    }


# --- 7. keyframe join ---------------------------------------------------------------------------
def join(ctx: Ctx) -> dict[str, Any]:
    repeats = 3 if ctx.quick else 5
    jobs = [
        {
            **t.spec(),
            "type": "join",
            "label": f"{t.name}|join|0",
            "keyframe": 1 << 20,
            "deltas": 500,
            "frame": KiB,
            "repeats": repeats,
            "timeout": 20,
        }
        for t in ctx.live()
    ]
    say(f"7. keyframe join: 1 MiB keyframe + 500 deltas of 1 KiB, {repeats} joins ", end="")
    results = run_loadgen(jobs, ctx.loadgen_core, 60 + len(jobs) * 60, progress)
    say()
    g = group(results)
    by = {t: g.get((t, "join")) for t in TARGETS}
    case = "1 MiB + 500 x 1 KiB"
    rows = [
        row(
            "7 keyframe join",
            case,
            "time to caught-up",
            "ms",
            {t: field_med(by[t], "median_ms") for t in TARGETS},
        ),
        row(
            "7 keyframe join",
            case,
            "time to WELCOME/connect",
            "ms",
            {t: field_med(by[t], "connect_ms_median") for t in TARGETS},
        ),
    ]
    notes = base_notes(ctx, results)
    notes.append(
        "baselines keep no log: their figure is the visitor resending keyframe + deltas once the viewer is connected"
    )
    return {"title": "7. Keyframe join", "rows": rows, "runs": strip_runs(results), "notes": notes}


# --- 8. reconnect storm --------------------------------------------------------------------------
STORM_PER_ADDR = 25  # visitors per loopback source address
STORM_JITTER = 0.5  # s: each visitor reconnects at drop + U(0, jitter)


def _limited_targets(ctx: Ctx, tag: str) -> tuple[list[Target], list[Target], list[str]]:
    """A fresh relay with every limit at its default (for this scenario only) and the
    shared baselines: (all, to stop afterwards, notes)."""
    out: list[Target] = []
    own: list[Target] = []
    notes: list[str] = []
    if "relay" in ctx.only:
        t = start_target("relay", ctx.server_core, ctx.log_dir, limits=True)
        if t.error:
            notes.append(f"relay ({tag}, limits at defaults): {t.error}")
        else:
            out.append(t)
            own.append(t)
    out.extend(t for t in ctx.live() if t.name != "relay")
    return out, own, notes


def storm(ctx: Ctx) -> dict[str, Any]:
    """Every visitor dropped at once, every one reconnecting at once: time until all are back.

    N visitors (25 per loopback source address) admitted, then every TCP
    connection aborted (RST) at once; each reconnects with its client id after a
    random 0-500 ms jitter (retrying with backoff if refused) and the figure is
    the time from the drop until the last one is admitted again (WELCOME; the
    baselines: upgrade + first message + a websocket PING answered), with the
    server's CPU over that time. The relay runs fresh, with its limits at their
    defaults. Each population storms ``storms`` times; figures are medians.
    """
    want = 300 if ctx.quick else 5000
    # one process (server, generator) holds them all, plus its own few dozen fds
    n = min(want, (nofile_hard() - 200) // STORM_PER_ADDR * STORM_PER_ADDR)
    storms = 1 if ctx.quick else 2
    targets, own, notes = _limited_targets(ctx, "storm")
    if n < want:
        notes.append(f"RLIMIT_NOFILE hard limit {nofile_hard()}: {n} visitors, not {want}")
    jobs = [
        {
            **t.spec(),
            "type": "storm",
            "label": f"{t.name}|storm|0",
            "count": n,
            "per_addr": STORM_PER_ADDR,
            "jitter": STORM_JITTER,
            "storms": storms,
            "settle_pids": [x.server.pid for x in targets if x.server is not None],
            "concurrency": 128,
            "connect_budget": 90,
            "storm_budget": 60,
            "settle": 1.0,  # then until every server is idle (at most 15 s)
            "budget": 100 + storms * 95,
        }
        for t in targets
    ]
    say(f"8. reconnect storm: {n} visitors, {STORM_PER_ADDR}/address, {storms} storm(s) each ", end="")
    try:
        results = run_loadgen(jobs, ctx.loadgen_core, 60 + len(jobs) * (110 + storms * 95), progress)
    finally:
        for t in own:
            t.stop()
    say()
    by = {r["label"].split("|")[0]: r for r in results if r.get("ok")}

    def sm(key: str, sub: str | None = None) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for t in TARGETS:
            ss = by.get(t, {}).get("storms", [])
            out[t] = med((s.get(key) or {}).get(sub) if sub else s.get(key) for s in ss) if ss else None
        return out

    case = f"{n} visitors, {STORM_PER_ADDR}/address, jitter 0-{STORM_JITTER * 1000:.0f} ms"
    back = {
        t: (min(s.get("admitted", 0) for s in by[t]["storms"]) if by.get(t, {}).get("storms") else None)
        for t in TARGETS
    }
    rows = [
        row(
            "8 storm",
            case,
            "re-admitted (fewest of the storms)",
            "",
            back,
            "higher",
            f"{n}",
            check(back["relay"], ">=", n),
        ),
        row("8 storm", case, "storm time (drop -> all admitted)", "s", sm("storm_s")),
        row("8 storm", case, "reconnects/s over the storm", "/s", sm("handshakes_per_s"), "higher"),
        row("8 storm", case, "p50 admitted after drop", "ms", sm("admitted_after_drop_ms", "p50")),
        row("8 storm", case, "p99 admitted after drop", "ms", sm("admitted_after_drop_ms", "p99")),
        row("8 storm", case, "client wait p50 (own start -> admitted)", "ms", sm("client_wait_ms", "p50")),
        row("8 storm", case, "client wait p99", "ms", sm("client_wait_ms", "p99")),
        row("8 storm", case, "server CPU during storm", "s", sm("server_cpu_s")),
        row("8 storm", case, "server CPU per reconnect", "µs", sm("server_us_per_reconnect")),
        row("8 storm", case, "retried attempts", "", sm("retries"), "lower"),
        row(
            "8 storm",
            case,
            "initial connect (not measured)",
            "s",
            {t: by.get(t, {}).get("connect_s") for t in TARGETS},
            "info",
        ),
        row("8 storm", case, "loadgen CPU during storm", "%", sm("loadgen_cpu_pct"), "info"),
    ]
    notes += base_notes(ctx, results)
    notes.append(
        f"every reconnect starts at drop + U(0, {STORM_JITTER * 1000:.0f} ms) (seeded), so the storm time is at "
        f"least ~{STORM_JITTER:.1f} s. Clients act like relay/web/src/sdk.js: no client-side timeout on an attempt "
        "(a browser WebSocket has none), a failed or closed attempt retried after 0.5 s doubling to 15 s "
        "(the second half of each step jittered)"
    )
    notes.append(
        "relay: started fresh for this scenario with every limit at its default (MAX_SOCKETS_PER_IP, "
        "NEW_VISITORS_PER_IP, RATE_*, HANDSHAKE_TIMEOUT...), ALLOWED_ORIGINS=" + ORIGIN + "; admitted = WELCOME, "
        "then PRESENCE sent as the SDK does. Baselines: admitted = upgrade + first message (the HELLO bytes) + a "
        "websocket PING answered (they send nothing else), then PRESENCE bytes"
    )
    for t, r in by.items():
        for i, s in enumerate(r.get("storms", [])):
            if (s.get("loadgen_cpu_pct") or 0) >= 75:
                notes.append(
                    f"{t} storm {i + 1}: load generator at {s['loadgen_cpu_pct']}% of its core: the storm time is "
                    "(nearly) the generator's limit; compare server CPU per reconnect"
                )
            if s.get("failures"):
                notes.append(
                    f"{t} storm {i + 1}: failed attempts {s['failures']} e.g. {s.get('failure_samples', [])[:2]}"
                )
            if s.get("storm_s") is None:
                notes.append(f"{t} storm {i + 1}: only {s.get('admitted')}/{n} admitted within the storm budget")
    return {"title": "8. Reconnect storm", "rows": rows, "runs": results, "notes": notes[:30]}


# --- 9. flood -----------------------------------------------------------------------------------
FLOOD_CASES = {
    "ping": "PING flood",
    "presence": "PRESENCE flood",
    "ordered": "60 KiB DOM_DELTA flood",
}


def flood(ctx: Ctx) -> dict[str, Any]:
    """One live session's latency, quiet and while another visitor floods the server.

    Session A: visitor -> 1 viewer, 50 frames/s of 1 KiB, each frame's latency
    recorded: ``quiet`` s alone, then ``flood_s`` s while visitor B (another
    process on the load generator's core at a lower priority, another source
    address) floods as fast as it can and reconnects 20 ms after each close.
    The relay runs fresh with its limits at their defaults: B should be closed
    with 4004 (RATE_LIMITED). One run per kind and target.
    """
    kinds = ("ping", "ordered") if ctx.quick else ("ping", "presence", "ordered")
    quiet = 2.0 if ctx.quick else 6.0
    flood_s = 2.0 if ctx.quick else 6.0
    rate = 100  # 600 frames a phase: p99 is the 6th largest, not the 2nd
    runs = 1 if ctx.quick else 3  # the run with the median p99 ratio is shown
    targets, own, notes = _limited_targets(ctx, "flood")
    jobs = [
        {
            **t.spec(),
            "type": "flood",
            "label": f"{t.name}|{kind}|{run}",
            "flood": kind,
            "rate": rate,
            "frame": KiB,
            "flood_frame": 60 * KiB,
            "quiet": quiet,
            "flood_s": flood_s,
            "warmup": 0.5,
            "flood_core": ctx.loadgen_core,
            # a fresh address per run and kind: an earlier run's cool-down must not pre-empt this flood
            "flood_source": f"127.200.{run}.{kinds.index(kind) + 1}",
            "settle_pids": [x.server.pid for x in targets if x.server is not None],
            "drain": 5,
            "budget": 90,
        }
        for run in range(runs)
        for kind in kinds
        for t in targets
        # the baselines parse nothing: a PRESENCE flood is a PING flood with bigger frames to them
        if kind != "presence" or t.name == "relay"
    ]
    say(f"9. flood: 1->1 at {rate}/s, {quiet:.0f} s quiet then {flood_s:.0f} s flooded ({', '.join(kinds)}) ", end="")
    try:
        results = run_loadgen(jobs, ctx.loadgen_core, 60 + len(jobs) * (quiet + flood_s + 55), progress)
    finally:
        for t in own:
            t.stop()
    say()
    g = group(results)
    rows = []
    for kind in kinds:
        case = FLOOD_CASES[kind]
        by = {t: _median_flood_run(g.get((t, kind))) for t in TARGETS}
        ok = {t: r for t, r in by.items() if r is not None and r.get("ok")}

        def v(*path: str, _ok: dict[str, dict[str, Any]] = ok) -> dict[str, float | None]:
            out: dict[str, float | None] = {}
            for t in TARGETS:
                x: Any = _ok.get(t)
                for p in path:
                    x = x.get(p) if isinstance(x, dict) else None
                out[t] = x
            return out

        p99r = v("p99_ratio")
        rows += [
            row("9 flood", case, "A p50 quiet", "µs", v("quiet", "latency", "p50_us")),
            row("9 flood", case, "A p50 under flood", "µs", v("flood", "latency", "p50_us")),
            row("9 flood", case, "A p99 quiet", "µs", v("quiet", "latency", "p99_us")),
            row("9 flood", case, "A p99 under flood", "µs", v("flood", "latency", "p99_us")),
            row("9 flood", case, "A p99 flood/quiet", "x", p99r, "lower", "<=1.5x", check(p99r["relay"], "<=", 1.5)),
            row("9 flood", case, f"A deliveries/s under flood (of {rate})", "/s", v("flood", "del_per_s"), "higher"),
        ]
        lost = {t: (None if t not in ok else ok[t].get("lost", 0) + ok[t].get("undelivered", 0)) for t in TARGETS}
        rows.append(row("9 flood", case, "A lost frames", "", lost, "lower", "0", check(lost["relay"], "<=", 0)))
        rows += [
            row("9 flood", case, "server CPU quiet", "%", v("quiet", "server_cpu_pct"), "info"),
            row("9 flood", case, "server CPU under flood", "%", v("flood", "server_cpu_pct"), "info"),
            row("9 flood", case, "B sent", "frames/s", v("flooder", "frames_per_s"), "info"),
            row("9 flood", case, "B sent", "MiB/s", v("flooder", "mib_per_s"), "info"),
            row("9 flood", case, "B connections", "", v("flooder", "connects"), "info"),
        ]
        closes = v("flooder", "closed")
        codes = {t: (ok[t].get("flooder") or {}).get("close_codes") for t in ok}
        text = {
            t: (", ".join(f"{c} x{k}" for c, k in sorted(cs.items())) or "never closed")
            for t, cs in codes.items()
            if cs is not None
        }
        rows.append(
            {
                **row("9 flood", case, "B closed by the server", "", closes, "info", "4004"),
                "text": {t: text.get(t, "-") for t in TARGETS},
                "met": (set((codes.get("relay") or {}).keys()) == {"4004"}) if "relay" in ok else None,
            }
        )
        rows.append(row("9 flood", case, "B median socket life", "s", v("flooder", "median_lifetime_s"), "info"))
    notes += base_notes(ctx, results)
    notes.append(
        "A (the measured session) and B (the flooder) run in two processes on the load generator's core; B in "
        "the SCHED_IDLE class (and nice +10): it floods with whatever CPU A leaves, and never delays A's own sends "
        "and receives, so A's latency is the server's under the flood. B uses a source address of its own per "
        "run and kind (127.200.RUN.KIND), A 127.0.0.1. B reconnects 20 ms after every close with the same client "
        "id, as a hostile client would; the ordered variant floods its own live session (one viewer, reading) "
        "with 60 KiB deltas"
    )
    notes.append(
        "relay: started fresh for this scenario with every limit at its default (RATE_CONTROL, RATE_CONTENT, "
        "RATE_BYTES, RATE_BURST, MAX_SOCKETS_PER_IP...); the baselines have no limits, so their B is never closed. "
        f"{runs} run(s) per kind and target, interleaved, the one with the median p99 ratio shown ({quiet:.0f} s "
        f"quiet, {flood_s:.0f} s flooded at {rate}/s: ~{rate * quiet:.0f} frames each, p99 the 6th largest); the "
        "PRESENCE flood runs against the relay only"
    )
    for r in results:
        fl = r.get("flooder") or {}
        if fl.get("close_reasons"):
            notes.append(f"{r['label']}: B's closes (code reason): {fl['close_reasons']}")
        if fl.get("error") or fl.get("errors") or fl.get("connect_errors"):
            notes.append(
                f"{r['label']}: flooder {fl.get('error') or ''} errors {fl.get('errors', [])[:2]} "
                f"connect errors {fl.get('connect_errors')} {fl.get('connect_error_samples', [])[:1]}"
            )
        if r.get("a_closed"):
            notes.append(f"{r['label']}: A itself was closed {r['a_closed']}")
    return {"title": "9. Flood", "rows": rows, "runs": strip_flood(results), "notes": notes[:30]}


def _median_flood_run(rs: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """Of a kind's runs on one target, the one whose A p99 flood/quiet ratio is the median."""
    ok = sorted((r for r in rs or [] if r.get("ok") and r.get("p99_ratio") is not None), key=lambda r: r["p99_ratio"])
    if not ok:
        return next(iter(rs or []), None)
    return ok[len(ok) // 2]


def strip_flood(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in results:
        r = dict(r)
        for ph in ("quiet", "flood"):
            if isinstance(r.get(ph), dict) and "latency" in r[ph]:
                r[ph] = {**r[ph], "latency": {k: x for k, x in r[ph]["latency"].items() if k != "cdf_us"}}
        out.append(r)
    return out


# --- 10. cluster ----------------------------------------------------------------------------------
CLUSTER_SESSIONS = 400
CLUSTER_RATE = 60  # frames/s per session, 1 KiB: 24,000 deliveries/s offered with one viewer each
CLUSTER_TTL = 5.0  # OWNERSHIP_TTL: the relay's default
CLUSTER_JITTER = 0.5  # s: a dropped socket reconnects after U(0, jitter)
# Every session keeps streaming through the failover, at the rate of tests/cluster/test_failover.py's
# visitor (a delta every 50 ms): at the steady rate the survivor alone would be saturated by the
# streams themselves (each node runs near half a core), and the figure would measure that.
CLUSTER_FAILOVER_RATE = 20
LOG_FLAGS = ("error", "traceback", "exception", "warning", "critical")


def _node_log_lines(paths: Iterable[Path], phases: list[list[Any]]) -> dict[str, dict[str, list[str]]]:
    """Lines of the nodes' logs that look like trouble (warnings, errors, tracebacks), per log and
    per phase of the run they fall in (``phases``: [name, wall-clock start] from the generator)."""
    out: dict[str, dict[str, list[str]]] = {}
    for path in paths:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for ln in lines:
            if not any(f in ln.lower() for f in LOG_FLAGS):
                continue
            where = "start"
            with contextlib.suppress(ValueError):  # the relay's text format: "2026-01-02 03:04:05,678 LEVEL ..."
                t = datetime.strptime(ln[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                for name, start in phases:
                    if t >= start:
                        where = name
            out.setdefault(path.stem, {}).setdefault(where, []).append(ln.strip())
    return out


def cluster(ctx: Ctx) -> dict[str, Any]:
    """Two cluster nodes, one per core, against one node on one core; Redis's load; a node killed.

    The same ``n`` sessions (visitor + 1 viewer, ``rate`` frames/s of 1 KiB) are set up on a
    single relay (no REDIS_URL, pinned to the server core) and on two cluster nodes sharing a
    redis-server the bench starts (node1 on the server core, node2 on the generator's core with
    the generator and Redis): visitors enter at node ``i % 2``, viewers at ``(i // 2) % 2`` and
    follow 4003 hints to the owner. The sides stream in turn, ``rounds`` interleaved windows
    each. The machine has two cores and the generator needs a share of one, so neither side is
    driven to saturation: "per core" is deliveries per CPU-second of the relay processes (from
    /proc over the window), what one core would deliver at that cost. Then node2 is SIGKILLed
    while streaming: its sessions' visitors and viewers reconnect after U(0, 0.5 s) to node1, and
    kill-to-watching is the time until each affected viewer receives a keyframe of a new epoch.
    """
    n = CLUSTER_SESSIONS
    rounds = 1 if ctx.quick else 5
    window = 3.0 if ctx.quick else 4.0
    notes: list[str] = []
    try:
        redis = start_redis(ctx.loadgen_core, ctx.log_dir)
    except Exception as e:  # no redis-server here, or it would not start
        say(f"10. cluster: skipped, redis-server did not start ({type(e).__name__}: {e})")
        return {"title": "10. Cluster", "rows": [], "runs": [], "notes": [f"redis-server: {e}"], "columns": ["relay"]}
    started: list[Target] = []
    results: list[dict[str, Any]] = []
    try:
        single = start_node("single", None, ctx.server_core, ctx.log_dir)
        nodes = [
            start_node("node1", redis.url, ctx.server_core, ctx.log_dir, ownership_ttl=CLUSTER_TTL),
            start_node("node2", redis.url, ctx.loadgen_core, ctx.log_dir, ownership_ttl=CLUSTER_TTL),
        ]
        started = [single, *nodes]
        bad = [f"{t.name}: {t.error}" for t in started if t.error]
        if bad:
            notes += bad
        else:

            def node(t: Target) -> dict[str, Any]:
                assert t.server is not None
                return {"name": t.name, "url": t.url, "pid": t.server.pid}

            job = {
                "type": "cluster",
                "label": "cluster|0",
                "mode": "relay",
                "url": nodes[0].url,
                "secret": SECRET,
                "single": node(single),
                "nodes": [node(t) for t in nodes],
                "redis_port": redis.port,
                "redis_pid": redis.pid,
                "sessions": n,
                "rate": CLUSTER_RATE,
                "frame": KiB,
                "warmup": 1.0,
                "window": window,
                "rounds": rounds,
                "kill": 1,
                "failover_rate": CLUSTER_FAILOVER_RATE,
                "jitter": CLUSTER_JITTER,
                "failover_budget": 20,
                "concurrency": 32,
                "timeout": 15,
                "budget": 170,
            }
            say(
                f"10. cluster: {n} sessions (1+1) @{CLUSTER_RATE}/s, 1 node vs 2 nodes + Redis, "
                f"{rounds} round(s) of {window:.0f} s each, then node2 killed ",
                end="",
            )
            results = run_loadgen([job], ctx.loadgen_core, 200, progress)
            say()
    finally:
        for t in started:
            t.stop()
        redis.stop()
    r = results[0] if results and results[0].get("ok") else {}
    logs = (ctx.log_dir / f"{name}.log" for name in ("single", "node1", "node2"))
    trouble = _node_log_lines(logs, r.get("phases", []))
    if results and not results[0].get("ok"):
        notes.append(f"cluster job failed: {results[0].get('error')}")
    return _cluster_report(r, n, rounds, window, notes, trouble)


def _cluster_report(
    r: dict[str, Any], n: int, rounds: int, window: float, notes: list[str], trouble: dict[str, dict[str, list[str]]]
) -> dict[str, Any]:
    ws = r.get("windows", [])
    side = {s: [w for w in ws if w["side"] == s] for s in ("single", "single-half", "cluster")}

    def m(s: str, key: str) -> float | None:
        return med(w.get(key) for w in side[s])

    def pct(s: str, key: str) -> float | None:
        return med(100 * w[key] / w["wall_s"] for w in side[s] if w.get(key) is not None and w["wall_s"])

    def one(v: float | None) -> dict[str, float | None]:
        return {"relay": v}

    sc = "10 cluster"
    case = f"{n} sessions (1+1) @{CLUSTER_RATE}/s, 1 KiB"
    per1, per2 = m("single", "del_per_cpu_s"), m("cluster", "del_per_cpu_s")
    per_half = m("single-half", "del_per_cpu_s")
    grow = ratio(per2, per1)
    rows = [
        row(sc, case, "deliveries/s per core, 1 node", "/CPU-s", one(per1), "higher"),
        row(sc, case, "deliveries/s per core, 2 nodes", "/CPU-s", one(per2), "higher"),
        row(sc, case, "per core, 2 nodes / 1 node", "x", one(grow), "higher", ">=0.9x", check(grow, ">=", 0.9)),
        row(sc, case, f"  1 node, {n // 2} of them streaming", "/CPU-s", one(per_half), "higher"),
        row(sc, case, "  2 nodes / 1 node at a node's load", "x", one(ratio(per2, per_half)), "higher"),
        row(sc, case, "deliveries/s, 1 node", "/s", one(m("single", "del_per_s")), "info"),
        row(sc, case, f"deliveries/s, 1 node, {n // 2} streaming", "/s", one(m("single-half", "del_per_s")), "info"),
        row(sc, case, "deliveries/s, 2 nodes", "/s", one(m("cluster", "del_per_s")), "info"),
        row(sc, case, "relay CPU, 1 node", "%", one(pct("single", "relay_cpu_s")), "info"),
        row(sc, case, f"relay CPU, 1 node, {n // 2} streaming", "%", one(pct("single-half", "relay_cpu_s")), "info"),
        row(sc, case, "relay CPU, 2 nodes (sum)", "%", one(pct("cluster", "relay_cpu_s")), "info"),
    ]
    for name in ("node1", "node2"):
        cpu = med(w["nodes"][name]["cpu_pct"] for w in side["cluster"] if name in w.get("nodes", {}))
        per = med(w["nodes"][name]["del_per_cpu_s"] for w in side["cluster"] if name in w.get("nodes", {}))
        rows.append(row(sc, case, f"  {name} CPU", "%", one(cpu), "info"))
        rows.append(row(sc, case, f"  {name} deliveries per CPU-s", "/CPU-s", one(per), "info"))
    rows += [
        row(sc, case, "Redis CPU", "%", one(pct("cluster", "redis_cpu_s")), "info"),
        row(sc, case, "per CPU-s counting Redis, 2 nodes", "/CPU-s", one(m("cluster", "del_per_cpu_s_with_redis"))),
        row(sc, case, "p50 latency, 1 node", "µs", one(med(w["latency"].get("p50_us") for w in side["single"]))),
        row(sc, case, "p50 latency, 2 nodes", "µs", one(med(w["latency"].get("p50_us") for w in side["cluster"]))),
        row(sc, case, "p99 latency, 1 node", "µs", one(med(w["latency"].get("p99_us") for w in side["single"]))),
        row(sc, case, "p99 latency, 2 nodes", "µs", one(med(w["latency"].get("p99_us") for w in side["cluster"]))),
    ]
    lost = (
        sum(w.get("lost", 0) + w.get("undelivered", 0) for w in ws) + sum(r.get(f"drops_{s}", 0) for s in side)
        if ws
        else None
    )
    rows.append(row(sc, case, "lost frames", "", one(lost), "lower", "0", check(lost, "<=", 0)))
    rows += [
        row(sc, case, "loadgen CPU (max)", "%", one(max((w["loadgen_cpu_pct"] for w in ws), default=None)), "info"),
        row(sc, case, f"setup ({2 * n} sockets), 1 node", "s", one(r.get("setup_single_s")), "info"),
        row(sc, case, f"setup ({2 * n} sockets), 2 nodes", "s", one(r.get("setup_cluster_s")), "info"),
        row(sc, case, "viewers redirected at setup", "", one((r.get("setup_cluster") or {}).get("redirects")), "info"),
    ]
    steady = r.get("redis_steady") or {}
    per_s = steady.get("per_s")
    rcase = f"{n} sessions on 2 nodes, OWNERSHIP_TTL {CLUSTER_TTL:g} s, steady"
    rows += [
        row(sc, rcase, "Redis commands/s per 1,000 sessions", "/s", one(_per_k(per_s, n)), "lower"),
        row(sc, rcase, "Redis commands/s", "/s", one(per_s), "info"),
    ]
    f = r.get("failover") or {}
    if f:
        fcase = (
            f"SIGKILL {f['killed']}: {f['affected']} sessions move, jitter 0-{CLUSTER_JITTER * 1000:.0f} ms, "
            f"@{f.get('rate', 0):g}/s"
        )
        q = f.get("kill_to_watching_ms") or {}
        vb, wb = f.get("visitor_back_ms") or {}, f.get("viewer_back_ms") or {}
        rows += [
            row(
                sc,
                fcase,
                "watching again (new-epoch keyframe)",
                "",
                one(f["watching"]),
                "higher",
                f"{f['affected']}",
                check(f["watching"], ">=", f["affected"]) if f["affected"] else None,
            ),
            row(sc, fcase, "kill-to-watching p50", "ms", one(q.get("p50"))),
            row(sc, fcase, "kill-to-watching p99", "ms", one(q.get("p99"))),
            row(sc, fcase, "kill-to-watching max", "ms", one(q.get("max"))),
            row(sc, fcase, "visitor re-admitted p50", "ms", one(vb.get("p50")), "info"),
            row(sc, fcase, "visitor re-admitted max", "ms", one(vb.get("max")), "info"),
            row(sc, fcase, "viewer re-admitted p50", "ms", one(wb.get("p50")), "info"),
            row(sc, fcase, "viewer re-admitted max", "ms", one(wb.get("max")), "info"),
            row(sc, fcase, "redirects followed", "", one(f.get("redirects")), "info"),
            row(sc, fcase, "retried attempts", "", one(f.get("retries")), "lower"),
            row(sc, fcase, "survivor CPU over it", "%", one(_survivor_pct(f)), "info"),
            row(sc, fcase, "Redis commands per moved session", "", one(_per_moved(f, per_s)), "info"),
        ]
    notes.append(
        "per core = deliveries / relay CPU-seconds over the window (user+sys of every relay process, "
        "from /proc): the machine has 2 cores and the generator needs a share, so neither side is "
        "saturated; this is what one core would deliver at the measured cost. 1 node: pinned to core 0, the "
        "generator on core 1. 2 nodes: node1 on core 0, node2 on core 1 with the generator and "
        "redis-server. Both sides hold the same sessions; they stream in turn, "
        f"{rounds} interleaved window(s) of {window:.0f} s each (medians). A cluster node carries half the "
        "load of the single node, and a relay's cost per delivery falls as its load rises (more frames per "
        f"wake-up): the control run streams {n // 2} of the single node's sessions, the load of one "
        "cluster node, to tell that apart from what cluster mode itself costs. node2 shares its core with the "
        "generator and Redis: the cluster side's latency includes waiting for that core"
    )
    if ws:
        per_round = "; ".join(
            f"{k} " + "/".join(f"{w['del_per_cpu_s']:.0f}" for w in side[k] if w.get("del_per_cpu_s")) for k in side
        )
        notes.append(f"deliveries per relay CPU-s, round by round: {per_round}")
    if steady:
        top = ", ".join(f"{k} {v:.0f}" for k, v in list(steady.get("by_command_per_s", {}).items())[:8])
        notes.append(
            f"Redis: INFO commandstats over {steady.get('seconds')} s of steady state (every session "
            f"established, the sides streaming in turn), the bench's own INFO calls left out; commands "
            f"run by scripts (EVAL) count too. Per s: {top}"
        )
    if f:
        notes.append(
            f"failover: {f['killed']} SIGKILLed while every session streamed at {f.get('rate', 0):g} frames/s (the "
            "rate of tests/cluster/test_failover.py's visitor; at the steady rate the survivor would be saturated by "
            "the streams alone); each dropped visitor and viewer "
            f"reconnects after U(0, {CLUSTER_JITTER:.1f} s) (seeded; the SDK's own first step is 0.25-0.5 s, the "
            "watch page's 0.15-0.3 s plus a session lookup, left out here) to its old node first: refused, "
            "the next node at once (the shipped HAProxy config's redispatch); 4003 hints followed after "
            "0-250 ms; failed attempts back off as the SDK does. The viewer resumes with its resume token. "
            "kill-to-watching: from the kill until the viewer receives a keyframe of a new epoch"
        )
        if f.get("failures"):
            notes.append(f"failover: failed attempts {f['failures']}")
        if f.get("watching", 0) < f.get("affected", 0):
            notes.append(f"failover: only {f['watching']}/{f['affected']} viewers watching again within the budget")
    if r.get("errors"):
        notes.append(f"client-side errors: {r['errors'][:5]}")
    for s in side:
        if r.get(f"drops_{s}"):
            notes.append(
                f"{s}: {r[f'drops_{s}']} sockets closed by the relay outside the failover (close codes "
                f"{r.get(f'drop_codes_{s}')}); they reconnected as clients do, the frames missed count as lost"
            )
    for name, by_phase in trouble.items():
        for ph, lines in by_phase.items():
            kinds: dict[str, int] = {}
            for ln in lines:
                k = re.sub(r"\b[0-9a-z]*x[0-9]+s[0-9]+\b", "<visitor>", ln[24:])[:110]
                kinds[k] = kinds.get(k, 0) + 1
            top = "; ".join(f"{c} x {k}" for k, c in sorted(kinds.items(), key=lambda kv: -kv[1])[:3])
            notes.append(f"{name}.log, {ph}: {len(lines)} warning/error lines: {top}")
    return {
        "title": "10. Cluster",
        "rows": rows,
        "runs": [r] if r else [],
        "notes": notes[:30],
        "columns": ["relay"],
    }


def _per_moved(f: dict[str, Any], steady_per_s: float | None) -> float | None:
    """Redis commands over the failover beyond the steady rate, per session that moved."""
    if not f.get("affected") or steady_per_s is None or f.get("redis_commands") is None:
        return None
    return round((f["redis_commands"] - steady_per_s * f["span_s"]) / f["affected"], 1)


def _survivor_pct(f: dict[str, Any]) -> float | None:
    cpu = sum((f.get("survivor_cpu_s") or {}).values())
    return round(100 * cpu / f["span_s"], 1) if f.get("span_s") else None


def _per_k(per_s: float | None, n: int) -> float | None:
    return None if per_s is None or not n else round(per_s * 1000 / n, 1)


SCENARIOS: dict[str, Callable[[Ctx], dict[str, Any]]] = {
    "saturated": saturated,
    "paced": paced,
    "fanout": fanout,
    "sessions": sessions,
    "slow": slow,
    "join": join,
    "idle": idle,
    "storm": storm,
    "flood": flood,
    "cluster": cluster,
}
QUICK = ("saturated", "paced", "storm", "flood")
ALL = ("saturated", "paced", "fanout", "sessions", "slow", "join", "storm", "flood", "cluster", "idle")
