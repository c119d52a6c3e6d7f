"""Tables, bench/results/latest.json, the PNG chart and the README's benchmark table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.targets import BASELINES, REPO, TARGETS

__all__ = [
    "RESULTS",
    "LATEST",
    "CHART",
    "format_scenario",
    "format_targets",
    "merge_and_write",
    "chart",
    "markdown_table",
    "update_readme",
]

RESULTS = REPO / "bench" / "results"
LATEST = RESULTS / "latest.json"
CHART = RESULTS / "latest.png"
README = REPO / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 100:
            return f"{v:.0f}"
        return f"{v:.2f}".rstrip("0").rstrip(".") if v != int(v) else f"{v:.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def status(row: dict[str, Any]) -> str:
    met = row.get("met")
    if not row.get("target"):
        return ""
    return "ok" if met else ("MISS" if met is False else "n/a")


def format_scenario(sc: dict[str, Any]) -> str:
    # a scenario measuring the relay alone (10: cluster mode, which the baselines lack) says so
    cols = [t for t in TARGETS if t in sc.get("columns", TARGETS)]
    if any("direct" in r["values"] for r in sc["rows"]):
        cols.append("direct")
    bases = [b for b in BASELINES if b in cols]
    head = ["case", "metric", *cols, *(f"relay/{b}" for b in bases), "target", ""]
    lines = []
    for r in sc["rows"]:
        vals = [str(r["text"].get(c, "-")) if "text" in r else fmt(r["values"].get(c)) for c in cols]
        unit = f" ({r['unit']})" if r["unit"] and r["unit"] not in ("x",) else ""
        lines.append(
            [
                r["case"],
                r["metric"] + unit,
                *vals,
                *(fmt_ratio(r["ratios"].get(f"relay/{b}")) for b in bases),
                r["target"],
                status(r),
            ]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]
    out = [f"\n== {sc['title']} =="]
    out.append("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip())
    out.append("  ".join("-" * w for w in widths).rstrip())
    prev = None
    for ln in lines:
        if ln[0] == prev:
            ln = ["", *ln[1:]]
        else:
            prev = ln[0]
        out.append("  ".join(str(x).ljust(w) for x, w in zip(ln, widths, strict=True)).rstrip())
    for n in sc.get("notes", []):
        out.append(f"  note: {n}")
    return "\n".join(out)


def ordered(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Scenarios in their issue order (titles start with the number: 10 after 9), whatever order they ran in."""

    def key(sc: dict[str, Any]) -> tuple[int, str]:
        title = str(sc.get("title", ""))
        number = title.split(".", 1)[0]
        return (int(number) if number.isdigit() else 1 << 30, title)

    return sorted(data.get("scenarios", {}).values(), key=key)


def target_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for sc in ordered(data) for r in sc.get("rows", []) if r.get("target")]


def format_targets(data: dict[str, Any]) -> str:
    out = ["\n== Targets (issue #5) =="]
    for r in target_rows(data):
        rel = r["values"].get("relay")
        if "text" in r:
            rel = r["text"].get("relay")
        rs = ", ".join(f"{k} {fmt_ratio(v)}" for k, v in r["ratios"].items() if v is not None)
        out.append(
            f"  [{status(r) or '-':4}] {r['scenario']}: {r['case']}: {r['metric']} = {fmt(rel)} {r['unit']}"
            f" (target {r['target']}){'; ' + rs if rs else ''}"
        )
    return "\n".join(out)


