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

from lb_report import lb_section
from measure import HTTP_BATCH
from scenarios import MERCURE_COMPARED, NATIVE_HTTP_COUNTERPARTS
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


def _margin(value: float, limit: float, unit: str, strict: bool = False, digits: int = 1) -> str:
    """`yes`/`no` for value ≤ limit (< with strict), with the value and how far from it."""
    ok = value < limit if strict else value <= limit
    sign = "<" if strict else "≤"
    v, lim = f"{value:,.{digits}f}{unit}", f"{limit:,.{digits}f}{unit}"
    if ok:
        under = 100 * (limit - value) / limit if limit else 0.0
        return f"yes ({v} {sign} {lim}, {under:.0f}% under)"
    over = 100 * (value - limit) / limit if limit else 0.0
    return f"no ({v}, {over:.0f}% over {lim})"


def _at_least(value: float, limit: float, unit: str) -> str:
    if value >= limit:
        return (
            f"yes ({_f(value)}{unit} ≥ {_f(limit)}{unit}, {100 * (value / limit - 1):.0f}% above)"
        )
    return f"no ({_f(value)}{unit}, {100 * (1 - value / limit):.0f}% short of {_f(limit)}{unit})"


def _per_delivery(r: Row, key: str) -> float | None:
    per = r.get("cpu_us_per_delivery") or {}
    value = per.get(key)
    return float(value) if value is not None else None


def gateway_us(r: Row) -> float | None:
    """CPU µs per delivery of the hub's gateway process(es) only."""
    return _per_delivery(r, "gateway")


def gateway_redis_us(r: Row) -> float | None:
    """CPU µs per delivery: the hub's processes and Redis (with 2 gateways, nginx too);
    for Nchan, nginx's (Nchan uses no Redis)."""
    if r["system"] == "nchan":
        return _per_delivery(r, "server")
    return _per_delivery(r, "server_redis")


def _us_cell(value: float | None) -> str:
    return "–" if value is None else f"{value:,.1f} µs"


