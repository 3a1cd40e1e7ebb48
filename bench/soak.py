"""Soak: well-behaved clients beside hostile ones, against one gateway reached directly.

    .venv/bin/python bench/soak.py            # two phases of 60 s of publishing: about 3 minutes
    .venv/bin/python bench/soak.py --quick    # a tenth of the clients, 3 s each: about 15 s

Two phases, each against a fresh gateway (`python -m hub`, one process on 127.0.0.1, no
nginx) and the same private redis-server, with HUB_PUBLISH_TOKEN set and
HUB_MAX_STREAMS_PER_CLIENT=0 (every client comes from 127.0.0.1):

1. baseline: 1,000 good clients (bench/loadclient.c) on one topic, 100 events/s for 60 s
   (bench/publisher.c, the hub's publish script), as bench/run.py measures a fan-out;
2. attacked: the same, beside 2,000 hostile clients (bench/hostile.py, a process of its
   own), 500 of each kind: never-reading replays of a topic of 1,000 events of 10 KB from
   `0-0`, slowloris headers, oversized `POST /publish` bodies with a bad token, and headers
   that never end. Each is reconnected when the gateway drops it, for the whole phase.

Targets, each printed PASS or FAIL (the exit status is 0 either way, it is a benchmark):
the good clients lose nothing and get nothing twice; their p99 latency under attack is at
most twice the baseline's; the gateway's peak resident memory stays under a bound of what
a gateway doing its job needs (279 MiB for a full run: see RSS_IDLE_MIB below).

The Markdown table goes to stdout and to <out>/SOAK.md, every figure to <out>/results.json,
the gateway's and the hostile clients' logs to <out>/logs/ (<out> is bench/out/soak).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import IO, Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from hostile import KINDS, HostileClients  # noqa: E402
from measure import Options, live  # noqa: E402
from native import BenchError, Tools, build  # noqa: E402
from procstat import alive, open_files, peak_rss_bytes, rss_bytes  # noqa: E402
from report import command_line, load_average, machine, versions  # noqa: E402
from run import raise_open_files  # noqa: E402
from scenarios import Scenario  # noqa: E402
from systems import Endpoint, RedisServer, RunContext, hub  # noqa: E402

from hub.client_connection import REPLAY_WINDOW  # noqa: E402
from hub.config import Settings  # noqa: E402
from hub.gateway import REPLAY_PAGE_BYTES  # noqa: E402
from publisher.client import AsyncPublisher  # noqa: E402

Row = dict[str, Any]
PUBLISH_TOKEN = "soak-publish-token"
GATEWAY_ENV = {"HUB_PUBLISH_TOKEN": PUBLISH_TOKEN, "HUB_MAX_STREAMS_PER_CLIENT": "0"}
HISTORY_TOPIC = "soak-history"
HISTORY_EVENTS = 1000
HISTORY_EVENT_BYTES = 10_000
SAMPLE_SECONDS = 0.5
P99_RATIO_TARGET = 2.0

# The memory bound: what a gateway doing its job needs for this load. It runs in about
# 52 MiB with no client (64 allowed); each connection costs at most the 20 KB of the idle
# target (bench/RESULTS.md); and a resuming client that reads nothing pins at most one
# history page (REPLAY_PAGE_BYTES) and one replay window handed to its socket
# (REPLAY_WINDOW) until it is dropped. A full run: 64 + 3,000 × 20 KiB + 500 × 0.31 MiB
# = 279 MiB.
RSS_IDLE_MIB = 64.0
RSS_PER_CONNECTION_KIB = 20.0
RSS_PER_NEVER_READING_MIB = (REPLAY_PAGE_BYTES + REPLAY_WINDOW) / 1024 / 1024


@dataclass(frozen=True)
class Plan:
    clients: int = 1000
    hostile: int = 2000  # a quarter of each kind
    rate: float = 100.0  # events/s on the good clients' topic
    duration: float = 60.0  # seconds of publishing per phase
    drain: float = 10.0  # most seconds the good clients get to catch up after the last event
    ramp: float = 5.0  # seconds over which the hostile connections open
    settle: float = 1.0

    @property
    def per_kind(self) -> int:
        return self.hostile // len(KINDS)

    def quick(self) -> Plan:
        return replace(
            self,
            clients=max(10, self.clients // 10),
            hostile=self.hostile // 10 // len(KINDS) * len(KINDS),
            duration=min(self.duration, 3.0),
            drain=3.0,
            ramp=1.0,
            settle=0.5,
        )

    def rss_bound_mib(self) -> float:
        connections = self.clients + self.hostile
        return (
            RSS_IDLE_MIB
            + connections * RSS_PER_CONNECTION_KIB / 1024
            + self.per_kind * RSS_PER_NEVER_READING_MIB
        )


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: a tenth of the clients, 3 s of publishing per phase",
    )
    p.add_argument("--clients", type=int, default=Plan.clients, help="good clients")
    p.add_argument(
        "--hostile",
        type=int,
        default=Plan.hostile,
        help="hostile clients in the attacked phase, a quarter of each kind",
    )
    p.add_argument(
        "--rate", type=float, default=Plan.rate, help="events/s on the good clients' topic"
    )
    p.add_argument(
        "--duration", type=float, default=Plan.duration, help="seconds of publishing per phase"
    )
    p.add_argument("--threads", type=int, default=2, help="load client threads")
    p.add_argument("--out", type=Path, default=HERE / "out" / "soak", help="results and logs")
    args = p.parse_args(argv)
    if args.clients < 1 or args.rate <= 0 or args.duration <= 0 or args.threads < 1:
        raise SystemExit("soak.py: --clients, --rate, --duration and --threads must be positive")
    if args.hostile < len(KINDS) or args.hostile % len(KINDS):
        raise SystemExit(f"soak.py: --hostile must be a positive multiple of {len(KINDS)}")
    return args


class GatewaySampler:
    """Resident memory and open descriptors of the gateway every half second, on a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float, int]] = []  # seconds, RSS MiB, open files
        self.kernel_peak_mib = 0.0
        self.exited = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway-sampler", daemon=True)
        self._t0 = time.monotonic()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(
                (
                    round(time.monotonic() - self._t0, 2),
                    round(rss_bytes([self.pid]) / 2**20, 1),
                    open_files(self.pid),
                )
            )
            self._stop.wait(SAMPLE_SECONDS)

    def __enter__(self) -> GatewaySampler:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.exited = not alive(self.pid)
        self.kernel_peak_mib = round(peak_rss_bytes(self.pid) / 2**20, 1)

    def figures(self) -> dict[str, Any]:
        return {
            "rss_peak_sampled_mib": max((s[1] for s in self.samples), default=None),
            "rss_peak_kernel_mib": self.kernel_peak_mib or None,  # VmHWM: no sample misses it
            "open_files_peak": max((s[2] for s in self.samples), default=None),
            "gateway_exited": self.exited,
            "samples": self.samples,
        }


