"""Run the benchmark: every scenario against every system, side by side, in one run.

    python bench/run.py                      # everything (about 25 minutes)
    python bench/run.py --quick              # a smoke run: a tenth of the clients, 2 s each
    python bench/run.py --systems hub,nchan --scenarios fanout-1k-1000 --profile fanout-1k-1000
    python bench/run.py --systems hub,hub-mercure --scenarios fanout-1k-1000,fanout-1k-1000-http,sparse-http
    python bench/run.py --scenarios lb-protocols   # only what TLS and HTTP/2 cost nginx

A full run writes bench/RESULTS.md and bench/chart.png; a --quick run, or one that picks
systems or scenarios, writes them to bench/out/ unless --results-dir says otherwise. The
figures of every measurement also go to <out>/results.json. The scenario `lb-protocols` is
bench/lb_protocols.py (nginx's CPU per delivery over plain HTTP/1.1, TLS and HTTP/2): it runs
when no --scenarios are given or when it is named, whatever --systems says.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
import uuid
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from h2load import version as h2load_version
from lb_measure import Plan as LbPlan
from lb_protocols import QUICK as LB_QUICK
from lb_protocols import SCENARIO as LB_SCENARIO
from lb_protocols import TOOLS as LB_TOOLS
from lb_protocols import measure_protocols
from measure import Options, measure
from native import BenchError, build
from report import command_line, load_average, machine, versions, write_chart, write_markdown
from scenarios import default_scenarios, quick
from systems import SYSTEMS, RedisServer

HERE = Path(__file__).resolve().parent

NEEDS = {
    "hub": ["redis-server"],
    "hub-mercure": ["redis-server"],
    "hub-x2": ["redis-server", "nginx"],
    "baseline": ["redis-server"],
    "nchan": ["nginx"],
}


def _names(text: str, known: list[str], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"run.py: unknown {what} {', '.join(unknown)}; known: {', '.join(known)}")
    return names


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="a tenth of the clients, 2 s of publishing")
    p.add_argument(
        "--systems", default=",".join(SYSTEMS), help="comma-separated: " + ", ".join(SYSTEMS)
    )
    p.add_argument("--scenarios", default="", help="comma-separated scenario names (default: all)")
    p.add_argument(
        "--duration", type=float, default=10.0, help="seconds of publishing per measurement"
    )
    p.add_argument("--threads", type=int, default=2, help="load client threads")
    p.add_argument(
        "--coalesce-us", type=int, default=1000, help="load client: least µs between reads"
    )
    p.add_argument(
        "--profile", default="", help="scenarios in which to profile the hub with py-spy"
    )
    p.add_argument("--out", type=Path, default=HERE / "out", help="scratch: logs, results.json")
    p.add_argument(
        "--results-dir", type=Path, default=None, help="where RESULTS.md and chart.png go"
    )
    p.add_argument(
        "--report-from",
        type=Path,
        default=None,
        help="only write RESULTS.md and the chart again from a results.json",
    )
    args = p.parse_args(argv)
    if args.duration <= 0 or args.threads < 1 or args.coalesce_us < 0:
        raise SystemExit(
            "run.py: --duration and --threads must be positive, --coalesce-us not negative"
        )
    return args


def raise_open_files() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def summary_line(row: dict[str, Any]) -> str:
    head = f"{row['scenario']:>16} {row['system']:>8}: "
    if "error" in row:
        return head + "ERROR " + str(row["error"])
    if "skipped" in row:
        return head + "skipped: " + str(row["skipped"])
    if row["kind"] == "live":
        offered = f"{row['offered_eps']:.0f}" if row["offered_eps"] else "max"
        per = row.get("cpu_us_per_delivery") or {}
        split = ", ".join(f"{k} {v:.1f}" for k, v in per.items() if k not in ("server",))
        return head + (
            f"{row['connected']} conns, {row['published_eps']:.0f}/{offered} ev/s "
            f"({row['publish_mode']}, {row['publish_errors']} errors), "
            f"{row['achieved_dps']:.0f}/{row['offered_dps'] or 0:.0f} del/s, "
            f"p50 {row['lat_ms']['p50']:.1f} p99 {row['lat_ms']['p99']:.1f} "
            f"max {row['lat_ms']['max']:.1f} ms, lost {row['lost']} dup {row['dup']}, "
            f"cpu {row['server_cores']:.2f} cores {row['cpu_s_per_M']} s/M, "
            f"client {row['client_cores']:.2f} cores; µs/delivery: {split}"
        )
    if row["kind"] == "idle":
        return head + f"{row['connected']} conns, {row['rss_kb_per_conn']:.1f} KB/conn"
    if row["kind"] == "join":
        return head + (
            f"{row['connected']} conns; after the last connect: all open {row['all_open_s']} s, "
            f"all first event {row['all_first_event_s']} s"
            + (f", all caught up {row['all_caught_up_s']} s" if row["missed"] else "")
            + f"; lost {row['lost']} dup {row['dup']}, µs/join: "
            + ", ".join(f"{k} {v:.0f}" for k, v in row["cpu_us_per_join"].items())
            + " (open only: "
            + ", ".join(f"{k} {v:.0f}" for k, v in row["cpu_us_per_join_open"].items())
            + ")"
        )
    return head + (
        f"{row['caught_up']}/{row['clients']} caught up, all after {row['all_caught_up_s']} s, "
        f"lost {row['lost']} dup {row['dup']}"
    )


def write_report(results_dir: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    chart = results_dir / "chart.png"
    has_chart = write_chart(chart, rows)
    write_markdown(results_dir / "RESULTS.md", rows, meta, chart if has_chart else None)
    print(
        f"bench: wrote {results_dir / 'RESULTS.md'}" + (f" and {chart}" if has_chart else ""),
        file=sys.stderr,
    )


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.report_from is not None:
        saved = json.loads(args.report_from.read_text())
        write_report(args.results_dir or args.report_from.parent, saved["rows"], saved["meta"])
        return 0
    all_scenarios = default_scenarios(args.duration)
    systems = _names(args.systems, list(SYSTEMS), "system")
    chosen = (
        _names(args.scenarios, [s.name for s in all_scenarios] + [LB_SCENARIO], "scenario")
        if args.scenarios
        else []
    )
    scenarios = [s for s in all_scenarios if not chosen or s.name in chosen]
    if args.quick:
        scenarios = [quick(s) for s in scenarios]
    lb_plan = None
    if not chosen or LB_SCENARIO in chosen:
        lb_plan = LB_QUICK if args.quick else LbPlan()
    needs = {tool for s in systems for tool in NEEDS[s]} if scenarios else set()
    needs |= set(LB_TOOLS) if lb_plan else set()
    missing = sorted(tool for tool in needs if shutil.which(tool) is None)
    if missing:
        print(
            f"run.py: missing {', '.join(missing)} (Debian: redis-server, nginx-light, "
            "libnginx-mod-nchan, nghttp2-client)",
            file=sys.stderr,
        )
        return 2
    partial = args.quick or chosen or set(systems) != set(SYSTEMS)
    results_dir: Path = args.results_dir or (args.out if partial else HERE)
    args.out.mkdir(parents=True, exist_ok=True)
    results_dir.mkdir(parents=True, exist_ok=True)
    fds = raise_open_files()
    try:
        tools = build(HERE / "build")
    except BenchError as exc:
        print(f"run.py: {exc}", file=sys.stderr)
        return 2
    opts = Options(
        tools=tools,
        out=args.out,
        threads=args.threads,
        coalesce_us=args.coalesce_us,
        drain=5.0 if args.quick else 10.0,
        profile=frozenset(n.strip() for n in args.profile.split(",") if n.strip()),
    )
    run_id = "bench" + uuid.uuid4().hex[:6]
    started, t0 = datetime.now(timezone.utc), time.monotonic()
    load_start, load_samples = load_average(), []
    print(
        f"bench: {len(scenarios)} scenarios × {len(systems)} systems, open-file limit {fds}, "
        f"load {load_start}",
        file=sys.stderr,
    )
    rows = []
    with open(args.out / "redis.log", "wb") as redis_log, RedisServer(redis_log) as redis:
        for scenario in scenarios:
            for system in systems:
                load_samples.append(load_average().split()[0])
                row = measure(scenario, system, redis, opts, run_id)
                rows.append(row)
                print(summary_line(row), file=sys.stderr, flush=True)
        if lb_plan is not None:
            rows += measure_protocols(lb_plan, redis, args.out, run_id)
    meta = {
        "command": command_line(),
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "finished": datetime.now(timezone.utc).strftime("%H:%M UTC"),
        "wall_min": (time.monotonic() - t0) / 60,
        "machine": machine(),
        "versions": versions(),
        "load_start": load_start,
        "load_end": load_average(),
        "load_samples": " ".join(load_samples),
        "quick": args.quick,
        "coalesce_us": args.coalesce_us,
        "threads": args.threads,
    }
    if lb_plan is not None:
        meta["versions"]["h2load"] = h2load_version(shutil.which("h2load") or "h2load")
        meta["lb_plan"] = asdict(lb_plan)
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    write_report(results_dir, rows, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
