"""What TLS and HTTP/2 cost nginx per delivered event, for a broadcast: many clients, one topic.

    .venv/bin/python bench/lb_protocols.py            # 1,000 clients, 50 ev/s, 8 s × 5 rounds: ~5 min
    .venv/bin/python bench/lb_protocols.py --quick    # 20 clients, 20 ev/s, 1.5 s, 1 round: ~25 s

Needs nginx, h2load (Debian: nghttp2-client) and redis-server. One gateway
(`python -m hub`, one process) for the run; in front of it, for each measurement, a fresh
nginx with the deployment's configuration (deploy/nginx.conf.template: one worker,
`proxy_buffering off`) and a TLS listener with HTTP/2 beside its plain one
(bench/lb_nginx.py). h2load holds the clients' streams on `GET /events?topic=b0` through it:

- `h1`: plain HTTP/1.1, one connection per client (`h2load --h1`);
- `h1-tls`: HTTP/1.1 over TLS, one connection per client;
- `h2-tls`: HTTP/2 over TLS, `--streams` streams per connection (`-c clients/streams -m streams`);
- `h2-tls-1`: HTTP/2 over TLS, one stream per connection (a browser with one tab open).

Once every stream is open and nothing is in flight, the harness publishes `--rate` events/s
for `--duration` s to the topic (the publisher library, into Redis), and reads from /proc the
CPU of nginx's worker, of the gateway and of h2load from the first publish until every event
has gone through (bench/lb_measure.py). Deliveries = events × clients, checked twice: the
gateway's count of frames handed out, and h2load's response bytes against the exact frames
of the events published (their IDs and data) plus what each stream got before them.

The machine is shared, and CPU per delivery moves with how busy it is (a slower CPU, more or
fewer frames per wake-up): the protocols take turns, `--rounds` times (each round starting
one further on), and each figure is the median of its rounds, the ratio to HTTP/1.1 the
median of the rounds' ratios (each against the HTTP/1.1 measurement of its own round). The
gateway does the same work whatever the clients speak: its spread shows the noise, and
nginx's CPU as a share of the gateway's in the same window (a second ratio) cancels much of
it.

The table goes to stdout and <out>/LB_PROTOCOLS.md, every figure to <out>/results.json and
the processes' output to <out>/logs/ (<out> is bench/out/lb-protocols). `bench/run.py` runs the
same measurement for its RESULTS.md section *nginx in front: TLS and HTTP/2*.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import repository  # noqa: F401  (the repository's root on sys.path, for tests.processes)
from h2load import version as h2load_version
from lb_measure import Plan, Protocol, gateway_counters, measure_once
from lb_nginx import load_balancer
from lb_report import lb_markdown, lb_table
from native import BenchError
from report import command_line, load_average, machine, versions
from systems import RedisServer, RunContext, hub

from tests.processes import MissingTool, WaitTimeout, require_tool, wait_until

HERE = Path(__file__).resolve().parent
Row = dict[str, Any]
SCENARIO = "lb-protocols"
TOOLS = ("nginx", "h2load", "redis-server")
GATEWAY_ENV = {
    # A heartbeat would add bytes that are no delivery to some streams and not to others.
    "HUB_HEARTBEAT_SECONDS": "3600",
}
PROTOCOLS = {
    p.key: p
    for p in (
        Protocol("h1", "HTTP/1.1", tls=False, http2=False, multiplexed=False),
        Protocol("h1-tls", "HTTP/1.1 + TLS", tls=True, http2=False, multiplexed=False),
        Protocol("h2-tls", "HTTP/2 + TLS, multiplexed", tls=True, http2=True, multiplexed=True),
        Protocol(
            "h2-tls-1", "HTTP/2 + TLS, 1 stream/conn", tls=True, http2=True, multiplexed=False
        ),
    )
}
BASELINE = "h1"
"""The protocol every other one's nginx CPU per delivery is compared with."""
QUICK = Plan(
    clients=20,
    rate=20.0,
    duration=1.5,
    streams=10,
    rounds=1,
    connect_seconds=1.5,
    drain_seconds=1.5,
)
FAILURES = (BenchError, WaitTimeout, OSError)
"""A measurement that fails: an error in its round, not the end of the run."""


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def _per_gateway(figures: dict[str, Any]) -> float | None:
    """nginx's CPU over the gateway's in the same window: the gateway does the same work
    whatever the clients speak, so this cancels much of what the machine's other load does
    to both (a slower CPU, fewer frames per wake-up)."""
    cpu = figures.get("cpu_s") or {}
    return cpu["nginx"] / cpu["gateway"] if cpu.get("gateway") else None


def _spread(values: list[float]) -> list[float]:
    return [min(values), max(values)]