async def _fill_history(settings: Settings) -> None:
    data = "x" * HISTORY_EVENT_BYTES
    async with AsyncPublisher(settings) as publisher:
        for start in range(0, HISTORY_EVENTS, 50):
            batch = range(start, min(start + 50, HISTORY_EVENTS))
            await asyncio.gather(*(publisher.publish(HISTORY_TOPIC, data) for _ in batch))


def fill_history(redis: RedisServer, prefix: str) -> None:
    """The topic the never-reading clients replay: 1,000 events of 10 KB."""
    asyncio.run(_fill_history(Settings(redis_url=redis.url, key_prefix=prefix)))


def delete_keys(redis: RedisServer, prefix: str) -> int:
    deleted = 0
    batch: list[bytes] = []
    for key in redis.client.scan_iter(match=prefix + "*", count=1000):
        batch.append(key)
        if len(batch) == 500:
            deleted += redis.client.delete(*batch)
            batch.clear()
    if batch:
        deleted += redis.client.delete(*batch)
    return deleted


def hub_source_digest() -> str:
    """The gateway's code as it is now: the tree is edited by others, so each phase records it."""
    digest = hashlib.sha256()
    root = HERE.parent
    paths = [*root.glob("hub/**/*.py"), *root.glob("hub/**/*.lua"), *root.glob("publisher/**/*.py")]
    for path in sorted(paths):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def _log_summary(path: Path) -> dict[str, int]:
    text = path.read_text(errors="replace") if path.exists() else ""
    return {
        "lines": text.count("\n"),
        "tracebacks": text.count("Traceback (most recent call last)"),
        "errors": sum(1 for line in text.splitlines() if " ERROR " in line),
    }


