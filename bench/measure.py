"""One measurement: a scenario against one system, started fresh, with its figures."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from native import BenchError, LoadClient, Tools, publish
from procstat import cpu_seconds, rss_bytes
from scenarios import Scenario
from systems import SYSTEMS, Endpoint, RedisServer, RunContext


@dataclass(frozen=True)
class Options:
    tools: Tools
    out: Path
    threads: int = 2
    coalesce_us: int = 1000
    settle: float = 1.0
    drain: float = 10.0
    profile: frozenset[str] = frozenset()


def measure(
    scenario: Scenario, system: str, redis: RedisServer, opts: Options, run_id: str
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "scenario": scenario.name,
        "system": system,
        "kind": scenario.kind,
        "clients": scenario.clients,
        "topics": scenario.topics,
        "rate": scenario.rate,
        "duration": scenario.duration,
    }
    if scenario.kind == "storm" and system == "baseline":
        row["skipped"] = (
            "no history: a client that reconnects has lost what was published meanwhile"
        )
        return row
    redis.flush()
    logs = opts.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{scenario.name}-{system}.log", "wb") as log:
        ctx = RunContext(redis, f"{run_id}:{scenario.name}:", log, opts.out)
        started = time.monotonic()
        try:
            with SYSTEMS[system](ctx) as ep:
                time.sleep(0.5)
                if scenario.kind == "live":
                    row.update(live(scenario, system, ep, redis, opts))
                elif scenario.kind == "idle":
                    row.update(_idle(scenario, ep, redis, opts))
                else:
                    row.update(_storm(scenario, ep, redis, opts))
        except (BenchError, subprocess.TimeoutExpired, OSError) as exc:
            row["error"] = str(exc).splitlines()[0][:300]
        row["wall_s"] = round(time.monotonic() - started, 1)
    return row


def _cpu_groups(groups: dict[str, list[int]]) -> dict[str, float]:
    return {name: cpu_seconds(pids) for name, pids in groups.items()}


def _client(opts: Options, ep: Endpoint, s: Scenario, **kw: Any) -> LoadClient:
    return LoadClient(
        opts.tools.loadclient,
        ep.port,
        ep.path,
        s.clients,
        s.topics,
        threads=opts.threads,
        coalesce_us=opts.coalesce_us,
        **kw,
    )


def live(
    s: Scenario, system: str, ep: Endpoint, redis: RedisServer, opts: Options
) -> dict[str, Any]:
    groups = ep.pid_groups()
    targets = ep.targets(s.topics, opts.out)
    ready_timeout = 30 + s.clients / 200
    with _client(
        opts,
        ep,
        s,
        ready_timeout=ready_timeout,
        drain=opts.drain,
        max_time=ready_timeout + s.duration + opts.drain + 120,
    ) as client:
        connected = client.wait_ready(ready_timeout + 10)
        time.sleep(opts.settle)
        cpu0, redis_cpu0 = _cpu_groups(groups), cpu_seconds([redis.pid])
        rss0 = rss_bytes(ep.pids())
        client_cpu0 = cpu_seconds([client.pid])
        t0 = time.monotonic()
        client.go()
        profiler = _start_profile(s, system, groups, opts)
        multi = s.topics > 1
        pub = publish(
            opts.tools.publisher,
            mode=ep.publish_mode,
            port=ep.publish_port,
            targets=targets,
            rate=s.rate,
            duration=s.duration,
            sha=redis.sha,
            conns=4 if (multi and ep.publish_mode == "nchan") else 1,
            window=512 if ep.publish_mode == "redis" else 64,
            timeout=s.duration + 90,
        )
        t_pub, cpu_pub = time.monotonic(), _cpu_groups(groups)
        client_cpu_pub = cpu_seconds([client.pid])
        client.end(int(pub["final_seq"]))
        res = client.result(timeout=opts.drain + 60)
        t1 = time.monotonic()
        cpu1, redis_cpu1 = _cpu_groups(groups), cpu_seconds([redis.pid])
        rss1 = rss_bytes(ep.pids())
        profile = _finish_profile(profiler)
    deliveries = int(res["deliveries"])
    expected = s.clients * int(pub["final_seq"])
    window = max(1e-9, (res["last_delivery_ns"] - pub["start_ns"]) / 1e9) if deliveries else 0
    server_cpu = sum(cpu1.values()) - sum(cpu0.values())
    client_wall = max(1e-9, (res["done_ns"] - res["go_ns"]) / 1e9)
    out: dict[str, Any] = {
        "connected": connected,
        "offered_eps": s.topics * s.rate,
        "published_eps": round(pub["achieved_per_s"], 1),
        "publish_errors": pub["errors"],
        "publish_first_error": pub["first_error"],
        "final_seq": pub["final_seq"],
        "offered_dps": s.offered_deliveries,
        "achieved_dps": round(deliveries / window, 1) if deliveries else 0.0,
        "deliveries": deliveries,
        "expected_deliveries": expected,
        "delivered_fraction": round(deliveries / expected, 4) if expected else 0.0,
        "lat_ms": {
            k: res["lat_us"][k] / 1000 for k in ("p50", "p90", "p99", "p999", "max", "mean")
        },
        "lost": res["lost"],
        "dup": res["dup"],
        "reconnects": res["reconnects"],
        "resets": res["resets"],
        "http_errors": res["http_errors"],
        "server_cpu_s": round(server_cpu, 2),
        "server_cpu_by_process": {k: round(cpu1[k] - cpu0[k], 2) for k in cpu0},
        "server_cores": round(server_cpu / (t1 - t0), 2),
        "server_cores_publishing": round(
            (sum(cpu_pub.values()) - sum(cpu0.values())) / (t_pub - t0), 2
        ),
        "client_cores_publishing": round((client_cpu_pub - client_cpu0) / (t_pub - t0), 2),
        "cpu_s_per_M": round(server_cpu / deliveries * 1e6, 2) if deliveries else None,
        "redis_cpu_s": round(redis_cpu1 - redis_cpu0, 2),
        "redis_cpu_s_per_M": round((redis_cpu1 - redis_cpu0) / deliveries * 1e6, 2)
        if deliveries
        else None,
        "client_cpu_s": res["cpu_s_measure"],
        "client_cores": round(res["cpu_s_measure"] / client_wall, 2),
        "rss_mb_before": round(rss0 / 2**20, 1),
        "rss_mb_after": round(rss1 / 2**20, 1),
        "client_why": res["why"],
    }
    if profile:
        out["profile"] = profile
    return out


def _idle(s: Scenario, ep: Endpoint, redis: RedisServer, opts: Options) -> dict[str, Any]:
    rss0, redis_rss0 = rss_bytes(ep.pids()), rss_bytes([redis.pid])
    ready_timeout = 30 + s.clients / 200
    with _client(opts, ep, s, ready_timeout=ready_timeout, max_time=ready_timeout + 120) as client:
        connected = client.wait_ready(ready_timeout + 10)
        time.sleep(max(3.0, opts.settle))
        rss1, redis_rss1 = rss_bytes(ep.pids()), rss_bytes([redis.pid])
        by_group = {k: rss_bytes(v) for k, v in ep.pid_groups().items()}
        client.quit()
        res = client.result(timeout=30)
    return {
        "connected": connected,
        "rss_mb_before": round(rss0 / 2**20, 1),
        "rss_mb_after": round(rss1 / 2**20, 1),
        "rss_mb_by_process": {k: round(v / 2**20, 1) for k, v in by_group.items()},
        "rss_kb_per_conn": round((rss1 - rss0) / max(1, connected) / 1024, 2),
        "redis_rss_kb_per_conn": round((redis_rss1 - redis_rss0) / max(1, connected) / 1024, 2),
        "http_errors": res["http_errors"],
        "connect_errors": res["connect_errors"],
    }


def _storm(s: Scenario, ep: Endpoint, redis: RedisServer, opts: Options) -> dict[str, Any]:
    groups = ep.pid_groups()
    seed = ep.seed(redis.url, "b0", json.dumps({"seq": 0, "t": time.time_ns()}))
    targets = ep.targets(1, opts.out, storm=True)
    pub = publish(
        opts.tools.publisher,
        mode=ep.publish_mode,
        port=ep.publish_port,
        targets=targets,
        rate=0,
        count=s.missed,
        sha=redis.sha,
        window=512 if ep.publish_mode == "redis" else 64,
        timeout=120,
    )
    if pub["acked"] != s.missed or pub["errors"]:
        raise BenchError(f"storm: publishing the missed events failed: {pub}")
    time.sleep(opts.settle)
    cpu0 = sum(_cpu_groups(groups).values())
    t0 = time.monotonic()
    with LoadClient(
        opts.tools.loadclient,
        ep.port,
        ep.path,
        s.clients,
        1,
        threads=opts.threads,
        coalesce_us=opts.coalesce_us,
        burst=s.clients,
        last_event_id=seed,
        final=s.missed,
        ready_timeout=60,
        max_time=60,
    ) as client:
        connected = client.wait_ready(70)
        res = client.result(timeout=70)
    server_cpu = sum(_cpu_groups(groups).values()) - cpu0
    return {
        "connected": connected,
        "missed": s.missed,
        "caught_up": res["caught_up"],
        "catchup_ms": res["catchup_ms"],
        "all_caught_up_s": round(res["catchup_ms"]["max"] / 1000, 3)
        if res["caught_up"] == s.clients
        else None,
        "deliveries": res["deliveries"],
        "lost": res["lost"],
        "dup": res["dup"],
        "resets": res["resets"],
        "http_errors": res["http_errors"],
        "server_cpu_s": round(server_cpu, 2),
        "cpu_s_per_M": round(server_cpu / res["deliveries"] * 1e6, 2)
        if res["deliveries"]
        else None,
        "client_cpu_s": res["cpu_s_total"],
        "wall_measure_s": round(time.monotonic() - t0, 2),
        "client_why": res["why"],
    }


def _start_profile(
    s: Scenario, system: str, groups: dict[str, list[int]], opts: Options
) -> tuple[subprocess.Popen[bytes], Path] | None:
    if s.name not in opts.profile or not system.startswith("hub"):
        return None
    beside = Path(sys.executable).parent / "py-spy"
    spy = str(beside) if beside.exists() else shutil.which("py-spy")
    if spy is None:
        raise BenchError("--profile needs py-spy (pip install py-spy)")
    raw = opts.out / f"profile-{s.name}-{system}.txt"
    args = [
        spy,
        "record",
        "--pid",
        str(groups["gateway"][0]),
        "--duration",
        str(max(1, int(s.duration))),
        "--rate",
        "200",
        "--format",
        "raw",
        "--nonblocking",
        "--output",
        str(raw),
    ]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), raw


def _finish_profile(profiler: tuple[subprocess.Popen[bytes], Path] | None) -> dict[str, Any] | None:
    if profiler is None:
        return None
    proc, raw = profiler
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if not raw.exists():
        return {"error": "py-spy wrote nothing"}
    return summarize_profile(raw)


def _frame_name(frame: str) -> str:
    """`send (uvicorn/protocols/http/httptools_impl.py:123)` -> without the line number."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    short = "/".join(path.split("/")[-2:])
    return f"{name} ({short})" if path else name


def summarize_profile(raw: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive sample counts per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith("process ")] or frames
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            incl[name] += count
    summary_path = raw.with_suffix(".summary.txt")
    lines = [f"{total} samples"]
    lines.append("\nself time:")
    lines += [f"{100 * c / total:5.1f}%  {name}" for name, c in own.most_common(top)]
    lines.append("\ninclusive time:")
    lines += [f"{100 * c / total:5.1f}%  {name}" for name, c in incl.most_common(top)]
    summary_path.write_text("\n".join(lines) + "\n")
    return {
        "samples": total,
        "raw": str(raw),
        "summary": str(summary_path),
        "self_top": [(name, round(100 * c / max(1, total), 1)) for name, c in own.most_common(12)],
    }