def summarize(protocol: Protocol, rounds: list[dict[str, Any]]) -> Row:
    """The protocol's row: its rounds, and the medians of those that worked."""
    row: Row = {
        "scenario": SCENARIO,
        "system": protocol.key,
        "kind": "lb",
        "protocol": protocol.label,
        "rounds": rounds,
    }
    ok = [r for r in rounds if "error" not in r]
    if not ok:
        row["error"] = rounds[0]["error"] if rounds else "not measured"
        return row
    last = ok[-1]
    for key in ("application_protocol", "tls", "clients", "connections", "streams_per_connection"):
        row[key] = last[key]
    for key in ("events", "expected_deliveries", "h2load_command"):
        row[key] = last[key]
    row["deliveries"] = min(r["deliveries"] for r in ok)
    row["all_delivered"] = len(ok) == len(rounds) and all(r["all_delivered"] for r in ok)
    row["cores"] = {k: _median([r["cores"][k] for r in ok]) for k in ("nginx", "gateway", "h2load")}
    row["nginx_rss_kb_per_client"] = _median([r["nginx_rss_kb_per_client"] for r in ok])
    measured = [r["cpu_us_per_delivery"] for r in ok if r["cpu_us_per_delivery"]]
    row["cpu_us_per_delivery"] = None
    if measured:
        row["cpu_us_per_delivery"] = {
            k: _median([m[k] for m in measured]) for k in ("nginx", "gateway", "h2load")
        }
        row["nginx_us_range"] = _spread([m["nginx"] for m in measured])
        row["gateway_us_range"] = _spread([m["gateway"] for m in measured])
    normalized = [v for v in map(_per_gateway, ok) if v is not None]
    if normalized:
        row["nginx_per_gateway_cpu"] = _median(normalized)
    if len(ok) < len(rounds):
        row["failed_rounds"] = len(rounds) - len(ok)
    return row


def _paired_ratios(
    row: Row, base: Row, figure: Callable[[dict[str, Any]], float | None]
) -> list[float]:
    """`figure` of each of the row's rounds over that of the baseline's same round."""
    ratios = []
    for mine, theirs in zip(row["rounds"], base["rounds"], strict=False):
        ours, h1 = figure(mine), figure(theirs)
        if ours is not None and h1:
            ratios.append(ours / h1)
    return ratios


def _nginx_us(figures: dict[str, Any]) -> float | None:
    per = figures.get("cpu_us_per_delivery")
    return per["nginx"] if per else None


def with_ratios(rows: list[Row]) -> list[Row]:
    """Each row's nginx CPU per delivery over plain HTTP/1.1's, as measured and as a share of
    the gateway's CPU: the median over the rounds of each round's ratio to the HTTP/1.1
    measurement of the same round."""
    base = next((r for r in rows if r["system"] == BASELINE), None)
    if base is None:
        return rows
    for row in rows:
        for name, figure in (
            ("nginx_ratio_vs_h1", _nginx_us),
            ("normalized_ratio_vs_h1", _per_gateway),
        ):
            ratios = _paired_ratios(row, base, figure)
            if ratios:
                row[name] = round(statistics.median(ratios), 2)
                row[name.replace("_ratio_", "_ratios_")] = [round(r, 2) for r in ratios]
    return rows


def turn(protocols: tuple[str, ...], n: int) -> tuple[str, ...]:
    """Round n's order: each round starts one further on, so no protocol always goes first."""
    k = n % len(protocols)
    return protocols[k:] + protocols[:k]


def measure_protocols(plan: Plan, redis: RedisServer, out: Path, run_id: str) -> list[Row]:
    """Every protocol of the plan, `plan.rounds` times in turn, against one gateway and a fresh
    nginx each time; a row per protocol."""
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    rounds: dict[str, list[dict[str, Any]]] = {key: [] for key in plan.protocols}
    with open(logs / f"{SCENARIO}.log", "wb") as log:
        ctx = RunContext(redis, f"{run_id}:lb:", log, out, env=GATEWAY_ENV)
        try:
            h2load = require_tool("h2load")
            with hub(ctx) as ep:
                for n in range(plan.rounds):
                    for key in turn(plan.protocols, n):
                        protocol = PROTOCOLS[key]
                        started = time.monotonic()
                        try:
                            # the last round's streams are gone before this one's open
                            wait_until(
                                lambda: gateway_counters(ep.port).connected == 0,
                                30,
                                "the last round's streams to close",
                            )
                            with load_balancer(ctx, ep.port) as lb:
                                figures = measure_once(
                                    protocol, plan, ep, lb, redis.url, ctx.prefix, h2load, log
                                )
                        except FAILURES as exc:
                            figures = {"error": str(exc).splitlines()[0][:300]}
                        figures["round"] = n + 1
                        figures["wall_s"] = round(time.monotonic() - started, 1)
                        rounds[key].append(figures)
                        print(summary(protocol.key, figures), file=sys.stderr, flush=True)
        except FAILURES as exc:
            error = {"error": str(exc).splitlines()[0][:300]}
            for key in plan.protocols:
                rounds[key].append(error)
    return with_ratios([summarize(PROTOCOLS[k], rounds[k]) for k in plan.protocols])