def targets13(rows: list[Row]) -> list[str]:
    """The targets of issue 13, computed from the run's figures, beside Nchan's."""
    systems = ["hub", "hub-x2", "nchan"]
    lines = [
        "| Target | hub (1 gateway) | hub (2 + nginx) | Nchan | Met by the hub (1 gateway) |",
        "| --- | --- | --- | --- | --- |",
    ]

    def add(target: str, scenario: str, fn: Any, verdict: str) -> None:
        cells = []
        for system in systems:
            r = _by(rows, scenario, system)
            cells.append(fn(r) if r else "–")
        lines.append(f"| {target} | " + " | ".join(cells) + f" | {verdict} |")

    def hub(scenario: str) -> Row | None:
        return _by(rows, scenario, "hub")

    def ratio_to_nchan(scenario: str, limit: float, strict: bool) -> str:
        h, n = hub(scenario), _by(rows, scenario, "nchan")
        hv, nv = (gateway_redis_us(h) if h else None), (gateway_redis_us(n) if n else None)
        if hv is None or not nv:
            return "–"
        ratio = hv / nv
        ok = ratio < limit if strict else ratio <= limit
        want = f"{'<' if strict else '≤'} {limit:g}×"
        return f"{'yes' if ok else 'no'} ({ratio:.2f}× Nchan's; {want})"

    def lost(r: Row) -> str:
        return (
            f"{100 * r['delivered_fraction']:.1f}% delivered, lost {r['lost']:,}, "
            f"dup {r['dup']:,}, publish errors {r['publish_errors']:,}"
        )

    h = hub("sparse-10k")
    add(
        "sparse-10k: nothing lost",
        "sparse-10k",
        lost,
        "–"
        if not h
        else (
            "yes"
            if h["lost"] == 0
            and h["dup"] == 0
            and h["publish_errors"] == 0
            and h["deliveries"] == h["expected_deliveries"]
            else "no"
        ),
    )

    def gw(r: Row) -> str:
        if r["system"] == "nchan":
            return f"(nginx {_us_cell(_per_delivery(r, 'server'))})"
        return _us_cell(gateway_us(r))

    for scenario in ("sparse-10k",):
        h = hub(scenario)
        v = gateway_us(h) if h else None
        add(
            f"{scenario}: gateway CPU per delivery ≤ 25 µs",
            scenario,
            gw,
            "–" if v is None else _margin(v, 25, " µs"),
        )

    def gr(r: Row) -> str:
        return _us_cell(gateway_redis_us(r))

    add(
        "sparse-10k: gateway + Redis CPU per delivery below Nchan's server CPU per delivery",
        "sparse-10k",
        gr,
        ratio_to_nchan("sparse-10k", 1.0, strict=True),
    )

    def p99(r: Row) -> str:
        return f"{r['lat_ms']['p99']:.1f} ms"

    for scenario, limit in (
        ("sparse-10k", 10.0),
        ("sparse-http", 25.0),
        ("sparse-http-batch", 25.0),
    ):
        h = hub(scenario)
        add(
            f"{scenario}: p99 < {limit:g} ms",
            scenario,
            p99,
            "–" if not h else _margin(h["lat_ms"]["p99"], limit, " ms", strict=True),
        )

    def rate(r: Row) -> str:
        return f"{_f(r['published_eps'])}/s" + (
            f" ({_f(r['publish_requests_per_s'])} requests/s)" if r["publish_batch"] > 1 else ""
        )

    for scenario, what in (
        ("publish-http-max", "one event per request"),
        ("publish-http-max-batch", f"batches of ≤ {HTTP_BATCH}"),
    ):
        h = hub(scenario)
        add(
            f"POST /publish: ≥ 10,000 publishes/s ({scenario}: {what}, as fast as it answers)",
            scenario,
            rate,
            "–" if not h else _at_least(h["published_eps"], 10_000, "/s"),
        )
    h = hub("sparse-http")
    offered = f"{h['offered_eps']:,.0f}/s" if h else "rate"
    add(
        f"(not a target) sparse-http: publishes/s achieved of the {offered} offered",
        "sparse-http",
        lambda r: f"{_f(r['published_eps'])}/s, {r['publish_errors']:,} errors, lost {r['lost']:,}",
        "–"
        if not h or not h["offered_eps"]
        else f"{100 * h['published_eps'] / h['offered_eps']:.0f}% of it",
    )
    add(
        "sparse-http: gateway + Redis CPU per delivery ≤ 1.5× Nchan's",
        "sparse-http",
        gr,
        ratio_to_nchan("sparse-http", 1.5, strict=False),
    )
    add(
        "sparse-http-batch: gateway + Redis CPU per delivery below Nchan's",
        "sparse-http-batch",
        gr,
        ratio_to_nchan("sparse-http-batch", 1.0, strict=True),
    )

    def streaming(r: Row) -> str:
        v = r.get("all_streaming_s")
        if v is None:
            done = r["caught_up"] if r["missed"] else r["first_event"]
            return f"{done:,}/{r['clients']:,} streaming"
        return (
            f"{v:.2f} s (all open {r['all_open_s']:.2f} s)"
            if r["all_open_s"] is not None
            else f"{v:.2f} s"
        )

    def per_join(r: Row) -> str:
        per = r["cpu_us_per_join"]
        if r["system"] == "nchan":
            return f"(nginx {per['server']:,.0f} µs)"
        extra = f", + nginx {per['nginx']:,.0f}" if "nginx" in per else ""
        only = r["cpu_us_per_join_open"]["gateway"]
        return f"{per['gateway']:,.0f} µs{extra} (until all open: {only:,.0f})"

    for scenario, how in (("join-10k", "fresh"), ("join-10k-resume", "resuming")):
        h = hub(scenario)
        v = h.get("all_streaming_s") if h else None
        add(
            f"{scenario}: every client streaming within 2 s of the last connect ({how})",
            scenario,
            streaming,
            "–"
            if not h
            else ("no (not all streaming)" if v is None else _margin(v, 2.0, " s", digits=2)),
        )
    for scenario, how in (("join-10k", "fresh"), ("join-10k-resume", "resuming")):
        h = hub(scenario)
        add(
            f"{scenario}: ≤ 150 µs gateway CPU per join ({how})",
            scenario,
            per_join,
            "–" if not h else _margin(h["cpu_us_per_join"]["gateway"], 150, " µs", digits=0),
        )
    h = hub("idle-10k")
    add(
        "idle-10k: ≤ 10 KB resident per idle stream",
        "idle-10k",
        lambda r: f"{r['rss_kb_per_conn']:.1f} KB",
        "–" if not h else _margin(h["rss_kb_per_conn"], 10, " KB"),
    )

    def per_cpu(r: Row) -> str:
        return (
            f"{100 * r['delivered_fraction']:.1f}% delivered, "
            + (_f(1e6 / r["cpu_s_per_M"]) if r.get("cpu_s_per_M") else "–")
            + " /CPU s"
        )

    h, n = hub("fanout-1k-1000"), _by(rows, "fanout-1k-1000", "nchan")
    verdict = "–"
    if h and n and h.get("cpu_s_per_M") and n.get("cpu_s_per_M"):
        ratio = n["cpu_s_per_M"] / h["cpu_s_per_M"]
        whole = h["deliveries"] == h["expected_deliveries"] and h["lost"] == 0
        verdict = (
            f"{'yes' if ratio >= 10 and whole else 'no'} ({ratio:.1f}× Nchan's"
            + ("" if whole else "; not all delivered")
            + ")"
        )
    add(
        "fanout-1k-1000: all delivered, at ≥ 10× Nchan's deliveries per server CPU second",
        "fanout-1k-1000",
        per_cpu,
        verdict,
    )
    h = hub("storm-1k")

    def storm(r: Row) -> str:
        if r.get("all_caught_up_s") is None:
            return f"{r['caught_up']:,}/{r['clients']:,} caught up"
        return f"{r['all_caught_up_s']:.2f} s"

    add(
        "storm-1k: all caught up in < 1 s",
        "storm-1k",
        storm,
        "–"
        if not h
        else (
            "no (not all caught up)"
            if h.get("all_caught_up_s") is None
            else _margin(h["all_caught_up_s"], 1.0, " s", strict=True, digits=2)
        ),
    )
    return lines