def run_phase(
    name: str,
    attacked: bool,
    plan: Plan,
    redis: RedisServer,
    tools: Tools,
    out: Path,
    run_id: str,
    threads: int,
) -> Row:
    row: Row = {
        "phase": name,
        "clients": plan.clients,
        "hostile": plan.hostile if attacked else 0,
        "rate": plan.rate,
        "duration": plan.duration,
    }
    prefix = f"{run_id}:{name}:"
    logs = out / "logs"
    gateway_log = logs / f"{name}-gateway.log"
    started = time.monotonic()
    with open(gateway_log, "wb") as log, open(logs / f"{name}-hostile.log", "wb") as hostile_log:
        try:
            fill_history(redis, prefix)
            row["hub_source"] = hub_source_digest()
            with hub(RunContext(redis, prefix, log, out, GATEWAY_ENV)) as ep:
                pid = ep.pids()[0]
                print(
                    f"soak: {name}: gateway pid {pid} on 127.0.0.1:{ep.port}",
                    file=sys.stderr,
                    flush=True,
                )
                opts = Options(
                    tools=tools, out=out, threads=threads, settle=plan.settle, drain=plan.drain
                )
                sampler = GatewaySampler(pid)
                try:
                    with sampler:
                        row.update(_measure(name, attacked, plan, ep, redis, opts, hostile_log))
                finally:
                    row.update(sampler.figures())
        except (BenchError, subprocess.TimeoutExpired, OSError) as exc:
            row["error"] = str(exc).splitlines()[0][:300]
        finally:
            row["redis_keys_deleted"] = delete_keys(redis, prefix)
    row["gateway_log"] = _log_summary(gateway_log)
    row["wall_s"] = round(time.monotonic() - started, 1)
    return row


def _measure(
    name: str,
    attacked: bool,
    plan: Plan,
    ep: Endpoint,
    redis: RedisServer,
    opts: Options,
    hostile_log: IO[bytes],
) -> Row:
    """The good clients' figures (bench/measure.py), with the hostile clients around them if attacked."""
    scenario = Scenario(
        f"soak-{name}", "live", plan.clients, rate=plan.rate, duration=plan.duration
    )
    row: Row = {}
    with ExitStack() as stack:
        hostile = None
        if attacked:
            max_time = plan.ramp + 60 + plan.clients / 200 + plan.duration + plan.drain + 60
            hostile = stack.enter_context(
                HostileClients(
                    ep.port, plan.per_kind, HISTORY_TOPIC, plan.ramp, max_time, hostile_log
                )
            )
            row["hostile_held_when_ready"] = hostile.wait_ready(plan.ramp + 30)
            print(
                f"soak: {name}: hostile clients up: {row['hostile_held_when_ready']}",
                file=sys.stderr,
                flush=True,
            )
        row.update(live(scenario, "hub", ep, redis, opts))
        if hostile is not None:
            row["hostile_figures"] = hostile.stop(timeout=30)
            time.sleep(plan.settle)
            row["rss_mb_after_attack"] = round(rss_bytes(ep.pids()) / 2**20, 1)
    return row


