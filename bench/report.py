"""RESULTS.md and the chart, from the rows of one run."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from systems import LABELS

Row = dict[str, Any]


def _run(args: list[str]) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    return (
        (done.stdout + done.stderr).strip().splitlines()[0]
        if (done.stdout + done.stderr).strip()
        else ""
    )


def machine() -> dict[str, str]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    debian = (
        Path("/etc/debian_version").read_text().strip()
        if Path("/etc/debian_version").exists()
        else "?"
    )
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{mem_kb / 2**20:.1f} GiB",
        "kernel": platform.release(),
        "os": f"Debian {debian}",
    }


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for pkg in ("uvicorn", "starlette", "redis", "hiredis", "uvloop", "httptools", "sse-starlette"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    out["redis-server"] = _run(["redis-server", "--version"]).split(" sha=")[0]
    out["nginx"] = _run(["nginx", "-v"]).replace("nginx version: ", "")
    out["libnginx-mod-nchan"] = _run(["dpkg-query", "-W", "-f=${Version}", "libnginx-mod-nchan"])
    out["cc"] = _run(["cc", "--version"])
    here = Path(__file__).resolve().parent
    commit = _run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"])
    dirty = _run(["git", "-C", str(here.parent), "status", "--porcelain", "--", "hub", "publisher"])
    out["hub commit"] = commit + (" (hub/ or publisher/ modified since)" if dirty else "")
    return out


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _label(system: str) -> str:
    return LABELS.get(system, system)


def _by(rows: list[Row], scenario: str, system: str) -> Row | None:
    for r in rows:
        if (
            r["scenario"] == scenario
            and r["system"] == system
            and "error" not in r
            and "skipped" not in r
        ):
            return r
    return None


def targets(rows: list[Row]) -> list[str]:
    """The issue's targets, each with the hub's figure beside Nchan's and the baseline's."""
    lines = [
        "| Target | hub (1 gateway) | hub (2 + nginx) | baseline | Nchan | Met by the hub |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    systems = ["hub", "hub-x2", "baseline", "nchan"]

    def cell(scenario: str, fn: Any) -> list[str]:
        out = []
        for s in systems:
            r = _by(rows, scenario, s)
            out.append(fn(r) if r else "–")
        return out

    def live(r: Row) -> str:
        return (
            f"{100 * r['delivered_fraction']:.1f}% delivered, p99 {r['lat_ms']['p99']:.1f} ms, "
            f"lost {r['lost']:,}"
        )

    hub_a = _by(rows, "fanout-1k-100", "hub")
    met = (
        "–"
        if not hub_a
        else (
            "yes"
            if hub_a["delivered_fraction"] >= 0.999
            and hub_a["lat_ms"]["p99"] < 50
            and hub_a["lost"] == 0
            else "no"
        )
    )
    lines.append(
        "| 1,000 clients × 100 ev/s: all of it, p99 < 50 ms | "
        + " | ".join(cell("fanout-1k-100", live))
        + f" | {met} |"
    )
    hub_b = _by(rows, "fanout-1k-1000", "hub")
    met = (
        "–"
        if not hub_b
        else (
            "yes"
            if hub_b["delivered_fraction"] >= 0.999
            and hub_b["lat_ms"]["p99"] < 100
            and hub_b["lost"] == 0
            else "no"
        )
    )
    lines.append(
        "| 1,000 clients × 1,000 ev/s: all of it, p99 < 100 ms, nothing lost | "
        + " | ".join(cell("fanout-1k-1000", live))
        + f" | {met} |"
    )
    lines.append(
        "| 1,000 × 1,000: deliveries/s (≥ 10× baseline) | "
        + " | ".join(cell("fanout-1k-1000", lambda r: _f(r["achieved_dps"])))
        + " | "
        + _ratio(hub_b, _by(rows, "fanout-1k-1000", "baseline"), "achieved_dps", 10)
        + " |"
    )

    def per_cpu(r: Row) -> str:
        return _f(1e6 / r["cpu_s_per_M"]) if r.get("cpu_s_per_M") else "–"

    lines.append(
        "| 1,000 × 1,000: deliveries per server CPU second (≥ 5× Nchan) | "
        + " | ".join(cell("fanout-1k-1000", per_cpu))
        + " | "
        + _ratio(hub_b, _by(rows, "fanout-1k-1000", "nchan"), "per_cpu", 5)
        + " |"
    )

    def storm(r: Row) -> str:
        if r.get("all_caught_up_s") is None:
            return f"{r['caught_up']:,}/{r['clients']:,} caught up"
        return f"{r['all_caught_up_s']:.2f} s"

    hub_s = _by(rows, "storm-1k", "hub")
    met = (
        "–"
        if not hub_s
        else (
            "yes"
            if hub_s.get("all_caught_up_s") is not None
            and hub_s["all_caught_up_s"] <= 3
            and hub_s["lost"] == 0
            else "no"
        )
    )
    storm_cells = cell("storm-1k", storm)
    storm_cells[2] = "n/a (no history)"
    lines.append(
        "| Reconnect storm: all caught up within 3 s | " + " | ".join(storm_cells) + f" | {met} |"
    )
    hub_i = _by(rows, "idle-10k", "hub")
    met = "–" if not hub_i else ("yes" if hub_i["rss_kb_per_conn"] <= 20 else "no")
    lines.append(
        "| Idle connections: ≤ 20 KB resident each | "
        + " | ".join(cell("idle-10k", lambda r: f"{r['rss_kb_per_conn']:.1f} KB"))
        + f" | {met} |"
    )
    return lines


def _ratio(hub: Row | None, other: Row | None, key: str, want: float) -> str:
    if not hub or not other:
        return "–"
    if key == "per_cpu":
        if not hub.get("cpu_s_per_M") or not other.get("cpu_s_per_M"):
            return "–"
        ratio = other["cpu_s_per_M"] / hub["cpu_s_per_M"]
    else:
        if not other[key]:
            return "–"
        ratio = hub[key] / other[key]
    return f"{'yes' if ratio >= want else 'no'} ({ratio:.1f}×)"


def live_table(rows: list[Row]) -> list[str]:
    head = (
        "| Scenario | System | Connected | Events/s offered → published | Deliveries/s offered | "
        "Deliveries/s achieved | Delivered | p50 ms | p99 ms | max ms | Lost | Dup | "
        "Server CPU s / M deliveries | Server cores busy | Redis CPU s / M | Client cores busy |"
    )
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in rows:
        if r["kind"] != "live":
            continue
        if "error" in r or "skipped" in r:
            lines.append(
                f"| {r['scenario']} | {_label(r['system'])} | "
                + f"failed: {r.get('error') or r.get('skipped')} |"
                + " |" * 13
            )
            continue
        lat = r["lat_ms"]
        lines.append(
            f"| {r['scenario']} | {_label(r['system'])} | {r['connected']:,} | "
            f"{_f(r['offered_eps'])} → {_f(r['published_eps'])} | {_f(r['offered_dps'])} | "
            f"{_f(r['achieved_dps'])} | {100 * r['delivered_fraction']:.1f}% | {lat['p50']:.1f} | "
            f"{lat['p99']:.1f} | {lat['max']:.1f} | {r['lost']:,} | {r['dup']:,} | "
            f"{_f(r['cpu_s_per_M'], 2)} | {r['server_cores_publishing']:.2f} | "
            f"{_f(r['redis_cpu_s_per_M'], 2)} | {r['client_cores_publishing']:.2f} |"
        )
    return lines


def client_check(rows: list[Row]) -> list[str]:
    """Whether the load client kept up: Nchan's one worker against the client's CPU, per run."""
    nchan = [r for r in rows if r["system"] == "nchan" and r["kind"] == "live" and "lat_ms" in r]
    if not nchan:
        return []
    lines = [
        "**Does the load client keep up with Nchan?** CPU while publishing, in cores (Nchan runs "
        "one worker, so 1.0 is all it can use; the client has 2 threads):",
        "",
    ]
    for r in nchan:
        busy, client = r["server_cores_publishing"], r["client_cores_publishing"]
        verdict = (
            "Nchan's worker saturated, the client was not"
            if busy >= 0.85 and client < 1.5
            else "neither side saturated"
            if busy < 0.85 and client < 1.5
            else "the client was busy too"
        )
        lines.append(
            f"- {r['scenario']}: Nchan {busy:.2f}, load client {client:.2f} → {verdict}; "
            f"{100 * r['delivered_fraction']:.1f}% delivered."
        )
    return lines


def idle_table(rows: list[Row]) -> list[str]:
    lines = [
        "| Scenario | System | Connected | Server RSS before → after (MB) | RSS per connection | "
        "Redis RSS per connection |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if r["kind"] != "idle":
            continue
        if "error" in r:
            lines.append(
                f"| {r['scenario']} | {_label(r['system'])} | failed: {r['error']} | | | |"
            )
            continue
        lines.append(
            f"| {r['scenario']} | {_label(r['system'])} | {r['connected']:,} | "
            f"{r['rss_mb_before']:.1f} → {r['rss_mb_after']:.1f} | {r['rss_kb_per_conn']:.1f} KB | "
            f"{r['redis_rss_kb_per_conn']:.1f} KB |"
        )
    return lines


def storm_table(rows: list[Row]) -> list[str]:
    lines = [
        "| Scenario | System | Connected | Caught up | All caught up after | Catch-up p50 / p99 (ms) | "
        "Deliveries | Lost | Dup | Server CPU s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if r["kind"] != "storm":
            continue
        if "error" in r or "skipped" in r:
            lines.append(
                f"| {r['scenario']} | {_label(r['system'])} | "
                f"{'failed: ' + r['error'] if 'error' in r else 'n/a: ' + r['skipped']} |"
                + " |"
                * 7
            )
            continue
        done = f"{r['all_caught_up_s']:.2f} s" if r["all_caught_up_s"] is not None else "not all"
        lines.append(
            f"| {r['scenario']} | {_label(r['system'])} | {r['connected']:,} | {r['caught_up']:,} | "
            f"{done} | {r['catchup_ms']['p50']:.0f} / {r['catchup_ms']['p99']:.0f} | "
            f"{r['deliveries']:,} | {r['lost']:,} | {r['dup']:,} | {r['server_cpu_s']:.2f} |"
        )
    return lines


def write_markdown(path: Path, rows: list[Row], meta: dict[str, Any], chart: Path | None) -> None:
    m, v = meta["machine"], meta["versions"]
    out = [
        "# Benchmark results",
        "",
        f"Produced by one run of `{meta['command']}` ({meta['started']} – {meta['finished']}, "
        f"{meta['wall_min']:.1f} min). Every system ran on this machine in the same run, one after "
        "the other, each started fresh for each scenario.",
        "",
        f"**Machine:** {m['nproc']} cores ({m['cpu']}), {m['memory']} memory, {m['os']}, "
        f"Linux {m['kernel']}. The machine was **shared** with other engineers running tests: "
        f"load average {meta['load_start']} at the start, {meta['load_end']} at the end "
        f"(checked between runs: {meta['load_samples']}). "
        "All traffic stayed on 127.0.0.1.",
        "",
        "**Versions:** " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        "",
        "## Targets (issue 6)",
        "",
        *targets(rows),
        "",
    ]
    if chart is not None:
        out += [f"![deliveries/s and p99 latency against clients]({chart.name})", ""]
    out += [
        "## Fan-out and many topics",
        "",
        *live_table(rows),
        "",
        *client_check(rows),
        "",
        "## Idle connections",
        "",
        *idle_table(rows),
        "",
        "## Reconnect storm",
        "",
        *storm_table(rows),
        "",
    ]
    profiles = [r for r in rows if r.get("profile") and "self_top" in r["profile"]]
    if profiles:
        out += ["## Profile of the hub's gateway (py-spy, self time)", ""]
        for r in profiles:
            out.append(
                f"{r['scenario']} on {_label(r['system'])}, {r['profile']['samples']} samples:"
            )
            out.append("")
            out += [f"- {pct:.1f}% {name}" for name, pct in r["profile"]["self_top"]]
            out.append("")
    out += ["## How it is measured", "", *METHOD, ""]
    path.write_text("\n".join(out))


METHOD = [
    "- **Load client** (`bench/loadclient.c`, built with `cc -O2`): epoll, 2 threads, HTTP/1.1 GET per "
    "stream, plain or chunked bodies, a full SSE line parser. It reads each socket at most once per "
    "millisecond (`--coalesce-us 1000`) so that frames that queued meanwhile come in one read; this adds "
    "at most 1 ms to the latency figures. A dropped stream is reopened at once with `Last-Event-ID`.",
    '- **Events** carry `{"seq":n,"t":<publish time in ns>}`; the client checks per stream that seq runs '
    "1, 2, 3… (a gap counts as lost, a repeat as a duplicate; events still missing when the drain time "
    "runs out also count as lost) and records publish-to-receive latency in a histogram (1.6% buckets).",
    "- **Publisher** (`bench/publisher.c`): for the hub and the baseline, pipelined `EVALSHA` of the hub's "
    "publish script (`PUBLISH_SCRIPT` in `hub/publish.py`) on a private redis-server; for Nchan, "
    "pipelined HTTP POSTs on one keep-alive connection per group of topics (Nchan answers a publish "
    "only after its fan-out, so a "
    "publisher that waited for each answer would be slowed to Nchan's pace). The time stamp is taken when "
    "the event is written, so a publisher held back by the system shows as *published* < *offered*.",
    "- **Deliveries/s achieved** = deliveries / (last delivery − first publish). **Delivered** = deliveries / "
    "(clients × events per topic actually published).",
    "- **Server CPU** = utime + stime from /proc/<pid>/stat of the server's processes (the gateway(s), "
    "nginx master and workers, or uvicorn) from the start of publishing until every client has the "
    "last event (or the 10 s drain ran out); **cores busy** is CPU over wall time while the publisher "
    "ran. Redis CPU is given apart: for the baseline, Redis does the per-client fan-out itself.",
    "- **Client cores busy**: the load client's own CPU time over the same window (it also reports it "
    "with getrusage); with the server's it shows which side was the limit on this 2-core machine.",
    "- **RSS per connection** = (resident memory of the server's processes with N idle streams − before "
    "any stream) / N, read after the streams had been open 3 s.",
    "- **Reconnect storm**: one event is published and its ID taken as the resume cursor, then the "
    "missed events are published with no client connected; then all clients connect at once with "
    "`Last-Event-ID: <cursor>`, timed from the first connect until every client has the last event.",
    "- nginx in front of two gateways: 2 workers (one worker would need two descriptors per stream, "
    "past this machine's 20,000 open-file limit at 10,000 streams), `proxy_buffering off`, HTTP/1.1 "
    "upstream, `proxy_read_timeout 1h`. Nchan: 1 worker, `nchan_subscriber_first_message newest`.",
]


def write_chart(path: Path, rows: list[Row]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return False
    points = [r for r in rows if r["kind"] == "live" and r["topics"] == 1 and "lat_ms" in r]
    if not points:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 6.2))
    colors = {"hub": "tab:blue", "hub-x2": "tab:cyan", "baseline": "tab:red", "nchan": "tab:green"}
    rates = sorted({r["rate"] for r in points})
    styles = ["-", "--", ":", "-."]
    for system in dict.fromkeys(r["system"] for r in points):
        for i, rate in enumerate(rates):
            series = sorted(
                (r for r in points if r["system"] == system and r["rate"] == rate),
                key=lambda r: r["clients"],
            )
            if not series:
                continue
            xs = [r["clients"] for r in series]
            label = f"{_label(system)}, {rate:g} ev/s"
            kw = dict(color=colors.get(system), linestyle=styles[i % 4], marker="o", label=label)
            ax1.plot(xs, [r["achieved_dps"] for r in series], **kw)
            ax2.plot(xs, [max(0.01, r["lat_ms"]["p99"]) for r in series], **kw)
    for i, rate in enumerate(rates):
        xs = sorted({r["clients"] for r in points if r["rate"] == rate})
        ax1.plot(
            xs,
            [x * rate for x in xs],
            color="grey",
            linestyle=styles[i % 4],
            linewidth=0.8,
            label=f"offered, {rate:g} ev/s",
        )
    ax1.set(
        xscale="log",
        yscale="log",
        xlabel="clients",
        ylabel="deliveries/s achieved",
        title="Deliveries per second (solid: 100 ev/s, dashed: 1,000 ev/s)",
    )
    ax2.set(
        xscale="log",
        yscale="log",
        xlabel="clients",
        ylabel="p99 latency (ms)",
        title="p99 publish-to-receive latency",
    )
    ticks = sorted({r["clients"] for r in points})
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xticks(ticks, [f"{t:,}" for t in ticks])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:,.10g}"))
    handles, labels = ax1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def command_line() -> str:
    args = [re.sub(r"^.*/(bench/\w+\.py)$", r"\1", a) for a in sys.argv]
    return "python " + " ".join(args)