PUBLISH_LABELS = {
    "redis": "Redis: EVALSHA of the hub's script, pipelined",
    "nchan": "Nchan's HTTP /pub, pipelined",
    "hub": "POST /publish, one event per request, pipelined",
    "hub-batch": "POST /publish, a JSON array of ≤ {batch} events per request",
    "mercure": "POST /.well-known/mercure, form-encoded, one update per request, pipelined",
}


def _published_through(r: Row) -> str:
    label = PUBLISH_LABELS.get(str(r["publish_mode"]), str(r["publish_mode"]))
    conns = r["publish_conns"]
    return label.format(batch=r["publish_batch"]) + f" ({conns} conn{'s' if conns > 1 else ''})"


def redis_us(r: Row) -> float | None:
    """Redis's CPU µs per delivery, for the systems that use Redis (not Nchan)."""
    return None if r["system"] == "nchan" else _per_delivery(r, "redis")


def sparse_table(rows: list[Row]) -> list[str]:
    """The many-topic live scenarios: how they were published, at what rate, CPU per delivery."""
    head = (
        "| Scenario | System | Published through | Publishes/s offered → achieved | Requests/s | "
        "Publish errors | Delivered | Lost | p50 / p99 ms | Gateway µs / delivery | "
        "nginx µs / delivery | Redis µs / delivery | Gateway + Redis µs / delivery |"
    )
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in rows:
        if r["kind"] != "live" or r["topics"] <= 1:
            continue
        if "error" in r or "skipped" in r:
            lines.append(
                f"| {r['scenario']} | {_label(r['system'])} | "
                + f"{'failed: ' + r['error'] if 'error' in r else 'n/a: ' + r['skipped']} |"
                + " |" * 10
            )
            continue
        offered = _f(r["offered_eps"]) if r["offered_eps"] else "max"
        lat = r["lat_ms"]
        lines.append(
            f"| {r['scenario']} | {_label(r['system'])} | {_published_through(r)} | "
            f"{offered} → {_f(r['published_eps'])} | "
            f"{_f(r['publish_requests_per_s']) if r['publish_mode'] != 'redis' else '–'} | "
            f"{r['publish_errors']:,} | {100 * r['delivered_fraction']:.1f}% | {r['lost']:,} | "
            f"{lat['p50']:.1f} / {lat['p99']:.1f} | {_f(gateway_us(r), 1)} | "
            f"{_f(_per_delivery(r, 'nginx'), 1)} | {_f(redis_us(r), 1)} | "
            f"{_f(gateway_redis_us(r), 1)} |"
        )
    return lines


