"""One measurement: a scenario against one system, started fresh, with its figures."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from native import BenchError, LoadClient, Tools, publish
from procstat import cpu_seconds, listen_overflows, rss_bytes
from scenarios import FANOUTS_COMPARED, MERCURE_COMPARED, NATIVE_HTTP_COUNTERPARTS, Scenario
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
    skipped = _skip(scenario, system)
    if skipped:
        row["skipped"] = skipped
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
                elif scenario.kind == "join":
                    row.update(_join(scenario, system, ep, redis, opts))
                else:
                    row.update(_storm(scenario, ep, redis, opts))
        except (BenchError, subprocess.TimeoutExpired, OSError) as exc:
            row["error"] = str(exc).splitlines()[0][:300]
        row["wall_s"] = round(time.monotonic() - started, 1)
    return row


def _skip(s: Scenario, system: str) -> str:
    """Why the system cannot run the scenario ("" if it can)."""
    if s.name in NATIVE_HTTP_COUNTERPARTS and system != "hub":
        plain = next(k for k, v in MERCURE_COMPARED.items() if v == s.name)
        if system == "hub-mercure":
            return (
                f"the Mercure face is published over HTTP in {plain} itself; this is the "
                "native hub's counterpart for the comparison"
            )
        return f"{plain} published through POST /publish, for the Mercure comparison: hub only"
    if system == "hub-mercure":
        return _skip_mercure(s)
    if system != "baseline":
        return ""
    if s.kind == "storm" or (s.kind == "join" and s.missed):
        return "no history: a client that reconnects has lost what was published meanwhile"
    if s.kind == "join":
        return (
            "it sends a stream's headers before it subscribes, so a client with its 200 may "
            "still miss the next event"
        )
    if s.http_publish:
        return "no HTTP publish endpoint: it only relays what the hub's script announces in Redis"
    return ""


def _skip_mercure(s: Scenario) -> str:
    """Why the Mercure face does not run the scenario ("" if it does)."""
    if s.kind == "storm" or (s.kind == "join" and s.missed):
        return (
            "it resumes from cursors the native publish path hands out (the script's reply); "
            "Mercure's resumption is not measured here"
        )
    if s.publish == "http-batch":
        return "Mercure has no batch form: one update per POST"
    if s.name == "sparse-10k":
        return "the Mercure face has no Redis path: published over HTTP, it is sparse-http"
    if s.name == "topics-10k":
        return (
            "100,000 publishes/s, one per POST: more than HTTP publishing takes "
            "(publish-http-max says how many)"
        )
    if s.kind == "live" and s.topics == 1 and s.name not in FANOUTS_COMPARED:
        compared = ", ".join(FANOUTS_COMPARED)
        return f"a chart point of the native faces; the comparison takes {compared}"
    return ""


def publish_plan(s: Scenario, ep: Endpoint) -> dict[str, Any]:
    """How the scenario's events reach the system: the publisher's mode, port and pipelining.

    The hub's `POST /publish` (scenarios that publish over HTTP) takes several connections,
    as uvicorn answers the requests pipelined on one connection one at a time; Nchan, which
    has no batch form, is always published through its /pub, one event per request; the
    Mercure face, which has no Redis path, through POST /.well-known/mercure, one update per
    request, on as many connections as the native POST /publish. No more connections than
    topics: a topic's events all go over one, and the gateway answers a connection that sends
    no request within HUB_REQUEST_HEADER_SECONDS (10 s) with 408 and closes it."""
    conns = min(HTTP_CONNS, s.topics)
    if ep.publish_mode == "mercure":
        return dict(mode="mercure", port=ep.port, token=ep.publish_token, conns=conns, window=32)
    if s.http_publish and ep.publish_token:
        if s.publish == "http-batch":
            return dict(
                mode="hub-batch",
                port=ep.port,
                token=ep.publish_token,
                conns=2,
                window=8,
                batch=HTTP_BATCH,
                linger_ms=HTTP_BATCH_LINGER_MS,
            )
        return dict(mode="hub", port=ep.port, token=ep.publish_token, conns=conns, window=32)
    if ep.publish_mode == "nchan":
        return dict(mode="nchan", port=ep.publish_port, conns=4 if s.topics > 1 else 1, window=64)
    return dict(mode="redis", port=ep.publish_port, conns=1, window=512)


HTTP_CONNS = 8
"""Connections of one-event-per-request HTTP publishing (fewer with fewer topics)."""
HTTP_BATCH = 100
"""Events per `POST /publish` batch at most (fewer when --linger-ms passes first)."""
HTTP_BATCH_LINGER_MS = 20


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
    plan = publish_plan(s, ep)
    targets = ep.targets(s.topics, opts.out, mode=plan["mode"])
    ready_timeout = 30 + s.clients / 200
    # room for a system that takes the events at 500/s, far below the rate asked
    publish_timeout = s.duration + 90 + (s.count or s.rate * s.duration) * s.topics / 500
    with _client(
        opts,
        ep,
        s,
        ready_timeout=ready_timeout,
        drain=opts.drain,
        max_time=ready_timeout + publish_timeout + opts.drain + 120,
        hold=True,
    ) as client:
        connected = client.wait_ready(ready_timeout + 10)
        time.sleep(opts.settle)
        cpu0, redis_cpu0 = _cpu_groups(groups), cpu_seconds([redis.pid])
        rss0 = rss_bytes(ep.pids())
        client_cpu0 = cpu_seconds([client.pid])
        t0 = time.monotonic()
        client.go()
        profiler = _start_profile(s, system, groups, opts)
        pub = publish(
            opts.tools.publisher,
            targets=targets,
            rate=0 if s.count else s.rate,
            duration=s.duration,
            count=s.count,
            sha=redis.sha,
            timeout=publish_timeout,
            **plan,
        )
        t_pub, cpu_pub = time.monotonic(), _cpu_groups(groups)
        client_cpu_pub = cpu_seconds([client.pid])
        client.end(int(pub["final_seq"]))
        # CPU and memory once every client has the last event (or the drain ran out), read
        # before the streams close: closing 10,000 of them is not the work measured
        client.wait_caught(opts.drain + 60)
        t1 = time.monotonic()
        cpu1, redis_cpu1 = _cpu_groups(groups), cpu_seconds([redis.pid])
        rss1 = rss_bytes(ep.pids())
        client.quit()
        res = client.result(timeout=opts.drain + 60)
        profile = _finish_profile(profiler)
    deliveries = int(res["deliveries"])
    expected = s.clients * int(pub["final_seq"])
    window = max(1e-9, (res["last_delivery_ns"] - pub["start_ns"]) / 1e9) if deliveries else 0
    server_cpu = sum(cpu1.values()) - sum(cpu0.values())
    redis_cpu = redis_cpu1 - redis_cpu0
    client_wall = max(1e-9, (res["done_ns"] - res["go_ns"]) / 1e9)
    per_delivery = {k: cpu1[k] - cpu0[k] for k in cpu0}
    per_delivery.update(redis=redis_cpu, server=server_cpu, server_redis=server_cpu + redis_cpu)
    out: dict[str, Any] = {
        "connected": connected,
        "offered_eps": s.topics * s.rate,
        "published_eps": round(pub["achieved_per_s"], 1),
        "publish_mode": plan["mode"],
        "publish_conns": plan["conns"],
        "publish_batch": plan.get("batch", 1),
        "published": pub["acked"],
        "publish_requests": pub["requests"],
        "publish_requests_per_s": round(pub["requests_per_s"], 1),
        "publish_s": pub["ack_s"],
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
        "redis_cpu_s": round(redis_cpu, 2),
        "redis_cpu_s_per_M": round(redis_cpu / deliveries * 1e6, 2) if deliveries else None,
        "cpu_us_per_delivery": {k: round(v / deliveries * 1e6, 2) for k, v in per_delivery.items()}
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


def _seed_cursors(
    s: Scenario, system: str, ep: Endpoint, redis: RedisServer, opts: Options
) -> tuple[Path, dict[str, Any]]:
    """For a resuming join: one event (seq 0) per topic, whose ID becomes the topic's cursor
    (a file, line i: topic i), then `s.missed` more (seq 1..missed) that the clients missed.
    Both on the system's own path: Redis for the hub, Nchan's /pub-storm (room for them)."""
    plan = publish_plan(replace(s, publish=""), ep)
    targets = ep.targets(s.topics, opts.out, storm=True, mode=plan["mode"])
    cursors = opts.out / f"cursors-{s.name}-{system}.txt"
    timeout = 60 + s.topics * (1 + s.missed) / 500
    started = time.monotonic()
    seed = publish(
        opts.tools.publisher,
        targets=targets,
        rate=0,
        count=1,
        start_seq=0,
        sha=redis.sha,
        ids_out=cursors,
        timeout=timeout,
        **plan,
    )
    ids = cursors.read_text().splitlines()
    if seed["acked"] != s.topics or seed["errors"] or len(ids) != s.topics or not all(ids):
        raise BenchError(f"join: seeding one event per topic failed: {seed}")
    missed = publish(
        opts.tools.publisher,
        targets=targets,
        rate=0,
        count=s.missed,
        start_seq=1,
        sha=redis.sha,
        timeout=timeout,
        **plan,
    )
    if missed["acked"] != s.topics * s.missed or missed["errors"]:
        raise BenchError(f"join: publishing the missed events failed: {missed}")
    return cursors, {
        "seed_publish_mode": plan["mode"],
        "seed_s": round(time.monotonic() - started, 2),
        "seed_publishes_per_s": round(missed["achieved_per_s"], 1),
    }


def _per_join(before: dict[str, float], after: dict[str, float], clients: int) -> dict[str, float]:
    """CPU µs per client of each process group, of Redis, and of the system's processes."""
    out = {k: (after[k] - before[k]) / clients * 1e6 for k in before}
    out["server"] = sum(v for k, v in out.items() if k != "redis")
    out["server_redis"] = out["server"] + out.get("redis", 0.0)
    return {k: round(v, 1) for k, v in out.items()}


