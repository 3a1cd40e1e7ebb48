"""Publish throughput against the number of Redis Cluster primaries, side by side in one run.

    python bench/publish_scaling.py                    # about 3 minutes
    python bench/publish_scaling.py --duration 5 --repeat 3 --results-dir bench/out

Each layout is a fresh Redis Cluster of real `redis-server` processes (started by
the same helper as the tests, `tests.processes.ClusterProcesses`), with 3,000 topics spread
over its slots:

- **pipelined**: `bench/publisher.c` processes (the same number for every layout) run
  the hub's publish script flat out, each on the primary that owns its topics, with
  `SPUBLISH`: the most the primaries can take.
- **library**: one Python process publishes with `AsyncPublisher` (the hub's own
  publisher, routing by slot) from many concurrent tasks: publishes per second and the
  latency of one publish (p50, p99). In the layout with replicas it waits for one
  (`HUB_PUBLISH_WAIT_REPLICAS=1`), the setting that makes an acknowledged event survive
  a failover.

It writes PUBLISH_SCALING.md into --results-dir (bench/ by default) and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import repository  # noqa: F401  (the repository's root on sys.path, for tests.processes)
from native import BenchError, build, publish
from redis.crc import key_slot
from report import command_line, load_average, machine

from hub.config import Settings
from hub.publish import PUBLISH_SCRIPT
from hub.topics import Keys
from publisher.client import AsyncPublisher
from tests.processes import ClusterProcesses

HERE = Path(__file__).resolve().parent

PREFIX = "scaling:"
TOPICS = 3000
PUBLISHERS = 3
"""publisher.c processes in every layout, so only the number of primaries changes."""


@dataclass(frozen=True)
class Layout:
    name: str
    primaries: int
    replicas: int

    @property
    def wait_replicas(self) -> int:
        return 1 if self.replicas else 0


LAYOUTS = [
    Layout("1 primary", 1, 0),
    Layout("3 primaries", 3, 0),
    Layout("3 primaries + 3 replicas", 3, 1),
]


def owners(cluster: ClusterProcesses, topics: list[str]) -> dict[int, list[str]]:
    """Topics grouped by the port of the primary that owns each."""
    keys = Keys(PREFIX)
    by_slot = {
        slot: port for start, end, port in cluster.slot_owners() for slot in range(start, end + 1)
    }
    grouped: dict[int, list[str]] = {}
    for topic in topics:
        grouped.setdefault(by_slot[key_slot(keys.stream(topic).encode())], []).append(topic)
    return grouped


def pipelined(
    cluster: ClusterProcesses, exe: Path, grouped: dict[int, list[str]], duration: float, work: Path
) -> float:
    """Publishes per second of PUBLISHERS publisher.c processes, each on one primary's topics."""
    keys = Keys(PREFIX)
    shas = {}
    for port in grouped:
        server = next(s for s in cluster.servers if s.port == port)
        with server.client() as client:
            shas[port] = client.script_load(PUBLISH_SCRIPT)
    ports = sorted(grouped)
    jobs = []
    for n in range(PUBLISHERS):
        port = ports[n % len(ports)]
        sharing = [i for i in range(PUBLISHERS) if ports[i % len(ports)] == port]
        mine = grouped[port][sharing.index(n) :: len(sharing)]
        targets = work / f"targets-{n}.txt"
        targets.write_text("".join(f"{keys.stream(t)} {keys.channel(t)}\n" for t in mine))
        jobs.append(
            dict(
                exe=exe,
                mode="redis",
                port=port,
                targets=targets,
                rate=0,
                duration=duration,
                sha=shas[port],
                maxlen=1000,
                conns=2,
                window=256,
                announce="SPUBLISH",
            )
        )
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda job: publish(**job), jobs))
    errors = sum(int(r["errors"]) for r in results)
    if errors:
        raise BenchError(f"{errors} publishes failed: {results[0]['first_error']}")
    return sum(float(r["achieved_per_s"]) for r in results)