MERCURE_TARGET = 1.2
"""The Mercure face's gateway CPU per delivery, at most this many times the native face's."""


def _side(r: Row | None, fn: Any) -> str:
    return fn(r) if r is not None else "–"


def _lat(r: Row) -> str:
    return f"{r['lat_ms']['p50']:.1f} / {r['lat_ms']['p99']:.1f}"


def _lost_dup(r: Row) -> str:
    return f"{r['lost']:,} / {r['dup']:,}"


def _delivered(r: Row) -> str:
    return f"{100 * r['delivered_fraction']:.1f}%"


def _publish_errors(r: Row) -> str:
    return f"{r['publish_errors']:,}"


def _gateway_redis(r: Row) -> str:
    return _f(gateway_redis_us(r))


def _published(r: Row) -> str:
    return _f(r["published_eps"])


def mercure_ratio(native: Row | None, mercure: Row | None) -> float | None:
    """The Mercure face's gateway CPU per delivery over the native face's."""
    nv = gateway_us(native) if native else None
    mv = gateway_us(mercure) if mercure else None
    return mv / nv if nv and mv is not None else None


def mercure_table(rows: list[Row]) -> list[str]:
    """The Mercure face against the native one, scenario by scenario, both published over
    HTTP one event per request: gateway CPU per delivery and its ratio, latency, losses."""
    head = (
        "| Scenario: Mercure ← native | Gateway µs / delivery: native | Mercure | "
        f"Mercure / native (target ≤ {MERCURE_TARGET:g}×) | "
        "Gateway + Redis µs / delivery: native → Mercure | "
        "Publishes/s offered: achieved native → Mercure | p50 / p99 ms: native | Mercure | "
        "Lost / dup: native | Mercure | Delivered: native | Mercure | "
        "Publish errors: native | Mercure |"
    )
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for mercure_name, native_name in MERCURE_COMPARED.items():
        sides = ((native_name, "hub"), (mercure_name, "hub-mercure"))
        if not any((r["scenario"], r["system"]) in sides for r in rows):
            continue
        n, m = _by(rows, native_name, "hub"), _by(rows, mercure_name, "hub-mercure")
        name = mercure_name if mercure_name == native_name else f"{mercure_name} ← {native_name}"
        ratio = mercure_ratio(n, m)
        if ratio is not None:
            met = "met" if ratio <= MERCURE_TARGET else "not met"
            verdict = f"{ratio:.2f}× ({met}: {100 * (ratio - 1):+.0f}%)"
        else:
            verdict = "– " + "; ".join(
                f"no {what}: {scenario} on {system} {_why_missing(rows, scenario, system)}"
                for what, r, (scenario, system) in zip(
                    ("native", "Mercure"), (n, m), sides, strict=True
                )
                if r is None or gateway_us(r) is None
            )
        lines.append(
            f"| {name} | {_us_cell(gateway_us(n) if n else None)} | "
            f"{_us_cell(gateway_us(m) if m else None)} | {verdict} | "
            f"{_side(n, _gateway_redis)} → {_side(m, _gateway_redis)} | "
            f"{_f((n or m or {}).get('offered_eps'))}: "
            f"{_side(n, _published)} → {_side(m, _published)} | "
            f"{_side(n, _lat)} | {_side(m, _lat)} | {_side(n, _lost_dup)} | "
            f"{_side(m, _lost_dup)} | {_side(n, _delivered)} | {_side(m, _delivered)} | "
            f"{_side(n, _publish_errors)} | {_side(m, _publish_errors)} |"
        )
    return lines


def _why_missing(rows: list[Row], scenario: str, system: str) -> str:
    for r in rows:
        if r["scenario"] == scenario and r["system"] == system:
            if "error" in r:
                return "failed: " + str(r["error"])
            return "skipped" if "skipped" in r else "delivered nothing"
    return "not run"