def _join(
    s: Scenario, system: str, ep: Endpoint, redis: RedisServer, opts: Options
) -> dict[str, Any]:
    """All clients connect at once, one per topic; fresh (no cursor: once every stream has
    its 200, one event is published per topic) or resuming (each with its topic's cursor and
    `s.missed` events to catch up on). Timed from the last connect; the server's CPU is read
    before the first connect, when every stream is open and when every client has its first
    event (fresh) or is caught up (resume), before the streams close."""
    groups = ep.pid_groups()
    out: dict[str, Any] = {"missed": s.missed}
    cursors = None
    if s.missed:
        cursors, seeded = _seed_cursors(s, system, ep, redis, opts)
        out.update(seeded)
    plan = publish_plan(s, ep)
    targets = ep.targets(s.topics, opts.out, mode=plan["mode"])
    time.sleep(opts.settle)

    def cpu() -> dict[str, float]:
        return {**_cpu_groups(groups), "redis": cpu_seconds([redis.pid])}

    timeout = 30 + s.clients / 200
    overflows0 = listen_overflows()
    cpu0 = cpu()
    with _client(
        opts,
        ep,
        s,
        burst=s.clients,
        cursors=cursors,
        final=s.missed or 1,
        hold=True,
        ready_timeout=timeout,
        max_time=timeout + 90,
    ) as client:
        connected = client.wait_ready(timeout + 10)
        cpu_open = cpu()
        pub = None
        if not s.missed:
            pub = publish(
                opts.tools.publisher,
                targets=targets,
                rate=0,
                count=1,
                sha=redis.sha,
                timeout=60,
                **plan,
            )
        all_there = client.wait_caught(60)
        cpu1 = cpu()
        overflows = listen_overflows() - overflows0
        client.quit()
        res = client.result(timeout=30)
    j = res["join"]
    last_connect = j["last_connect_ns"]

    def after_last_connect(ns: int, complete: bool) -> float | None:
        return round((ns - last_connect) / 1e9, 3) if complete and ns else None

    all_first = after_last_connect(j["last_first_event_ns"], j["first_event"] == s.clients)
    all_caught = after_last_connect(j["last_caught_ns"], res["caught_up"] == s.clients)
    out.update(
        {
            "connected": connected,
            "all_there": all_there,
            "connect_spread_s": round((last_connect - j["first_connect_ns"]) / 1e9, 3),
            "all_open_s": after_last_connect(j["last_open_ns"], j["opened"] == s.clients),
            "all_first_event_s": all_first,
            "all_caught_up_s": all_caught,
            "all_streaming_s": all_caught if s.missed else all_first,
            "open_ms": j["open_ms"],
            "first_event_ms": j["first_event_ms"],
            "opened": j["opened"],
            "first_event": j["first_event"],
            "caught_up": res["caught_up"],
            "deliveries": res["deliveries"],
            "lost": res["lost"],
            "dup": res["dup"],
            "reconnects": res["reconnects"],
            "resets": res["resets"],
            "http_errors": res["http_errors"],
            "connect_errors": res["connect_errors"],
            "listen_overflows": overflows,
            "cpu_us_per_join_open": _per_join(cpu0, cpu_open, s.clients),
            "cpu_us_per_join": _per_join(cpu0, cpu1, s.clients),
            "server_cpu_s": round(sum(cpu1[k] - cpu0[k] for k in cpu0 if k != "redis"), 2),
            "redis_cpu_s": round(cpu1["redis"] - cpu0["redis"], 2),
            "client_cpu_s": res["cpu_s_total"],
            "client_why": res["why"],
        }
    )
    if pub is not None:
        out.update(
            {
                # publish-to-receive of the one event: a resumed event waited since before
                # the join, so its latency would mean nothing
                "lat_ms": {k: res["lat_us"][k] / 1000 for k in ("p50", "p99", "max")},
                "publish_mode": plan["mode"],
                "publish_started_after_open_s": round(
                    (pub["start_ns"] - j["last_open_ns"]) / 1e9, 3
                )
                if j["last_open_ns"]
                else None,
                "publish_s": pub["ack_s"],
                "publish_errors": pub["errors"],
            }
        )
    return out


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