def summary(key: str, figures: dict[str, Any]) -> str:
    head = f"{SCENARIO} round {figures.get('round', '?')} {key:>9}: "
    if "error" in figures:
        return head + "ERROR " + str(figures["error"])
    per = figures["cpu_us_per_delivery"] or {}
    tls = f", {figures['tls']}" if figures["tls"] else ""
    return head + (
        f"{figures['clients']} clients on {figures['connections']} conns "
        f"({figures['application_protocol']}{tls}), "
        f"{figures['deliveries']}/{figures['expected_deliveries']} deliveries "
        f"({'all' if figures['all_delivered'] else 'NOT all'} delivered), µs/delivery: "
        + ", ".join(f"{k} {v:.2f}" for k, v in per.items())
        + "; cores: "
        + ", ".join(f"{k} {v:.2f}" for k, v in figures["cores"].items())
    )


def missing_tools() -> list[str]:
    missing = []
    for tool in TOOLS:
        try:
            require_tool(tool)
        except MissingTool:
            missing.append(tool)
    return missing


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    full = Plan()
    p.add_argument("--quick", action="store_true", help="20 clients, 20 ev/s, 1.5 s, one round")
    p.add_argument("--clients", type=int, help=f"streams on the topic ({full.clients})")
    p.add_argument("--rate", type=float, help=f"events/s published ({full.rate:g})")
    p.add_argument("--duration", type=float, help=f"seconds of publishing ({full.duration:g})")
    p.add_argument("--streams", type=int, help=f"HTTP/2 streams per connection ({full.streams})")
    p.add_argument("--rounds", type=int, help=f"measurements of each protocol ({full.rounds})")
    p.add_argument("--protocols", default=",".join(PROTOCOLS), help=", ".join(PROTOCOLS))
    p.add_argument("--out", type=Path, default=HERE / "out" / SCENARIO)
    return p.parse_args(argv)


def plan_of(args: argparse.Namespace) -> Plan:
    """The plan the command line asks for (SystemExit if it makes no sense)."""
    plan = QUICK if args.quick else Plan()
    keys = tuple(k.strip() for k in args.protocols.split(",") if k.strip())
    unknown = [k for k in keys if k not in PROTOCOLS]
    if unknown or not keys:
        raise SystemExit(f"lb_protocols.py: unknown protocols {unknown}; known: {list(PROTOCOLS)}")
    changes = {k: getattr(args, k) for k in ("clients", "rate", "duration", "streams", "rounds")}
    plan = replace(plan, protocols=keys, **{k: v for k, v in changes.items() if v is not None})
    if min(plan.clients, plan.rounds) < 1 or min(plan.rate, plan.duration) <= 0:
        raise SystemExit("lb_protocols.py: clients, rate, duration and rounds must be positive")
    if not 1 <= plan.streams <= 128 or plan.clients % min(plan.streams, plan.clients):
        raise SystemExit("lb_protocols.py: --streams 1–128, and --clients a multiple of it")
    return plan


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    plan = plan_of(args)
    missing = missing_tools()
    if missing:
        print(
            f"lb_protocols.py: missing {', '.join(missing)} (Debian: nginx-light, "
            "nghttp2-client, redis-server)",
            file=sys.stderr,
        )
        return 2
    from run import raise_open_files  # not at the top: run.py imports this module

    raise_open_files()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started, t0 = datetime.now(timezone.utc), time.monotonic()
    load_start = load_average()
    with open(out / "redis.log", "wb") as redis_log, RedisServer(redis_log) as redis:
        rows = measure_protocols(plan, redis, out, "lb" + uuid.uuid4().hex[:6])
    meta = {
        "command": command_line(),
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "finished": datetime.now(timezone.utc).strftime("%H:%M UTC"),
        "wall_min": (time.monotonic() - t0) / 60,
        "machine": machine(),
        "versions": {**versions(), "h2load": h2load_version(require_tool("h2load"))},
        "load_start": load_start,
        "load_end": load_average(),
        "lb_plan": asdict(plan),
    }
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (out / "LB_PROTOCOLS.md").write_text(lb_markdown(rows, meta))
    print("\n".join(lb_table(rows)))
    print(f"bench: wrote {out / 'LB_PROTOCOLS.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