def join_table(rows: list[Row]) -> list[str]:
    head = (
        "| Scenario | System | Connected | Connects spread over | After the last connect: all open "
        "(200) | all have a first event | all caught up | Per client, connect → 200 p50 / p99 ms | "
        "connect → first event p50 / p99 ms | Server CPU µs / join, until all open | until all "
        "streaming | of which gateway | Redis µs / join | Lost | Dup | Errors | Reconnects | "
        "Listen queue overflows |"
    )
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in rows:
        if r["kind"] != "join":
            continue
        if "error" in r or "skipped" in r:
            lines.append(
                f"| {r['scenario']} | {_label(r['system'])} | "
                + f"{'failed: ' + r['error'] if 'error' in r else 'n/a: ' + r['skipped']} |"
                + " |" * 16
            )
            continue

        def s(v: float | None) -> str:
            return "not all" if v is None else f"{v:.2f} s"

        per, per_open = r["cpu_us_per_join"], r["cpu_us_per_join_open"]
        errors = r["http_errors"] + r["connect_errors"]
        lines.append(
            f"| {r['scenario']} | {_label(r['system'])} | {r['connected']:,} | "
            f"{r['connect_spread_s']:.2f} s | {s(r['all_open_s'])} | {s(r['all_first_event_s'])} | "
            f"{s(r['all_caught_up_s']) if r['missed'] else '–'} | "
            f"{r['open_ms']['p50']:.0f} / {r['open_ms']['p99']:.0f} | "
            f"{r['first_event_ms']['p50']:.0f} / {r['first_event_ms']['p99']:.0f} | "
            f"{per_open['server']:,.0f} | {per['server']:,.0f} | "
            f"{format(per['gateway'], ',.0f') if 'gateway' in per else '–'} | "
            f"{'–' if r['system'] == 'nchan' else format(per['redis'], ',.0f')} | "
            f"{r['lost']:,} | {r['dup']:,} | {errors:,} | {r['reconnects']:,} | "
            f"{r.get('listen_overflows', 0):,} |"
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
            f"{_f(r['offered_eps']) if r['offered_eps'] else 'max'} → {_f(r['published_eps'])} | "
            f"{_f(r['offered_dps']) if r['offered_dps'] else 'max'} | "
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
        "## Targets (issue 13)",
        "",
        "Gateway CPU: the hub's gateway process(es) only; gateway + Redis: with Redis's CPU "
        "(with 2 gateways, nginx's too); Nchan's server CPU: nginx's (Nchan uses no Redis). "
        "Nchan has no Redis path, so in sparse-10k it is published through its HTTP /pub "
        "while the hub is published into Redis; in every scenario Nchan's CPU includes "
        "taking its publishes.",
        "",
        *targets13(rows),
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
        "## Many topics: sparse events, publishing over HTTP",
        "",
        *sparse_table(rows),
        "",
        "## Joins: 10,000 clients at once, one topic each",
        "",
        *join_table(rows),
        "",
    ]
    mercure = mercure_table(rows)
    if len(mercure) > 2:
        out += ["## Mercure face against native", "", *MERCURE_INTRO, "", *mercure, ""]
    out += lb_section(rows)
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