def merge_and_write(data: dict[str, Any]) -> dict[str, Any]:
    """Write latest.json. Scenarios from an earlier run that this one did not
    repeat are kept (each scenario carries its own date)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    merged = data
    if LATEST.exists():
        try:
            old = json.loads(LATEST.read_text())
        except (OSError, ValueError):
            old = {}
        keep = {k: v for k, v in old.get("scenarios", {}).items() if k not in data.get("scenarios", {})}
        if keep:
            merged = {**data, "scenarios": {**keep, **data["scenarios"]}}
        for extra in ("codec", "browser"):
            if extra not in merged and extra in old:
                merged[extra] = old[extra]
    LATEST.write_text(json.dumps(merged, indent=1, default=str) + "\n")
    return merged


def chart(data: dict[str, Any], path: Path = CHART) -> Path | None:
    """Throughput bars (scenarios 1 and 3) and latency CDFs (scenario 2)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    scs = data.get("scenarios", {})
    colors = {"relay": "#e5484d", "websockets": "#3e63dd", "picows": "#30a46c", "direct": "#888888"}
    bars = []
    for key in ("saturated", "fanout"):
        for r in scs.get(key, {}).get("rows", []):
            if r["metric"] == "deliveries/s":
                bars.append((r["case"], r["values"]))
    cdfs = scs.get("paced", {}).get("cdf_us", {})
    n_plots = (1 if bars else 0) + len(cdfs)
    if not n_plots:
        return None
    fig, axes = plt.subplots(1, n_plots, figsize=(6 * n_plots, 4.5), squeeze=False)
    ax_i = 0
    if bars:
        ax = axes[0][ax_i]
        ax_i += 1
        width = 0.8 / len(TARGETS)
        for i, t in enumerate(TARGETS):
            xs = [j + i * width for j in range(len(bars))]
            ax.bar(xs, [(v.get(t) or 0) / 1000 for _, v in bars], width, label=t, color=colors[t])
        ax.set_xticks([j + width for j in range(len(bars))])
        ax.set_xticklabels([c for c, _ in bars], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("thousand deliveries/s (one server core)")
        ax.set_title("Throughput (median)")
        ax.legend(fontsize=8)
    for rate, per in cdfs.items():
        ax = axes[0][ax_i]
        ax_i += 1
        for t, xs in per.items():
            if xs:
                n = len(xs)
                ax.plot(xs, [(i + 1) / n for i in range(n)], label=t, color=colors.get(t, "black"))
        ax.set_xscale("log")
        ax.set_xlabel("end-to-end latency (µs)")
        ax.set_ylabel("fraction of frames")
        ax.set_title(f"Latency CDF, {rate} frames/s, 1 KiB, 1->4")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    m = data.get("machine", {})
    fig.suptitle(
        f"cobrowse-relay bench {data.get('date', '')} - {m.get('cpu', '')}, {m.get('cores', '')} cores",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def provenance(data: dict[str, Any]) -> list[str]:
    """A line naming the scenarios measured by an earlier (or later) command than the file's."""
    here = (data.get("date"), data.get("command"))
    other: dict[tuple[Any, Any], list[str]] = {}
    for sc in ordered(data):
        when = (sc.get("date", here[0]), sc.get("command"))  # older results carry no command
        if when[0] != here[0] or when[1] not in (None, here[1]):
            other.setdefault(when, []).append(str(sc.get("title", "?")).split(".")[0])
    if not other:
        return []
    parts = [
        f"scenario{'s' if len(ns) > 1 else ''} {', '.join(ns)} on {d}" + (f" with `{c}`" if c else "")
        for (d, c), ns in other.items()
    ]
    return ["Measured at another time: " + "; ".join(parts) + "."]


def markdown_table(data: dict[str, Any]) -> str:
    m = data.get("machine", {})
    v = data.get("versions", {})
    lines = [
        f"Measured {data.get('date', '?')} with `{data.get('command', 'make bench')}` on {m.get('cpu', '?')}, "
        f"{m.get('cores', '?')} cores, Linux {m.get('kernel', '?')}; Python {v.get('python', '?')}, "
        f"uvicorn {v.get('uvicorn', '?')}, websockets {v.get('websockets', '?')}, picows {v.get('picows', '?')}. "
        "Relay and baselines pinned to one core, the load generator to the other; medians of repeated runs. "
        + (
            "Scenario 10 (cluster mode, relay only): two nodes, one per core, the load generator and Redis "
            "sharing the second; per core = deliveries per CPU-second of the relay processes (bench/README.md). "
            if "cluster" in data.get("scenarios", {})
            else ""
        )
        + "Regenerate with `make bench-table` from `bench/results/latest.json`.",
        *provenance(data),
        "",
        "| scenario | case | figure | relay | websockets | picows | relay/websockets | relay/picows | target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    keep = {
        "deliveries/s",
        "CPU per delivery",
        "p50 latency",
        "p99 latency",
        "added p50 vs direct hop",
        "lost frames",
        "connections held",
        "RSS per connection",
        "handshakes/s",
        "p99 with/without",
        "time to caught-up",
        "server CPU",
        "slow viewer resynced or closed",
        "re-admitted (fewest of the storms)",
        "storm time (drop -> all admitted)",
        "server CPU during storm",
        "server CPU per reconnect",
        "A p99 quiet",
        "A p99 under flood",
        "A p99 flood/quiet",
        "B closed by the server",
        "deliveries/s per core, 1 node",
        "deliveries/s per core, 2 nodes",
        "per core, 2 nodes / 1 node",
        "  2 nodes / 1 node at a node's load",
        "Redis commands/s per 1,000 sessions",
        "watching again (new-epoch keyframe)",
        "kill-to-watching p50",
        "kill-to-watching p99",
        "kill-to-watching max",
    }
    for sc in ordered(data):
        for r in sc.get("rows", []):
            if r["metric"] not in keep:
                continue
            if "text" in r:
                vals = [str(r["text"].get(t, "-")) for t in TARGETS]
            else:
                vals = [fmt(r["values"].get(t)) for t in TARGETS]
            unit = f" ({r['unit']})" if r["unit"] and r["unit"] != "x" else ""
            tgt = f"{r['target']} {status(r)}".strip() if r.get("target") else ""
            lines.append(
                f"| {r['scenario']} | {r['case']} | {r['metric'].strip()}{unit} | "
                + " | ".join(vals)
                + " | "
                + " | ".join(fmt_ratio(r["ratios"].get(f"relay/{b}")) for b in BASELINES)
                + f" | {tgt} |"
            )
    return "\n".join(lines)


def update_readme(data: dict[str, Any], readme: Path = README) -> bool:
    """Rewrite the region between the markers; False (and print) when they are absent."""
    table = markdown_table(data)
    text = readme.read_text() if readme.exists() else ""
    a, b = text.find(START), text.find(END)
    if a < 0 or b < a:
        print(table)
        print(f"\n(no {START} ... {END} markers in {readme}: table printed, README not changed)")
        return False
    new = text[: a + len(START)] + "\n" + table + "\n" + text[b:]
    if new != text:
        readme.write_text(new)
    print(f"README benchmark table rewritten from {LATEST.relative_to(REPO)}")
    return True