@dataclass(frozen=True)
class Verdict:
    target: str
    figure: str
    met: bool | None  # None: not measured


def _fine(row: Row) -> bool:
    return "error" not in row and "lat_ms" in row


def _whole(row: Row) -> bool:
    return bool(
        row["lost"] == 0 and row["dup"] == 0 and row["deliveries"] == row["expected_deliveries"]
    )


def judge(base: Row, attacked: Row, bound_mib: float) -> list[Verdict]:
    verdicts = []
    if _fine(base) and _fine(attacked):
        figure = "; ".join(
            f"{r['phase']}: lost {r['lost']:,}, duplicated {r['dup']:,}, "
            f"{r['deliveries']:,} of {r['expected_deliveries']:,} delivered"
            for r in (base, attacked)
        )
        verdicts.append(
            Verdict(
                "Good clients lose nothing (lost = duplicated = 0)",
                figure,
                _whole(base) and _whole(attacked),
            )
        )
        p99_base, p99_attacked = base["lat_ms"]["p99"], attacked["lat_ms"]["p99"]
        ratio = p99_attacked / p99_base if p99_base else float("inf")
        verdicts.append(
            Verdict(
                f"Good clients' p99 under attack ≤ {P99_RATIO_TARGET:g} × baseline",
                f"{p99_attacked:.1f} ms / {p99_base:.1f} ms = {ratio:.2f}×",
                ratio <= P99_RATIO_TARGET,
            )
        )
    else:
        verdicts += [
            Verdict("Good clients lose nothing (lost = duplicated = 0)", "not measured", None),
            Verdict(
                f"Good clients' p99 under attack ≤ {P99_RATIO_TARGET:g} × baseline",
                "not measured",
                None,
            ),
        ]
    peak = attacked.get("rss_peak_kernel_mib") or attacked.get("rss_peak_sampled_mib")
    verdicts.append(
        Verdict(
            f"Gateway peak RSS under attack ≤ {bound_mib:.0f} MiB",
            f"{peak:.1f} MiB" if peak else "not measured",
            None if not peak else peak <= bound_mib and not attacked.get("gateway_exited"),
        )
    )
    return verdicts


def _cell(row: Row, show: Callable[[Row], str]) -> str:
    try:
        return show(row)
    except (KeyError, TypeError, ValueError):
        return "–"


def _kinds_total(row: Row, key: str) -> int:
    return sum(k[key] for k in row["hostile_figures"]["kinds"].values())


PHASE_ROWS: list[tuple[str, Callable[[Row], str]]] = [
    ("Good clients connected", lambda r: f"{r['connected']:,} / {r['clients']:,}"),
    ("Hostile clients", lambda r: f"{r['hostile']:,}" if r["hostile"] else "–"),
    (
        "Events published (achieved rate)",
        lambda r: f"{r['final_seq']:,} ({r['published_eps']:.1f}/s)",
    ),
    (
        "Deliveries expected → received",
        lambda r: f"{r['expected_deliveries']:,} → {r['deliveries']:,}",
    ),
    ("Lost / duplicated", lambda r: f"{r['lost']:,} / {r['dup']:,}"),
    (
        "Good clients' reconnects / HTTP errors",
        lambda r: f"{r['reconnects']:,} / {r['http_errors']:,}",
    ),
    (
        "Latency p50 / p99 / max (ms)",
        lambda r: f"{r['lat_ms']['p50']:.1f} / {r['lat_ms']['p99']:.1f} / {r['lat_ms']['max']:.1f}",
    ),
    ("Gateway CPU s (cores busy)", lambda r: f"{r['server_cpu_s']:.1f} ({r['server_cores']:.2f})"),
    ("Gateway CPU µs per delivery", lambda r: f"{r['cpu_s_per_M']:.2f}"),
    (
        "Gateway RSS peak: sampled / kernel high-water (MiB)",
        lambda r: f"{r['rss_peak_sampled_mib']:.1f} / {r['rss_peak_kernel_mib']:.1f}",
    ),
    ("Gateway RSS at the end (MiB)", lambda r: f"{r['rss_mb_after']:.1f}"),
    ("Gateway RSS once the attackers left (MiB)", lambda r: f"{r['rss_mb_after_attack']:.1f}"),
    ("Gateway open files, peak", lambda r: f"{r['open_files_peak']:,}"),
    (
        "Hostile connections opened / refused / dropped by the gateway",
        lambda r: " / ".join(f"{_kinds_total(r, k):,}" for k in ("opened", "refused", "dropped")),
    ),
    (
        "Hostile connections held at the end: by the clients / by the gateway",
        lambda r: (
            f"{_kinds_total(r, 'held_at_stop'):,} / {_kinds_total(r, 'gateway_held_at_stop'):,}"
        ),
    ),
    ("Hostile clients' own CPU s", lambda r: f"{r['hostile_figures']['cpu_s']:.1f}"),
    (
        "Gateway log: ERROR lines / tracebacks",
        lambda r: f"{r['gateway_log']['errors']:,} / {r['gateway_log']['tracebacks']:,}",
    ),
    ("Gateway exited during the phase", lambda r: "yes" if r["gateway_exited"] else "no"),
    ("Digest of hub/ and publisher/ at the gateway's start", lambda r: f"`{r['hub_source']}`"),
]