MERCURE_INTRO = [
    "The same one gateway, measured through its two faces, each published over HTTP one event "
    "per request on 8 pipelined keep-alive connections: native (`hub`: `GET /events?topic=b<i>`, "
    "`POST /publish` with JSON) against Mercure (`hub-mercure`: `GET /.well-known/mercure?match="
    "https://bench.example/b<i>`, `POST /.well-known/mercure` with `topic=…&data=…` form-encoded). "
    "A fan-out `fanout-X` of the Mercure face is compared with `fanout-X-http` of the native one "
    "(the plain `fanout-X` publishes the native hub into Redis); the sparse topics with "
    "`sparse-http` on both (the Mercure face has no Redis path, so it has no `sparse-10k`). "
    "Gateway CPU includes taking the publishes on both sides. A topic's events always go over "
    "the same connection (so they stay in order), and the gateway answers a connection's "
    "requests one at a time: a one-topic fan-out is published on one connection, at the rate "
    "its round trips allow (*publishes/s*), whichever face. The target: the Mercure face "
    f"costs at most {MERCURE_TARGET:g}× the native face's gateway CPU per delivery.",
]


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
    "last event (or the 10 s drain ran out), read before the streams close; **cores busy** is CPU "
    "over wall time while the publisher ran. Redis CPU is given apart: for the baseline, Redis "
    "does the per-client fan-out itself.",
    "- **Client cores busy**: the load client's own CPU time over the same window (it also reports it "
    "with getrusage); with the server's it shows which side was the limit on this 2-core machine.",
    "- **RSS per connection** = (resident memory of the server's processes with N idle streams − before "
    "any stream) / N, read after the streams had been open 3 s.",
    "- **Reconnect storm**: one event is published and its ID taken as the resume cursor, then the "
    "missed events are published with no client connected; then all clients connect at once with "
    "`Last-Event-ID: <cursor>`, timed from the first connect until every client has the last event.",
    "- **Sparse topics** (`sparse-10k`, `sparse-http`, `sparse-http-batch`): 10,000 clients on "
    "10,000 topics, one each, 0.5 ev/s per topic (5,000 ev/s in all). `sparse-10k` publishes the "
    "hub into Redis (`EVALSHA`, as the other scenarios) and Nchan through its HTTP /pub (it has no "
    "Redis path); `sparse-http` publishes the hub through `POST /publish`, one event per request, "
    "pipelined on 8 keep-alive connections (uvicorn answers a connection's requests one at a time), "
    "and `sparse-http-batch` through `POST /publish` with JSON arrays of up to 100 events on 2 "
    "connections, a batch written once full or 20 ms after its first event (the event's time stamp "
    "is taken when its request is written, so that wait is not in the latency). Nchan, which has no "
    "batch form, is published through /pub in all three. **Publishes/s achieved** = events acked / "
    "(last answer − start); a batch answer's `failed` counts as errors.",
    "- **Gateway µs / delivery** = CPU of the gateway process(es) / deliveries; **gateway + Redis** "
    "adds Redis's CPU (and nginx's with 2 gateways); for Nchan it is nginx's CPU. The window is the "
    "live scenarios' (start of publishing until every client has the last event).",
    "- **`publish-http-max`** (and `-batch`): the same 10,000 attached clients, each topic's events "
    "published as fast as the system answers (`--rate 0 --count N`, N = 5 in a full run), a fixed "
    "window of requests outstanding per connection: the highest publish rate through "
    "`POST /publish` with the clients attached and every event delivered (Nchan: its /pub).",
    "- **Joins** (`join-10k`, `join-10k-resume`): 10,000 clients start connecting at once (the load "
    "client calls connect() for all of them without waiting), one per topic. **Last connect** = when "
    "the last of those connect() calls was made (a retried connection still counts from its first). "
    "*Fresh*: no cursor; when every stream has its 200 the harness publishes one event per topic "
    "(Redis for the hub, /pub for Nchan), so **all have a first event** includes that publishing "
    "(its own duration is in results.json). *Resume*: beforehand one event (seq 0) is published per "
    "topic and its ID written to a cursors file (the publisher reads it from each answer: the "
    "script's reply in Redis, Nchan's `last_message_id`), then 10 more per topic; each client "
    "connects with `Last-Event-ID: <its topic's cursor>` and is **caught up** when it has seq 10. "
    "Nchan and the nginx of two gateways listen with `backlog=4096`, a gateway with uvicorn's "
    "default (2048). "
    "**Streaming** = has its first event (fresh) or is caught up (resume). **CPU per join** = the "
    "server's CPU from before the first connect until all are streaming (until all have their 200, "
    "in the *until all open* column) / clients, read before any stream closes. **Reconnects**: "
    "streams the server closed before they were caught up, reopened at once by the load client "
    "(with `Last-Event-ID` if they had an event); **listen queue overflows**: the kernel's "
    "`TcpExt ListenOverflows` during the join (the whole machine's: connections dropped at a full "
    "accept queue, which the client's TCP retries a second or more later).",
    "- nginx in front of two gateways: 2 workers (one worker would need two descriptors per stream, "
    "past this machine's 20,000 open-file limit at 10,000 streams), `proxy_buffering off`, HTTP/1.1 "
    "upstream with up to 32 idle keep-alive connections (for `POST /publish`), "
    "`proxy_read_timeout 1h`. Nchan: 1 worker, `nchan_subscriber_first_message newest`.",
]