async def library(
    url: str, wait_replicas: int, duration: float, tasks: int = 64
) -> dict[str, float]:
    """AsyncPublisher from `tasks` concurrent tasks: publishes/s and latency percentiles (ms)."""
    settings = Settings(
        redis_url=url, key_prefix=PREFIX, retention_maxlen=1000, publish_wait_replicas=wait_replicas
    )
    latencies: list[float] = []
    async with AsyncPublisher(settings) as hub:
        deadline = time.monotonic() + duration

        async def worker(n: int) -> None:
            k = n
            while time.monotonic() < deadline:
                started = time.perf_counter()
                await hub.publish(f"bench-{k % TOPICS}", '{"seq":1}')
                latencies.append(time.perf_counter() - started)
                k += tasks

        started = time.monotonic()
        await asyncio.gather(*(worker(n) for n in range(tasks)))
        elapsed = time.monotonic() - started
    cuts = statistics.quantiles(latencies, n=100)
    return {"per_s": len(latencies) / elapsed, "p50_ms": cuts[49] * 1000, "p99_ms": cuts[98] * 1000}


def measure(layout: Layout, exe: Path, duration: float, repeat: int, work: Path) -> dict[str, Any]:
    topics = [f"bench-{n}" for n in range(TOPICS)]
    with ClusterProcesses(layout.primaries, layout.replicas) as cluster:
        grouped = owners(cluster, topics)
        runs = [pipelined(cluster, exe, grouped, duration, work) for _ in range(repeat)]
        lib = asyncio.run(library(cluster.url, layout.wait_replicas, duration))
    row = {
        "layout": layout.name,
        "primaries": layout.primaries,
        "runs": runs,
        "pipelined": statistics.median(runs),
        "library": lib,
        "wait": layout.wait_replicas,
    }
    print(
        f"{layout.name:>26}: pipelined {row['pipelined']:,.0f}/s "
        f"(runs {', '.join(f'{r:,.0f}' for r in runs)}); "
        f"library {lib['per_s']:,.0f}/s p50 {lib['p50_ms']:.2f} ms p99 {lib['p99_ms']:.2f} ms",
        file=sys.stderr,
        flush=True,
    )
    return row


def markdown(
    rows: list[dict[str, Any]], duration: float, repeat: int, load: tuple[str, str]
) -> str:
    base = rows[0]
    lines = [
        "# Publish throughput by number of Redis Cluster primaries",
        "",
        f"`{command_line()}` on {', '.join(f'{k} {v}' for k, v in machine().items())}; "
        f"load average {load[0]} before, {load[1]} after.",
        f"{duration:g} s per measurement; pipelined figures are the median of {repeat} runs.",
        "",
        "| Layout | Pipelined publishes/s | × 1 primary | Library publishes/s | × 1 primary | "
        "Library p50 | Library p99 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lib = row["library"]
        wait = " (WAIT 1)" if row["wait"] else ""
        lines.append(
            f"| {row['layout']} | {row['pipelined']:,.0f} "
            f"| {row['pipelined'] / base['pipelined']:.2f}× "
            f"| {lib['per_s']:,.0f}{wait} | {lib['per_s'] / base['library']['per_s']:.2f}× "
            f"| {lib['p50_ms']:.2f} ms | {lib['p99_ms']:.2f} ms |"
        )
    lines += [
        "",
        f"Pipelined: {PUBLISHERS} `bench/publisher.c` processes in every layout, "
        "2 connections each, 256 publishes in flight per connection, each on the primary that "
        "owns its topics. Library: "
        "one Python process, 64 concurrent `AsyncPublisher.publish` calls. All servers and "
        "publishers share the machine's cores.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    p.add_argument("--repeat", type=int, default=3, help="pipelined runs per layout (median kept)")
    p.add_argument("--out", type=Path, default=HERE / "out", help="scratch directory")
    p.add_argument("--results-dir", type=Path, default=HERE, help="where PUBLISH_SCALING.md goes")
    args = p.parse_args(argv)
    if args.duration <= 0 or args.repeat < 1:
        raise SystemExit("publish_scaling.py: --duration must be positive, --repeat at least 1")
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        tools = build(HERE / "build")
    except BenchError as exc:
        print(f"publish_scaling.py: {exc}", file=sys.stderr)
        return 2
    before = load_average()
    rows = [
        measure(layout, tools.publisher, args.duration, args.repeat, args.out) for layout in LAYOUTS
    ]
    text = markdown(rows, args.duration, args.repeat, (before, load_average()))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "PUBLISH_SCALING.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
