"""``python -m bench all | quick | table | <scenario>...``

* ``quick``: scenarios 1, 2, 8 and 9 with short runs (about 2 minutes) and the codec section.
* ``all``: every scenario (under 12 minutes), the codec and browser sections.
* ``table``: rewrite README's benchmark table from bench/results/latest.json.
* scenario names (``saturated paced fanout sessions slow join idle storm flood``)
  and ``codec`` / ``browser`` run just those; add ``--quick`` for short runs.

Results go to bench/results/latest.json (and latest.png with matplotlib).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report
from bench.proc import cores, machine_info, raise_nofile, versions
from bench.scenarios import ALL, QUICK, SCENARIOS, Ctx
from bench.targets import REPO, TARGETS

EXTRAS = ("codec", "browser")


def run_extra(name: str, quick: bool) -> dict[str, Any] | None:
    """bench/codec.py and bench/browser.py (written by others): ``run(quick) -> dict``."""
    try:
        mod = importlib.import_module(f"bench.{name}")
    except Exception as e:  # absent, or its dependencies are
        print(f"\n== {name}: skipped ({type(e).__name__}: {e})", flush=True)
        return None
    print(f"\n== {name} ==", flush=True)
    t0 = time.monotonic()
    try:
        out = mod.run(quick=quick)
    except Exception as e:
        print(f"  {name} failed: {type(e).__name__}: {e}", flush=True)
        return {"error": f"{type(e).__name__}: {e}"}
    if not isinstance(out, dict):
        out = {"result": out}
    out.setdefault("elapsed_s", round(time.monotonic() - t0, 1))
    fmt = getattr(mod, "format_table", None)
    try:
        text = fmt(out) if callable(fmt) else ""
    except Exception:
        text = ""
    if not text:
        text = json.dumps(out, default=str)
        text = text[:1500] + (" ..." if len(text) > 1500 else "")
    print(text, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("what", nargs="+", help="all | quick | table | " + " | ".join((*SCENARIOS, *EXTRAS)))
    ap.add_argument("--quick", action="store_true", help="short runs for named scenarios")
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma-separated subset of " + ",".join(TARGETS))
    ap.add_argument("--no-chart", action="store_true")
    ap.add_argument(
        "--rt",
        action="store_true",
        help="run servers and load generator SCHED_FIFO (root): steadier on a busy shared machine, "
        "but starves its other work while saturated runs last",
    )
    ap.add_argument(
        "--nice", type=int, default=-10, help="niceness of servers and load generator (0: unchanged; <0 needs root)"
    )
    args = ap.parse_args(argv)
    what = list(args.what)
    if what == ["table"]:
        if not report.LATEST.exists():
            print(f"no {report.LATEST}: run `make bench` first", file=sys.stderr)
            return 1
        report.update_readme(json.loads(report.LATEST.read_text()))
        return 0
    quick = args.quick or what == ["quick"]
    if what == ["all"]:
        names, extras = list(ALL), ["codec", "browser"]
    elif what == ["quick"]:
        names, extras = list(QUICK), ["codec"]
    else:
        unknown = [w for w in what if w not in SCENARIOS and w not in EXTRAS]
        if unknown:
            ap.error(f"unknown: {', '.join(unknown)}")
        names = [w for w in what if w in SCENARIOS]
        extras = [w for w in what if w in EXTRAS]
    os.environ["BENCH_NICE"] = str(args.nice)
    os.environ["BENCH_RT"] = "1" if args.rt else "0"
    only = tuple(t for t in args.targets.split(",") if t in TARGETS)
    raise_nofile()
    machine = machine_info()  # before this process pins itself
    server_core, loadgen_core = cores()
    if loadgen_core is not None:  # keep this orchestrator off the server's core
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {loadgen_core})
    t0 = time.monotonic()
    started = datetime.now(UTC)
    data: dict[str, Any] = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": f"python -m bench {' '.join(what)}" + (" --quick" if args.quick else ""),
        "machine": machine,
        "versions": versions(),
        "pinning": {"server_core": server_core, "loadgen_core": loadgen_core},
        "priority": {"nice": args.nice, "sched_fifo": args.rt},
        "scenarios": {},
    }
    print(
        f"bench {data['command']}: {data['machine']['cpu']}, {data['machine']['cores']} cores, "
        f"server core {server_core}, load generator core {loadgen_core}",
        flush=True,
    )
    if server_core is None:
        print(
            "  ! fewer than 2 usable cores or no taskset: running unpinned, figures are not per core",
            flush=True,
        )
    with tempfile.TemporaryDirectory(prefix="bench-logs-") as logs:
        ctx = Ctx(quick, server_core, loadgen_core, Path(logs), only)
        # `all` must end within 12 minutes: scenario 5, run last, gets what is left (codec/browser reserved)
        ctx.t_end = t0 + (720 - 110 if "browser" in extras else 720 - 20)
        if "idle" in what:  # named explicitly: every target
            ctx.idle_targets = TARGETS
        try:
            for name in names:
                ts = time.monotonic()
                load0 = os.getloadavg()[0]
                sc = SCENARIOS[name](ctx)
                sc["date"] = data["date"]
                sc["command"] = data["command"]
                sc["elapsed_s"] = round(time.monotonic() - ts, 1)
                # the machine is shared: how busy it was says how much to trust the figures
                sc["loadavg_1min"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
                busy = max(sc["loadavg_1min"])
                if busy > (machine.get("cores_usable") or 2) + 1.5:  # the bench's own processes make ~2
                    sc.setdefault("notes", []).append(
                        f"machine busy: 1-minute load average {sc['loadavg_1min'][0]} -> {sc['loadavg_1min'][1]} "
                        f"on {machine.get('cores_usable')} cores (other work on it): figures perturbed, rerun when idle"
                    )
                data["scenarios"][name] = sc
                print(report.format_scenario(sc), flush=True)
                print(f"  ({sc['elapsed_s']} s)", flush=True)
        finally:
            ctx.stop()
    for extra in extras:
        out = run_extra(extra, quick)
        if out is not None:
            data[extra] = out
    data["elapsed_s"] = round(time.monotonic() - t0, 1)
    merged = report.merge_and_write(data)
    print(report.format_targets(data), flush=True)
    print(f"\nwrote {report.LATEST.relative_to(REPO)}", flush=True)
    if not args.no_chart:
        png = report.chart(merged)
        print(f"wrote {png.relative_to(REPO)}" if png else "chart skipped (matplotlib not installed: the bench extra)")
    print(f"total {data['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