COLORS = {
    "hub": "tab:blue",
    "hub-mercure": "tab:purple",
    "hub-x2": "tab:cyan",
    "baseline": "tab:red",
    "nchan": "tab:green",
}
SPARSE = ("sparse-10k", "sparse-http", "sparse-http-batch")
JOINS = ("join-10k", "join-10k-resume")


def write_chart(path: Path, rows: list[Row]) -> bool:
    """Deliveries/s and p99 against clients (one topic), and bars of CPU µs per delivery in
    the sparse scenarios and per join, by system: what the run has of them."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    points = [
        r
        for r in rows
        if r["kind"] == "live"
        and r["topics"] == 1
        and "lat_ms" in r
        and r["scenario"] not in NATIVE_HTTP_COUNTERPARTS
    ]
    sparse = [r for r in rows if r["scenario"] in SPARSE and gateway_redis_us(r) is not None]
    joins = [r for r in rows if r["scenario"] in JOINS and "cpu_us_per_join" in r]
    if not (points or sparse or joins):
        return False
    top, bottom = bool(points), bool(sparse or joins)
    fig = plt.figure(figsize=(13, 6.2 * (top + bottom)))
    grid = fig.add_gridspec(top + bottom, 2)
    if top:
        _fanout_panels(fig, grid, points)
    if sparse:
        _cpu_bars(
            fig.add_subplot(grid[int(top), 0]),
            sparse,
            SPARSE,
            lambda r: (gateway_redis_us(r) or 0.0) - (redis_us(r) or 0.0),
            lambda r: redis_us(r) or 0.0,
            "CPU µs per delivery",
            "Sparse topics: CPU per delivery (hatched: Redis)",
        )
    if joins:
        _cpu_bars(
            fig.add_subplot(grid[int(top), 1]),
            joins,
            JOINS,
            lambda r: r["cpu_us_per_join"]["server"],
            lambda r: 0.0 if r["system"] == "nchan" else r["cpu_us_per_join"]["redis"],
            "CPU µs per join",
            "Joins: CPU per client until all stream (hatched: Redis)",
        )
    fig.tight_layout(rect=(0, 0.16 / (top + bottom) if top else 0, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _cpu_bars(
    ax: Any,
    rows: list[Row],
    scenarios: tuple[str, ...],
    own: Any,
    redis: Any,
    ylabel: str,
    title: str,
) -> None:
    """Grouped bars, one group per scenario, one bar per system: its own CPU, Redis's on top."""
    names = [n for n in scenarios if any(r["scenario"] == n for r in rows)]
    systems = list(dict.fromkeys(r["system"] for r in rows))
    width = 0.8 / max(1, len(systems))
    for i, system in enumerate(systems):
        xs: list[float] = []
        mine: list[float] = []
        theirs: list[float] = []
        for x, name in enumerate(names):
            r = next((r for r in rows if r["scenario"] == name and r["system"] == system), None)
            if r is None:
                continue
            xs.append(x - 0.4 + width * (i + 0.5))
            mine.append(own(r))
            theirs.append(redis(r))
        color = COLORS.get(system)
        ax.bar(xs, mine, width, color=color, label=_label(system))
        ax.bar(xs, theirs, width, bottom=mine, color=color, alpha=0.45, hatch="//")
        for at, a, b in zip(xs, mine, theirs, strict=True):
            ax.annotate(f"{a + b:.0f}", (at, a + b), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), names)
    ax.set(ylabel=ylabel, title=title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, frameon=False)


def _fanout_panels(fig: Any, grid: Any, points: list[Row]) -> None:
    import matplotlib.ticker

    ax1, ax2 = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
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
            kw = dict(color=COLORS.get(system), linestyle=styles[i % 4], marker="o", label=label)
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


def command_line() -> str:
    args = [re.sub(r"^.*/(bench/\w+\.py)$", r"\1", a) for a in sys.argv]
    return "python " + " ".join(args)