def _counts(counter: dict[str, int]) -> str:
    return (
        ", ".join(f"{name} {n:,}" for name, n in sorted(counter.items(), key=lambda kv: -kv[1]))
        or "–"
    )


def hostile_table(row: Row) -> list[str]:
    lines = [
        "| Kind | Opened | Refused | Dropped by the gateway | How dropped | Gateway answers "
        "| Held at the end: clients / gateway | Held before a drop, p50 / max s | KiB sent |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for kind, k in row["hostile_figures"]["kinds"].items():
        life = (
            f"{k['lifetime_s']['p50']:.1f} / {k['lifetime_s']['max']:.1f}"
            if k["lifetime_s"]
            else "–"
        )
        answers = "never reads" if kind == "never-reading" else _counts(k["answers"])
        refused = f"{k['refused']:,}" + (f" ({_counts(k['refusals'])})" if k["refused"] else "")
        lines.append(
            f"| {kind} | {k['opened']:,} | {refused} | {k['dropped']:,} | "
            f"{_counts(k['endings'])} | {answers} | {k['held_at_stop']:,} / "
            f"{k['gateway_held_at_stop']:,} | {life} | "
            f"{k['bytes_sent'] / 1024:,.0f} |"
        )
    return lines


def markdown(meta: dict[str, Any], plan: Plan, rows: list[Row], verdicts: list[Verdict]) -> str:
    base, attacked = rows
    lines = [
        "# Soak: hostile clients beside well-behaved ones",
        "",
        f"`{meta['command']}`: {meta['started']}, {meta['wall_min']:.1f} min; "
        f"{meta['machine']['nproc']} cores ({meta['machine']['cpu']}), load average "
        f"{meta['load_start']} at the start, {meta['load_end']} at the end; {meta['versions']['hub commit']}.",
        "",
        f"{plan.clients:,} good clients on one topic at {plan.rate:g} events/s for {plan.duration:g} s, "
        f"against one gateway reached directly on 127.0.0.1 (a fresh one per phase); in the attacked "
        f"phase beside {plan.hostile:,} hostile clients, {plan.per_kind:,} of each kind: "
        f"{', '.join(KINDS)}, reconnected whenever the gateway drops them.",
        "",
        "| | baseline | attacked |",
        "| --- | --- | --- |",
    ]
    lines += [
        f"| {label} | {_cell(base, show)} | {_cell(attacked, show)} |" for label, show in PHASE_ROWS
    ]
    if base.get("hub_source") != attacked.get("hub_source"):
        lines.append(
            f"\n**Warning:** the code in hub/ or publisher/ changed between the phases "
            f"({base.get('hub_source')} → {attacked.get('hub_source')}): they ran different gateways."
        )
    for row in rows:
        if "error" in row:
            lines.append(f"\n**{row['phase']} failed:** {row['error']}")
    lines += ["", "| Target | Figure | Met |", "| --- | --- | --- |"]
    lines += [f"| {v.target} | {v.figure} | {_met(v.met)} |" for v in verdicts]
    lines += [
        "",
        f"RSS bound: {RSS_IDLE_MIB:g} MiB for the gateway itself + "
        f"{plan.clients + plan.hostile:,} connections × {RSS_PER_CONNECTION_KIB:g} KiB + "
        f"{plan.per_kind:,} never-reading clients × {RSS_PER_NEVER_READING_MIB:.2f} MiB "
        f"(a history page and a replay window) = {plan.rss_bound_mib():.0f} MiB.",
    ]
    if "hostile_figures" in attacked:
        lines += ["", "The hostile clients, as they saw the gateway (attacked phase):", ""]
        lines += hostile_table(attacked)
        lines += [
            "",
            "How dropped: `closed` the gateway closed the connection, `reset` it reset it, "
            "`abandoned` it closed its end while data it could not send kept its FIN from "
            "arriving (seen in /proc/net/tcp; only a client that never reads meets this). "
            "Held at the end: by the hostile clients' count, and those whose gateway end "
            "was still ESTABLISHED.",
        ]
    return "\n".join(lines) + "\n"


def _met(met: bool | None) -> str:
    return "not measured" if met is None else ("PASS" if met else "FAIL")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    plan = Plan(clients=args.clients, hostile=args.hostile, rate=args.rate, duration=args.duration)
    if args.quick:
        plan = plan.quick()
    out: Path = args.out
    (out / "logs").mkdir(parents=True, exist_ok=True)
    fds = raise_open_files()
    if fds < plan.clients + plan.hostile + 1000:
        print(
            f"soak.py: the open-file limit {fds} is too low for {plan.clients + plan.hostile:,} "
            "connections",
            file=sys.stderr,
        )
        return 2
    try:
        tools = build(HERE / "build")
    except BenchError as exc:
        print(f"soak.py: {exc}", file=sys.stderr)
        return 2
    run_id = "soak" + uuid.uuid4().hex[:8]
    started, t0, load_start = datetime.now(timezone.utc), time.monotonic(), load_average()
    print(f"soak: {plan}, run {run_id}, open-file limit {fds}, load {load_start}", file=sys.stderr)
    with open(out / "logs" / "redis.log", "wb") as redis_log, RedisServer(redis_log) as redis:
        rows = [
            run_phase(name, attacked, plan, redis, tools, out, run_id, args.threads)
            for name, attacked in (("baseline", False), ("attacked", True))
        ]
    verdicts = judge(rows[0], rows[1], plan.rss_bound_mib())
    meta = {
        "command": command_line(),
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "wall_min": (time.monotonic() - t0) / 60,
        "machine": machine(),
        "versions": versions(),
        "load_start": load_start,
        "load_end": load_average(),
        "quick": args.quick,
    }
    text = markdown(meta, plan, rows, verdicts)
    print(text)
    (out / "SOAK.md").write_text(text)
    (out / "results.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "plan": asdict(plan),
                "rss_bound_mib": round(plan.rss_bound_mib(), 1),
                "phases": rows,
                "targets": [asdict(v) for v in verdicts],
            },
            indent=1,
        )
    )
    met = sum(1 for v in verdicts if v.met)
    print(
        f"soak: {met} of {len(verdicts)} targets met: "
        + "; ".join(f"{_met(v.met)} {v.target}" for v in verdicts),
        file=sys.stderr,
    )
    print(f"soak: wrote {out / 'SOAK.md'} and {out / 'results.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
