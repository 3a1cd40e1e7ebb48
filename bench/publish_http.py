"""`POST /publish` throughput: one gateway, keep-alive connections posting as fast as it answers.

    .venv/bin/python bench/publish_http.py                       # single events, then batches of 100
    .venv/bin/python bench/publish_http.py --batch 1 --connections 8 --seconds 5

A real gateway (`python -m hub`, HUB_PUBLISH_TOKEN set) on the Redis of --redis-url, under a
key prefix of its own (deleted afterwards). Each connection posts one request at a time,
each on a topic of its own: single events (`{"topic","data"}`) or JSON arrays of --batch
events. After a second of warm-up it counts for --seconds and prints the publishes per
second, and the CPU seconds per publish of the gateway and of the Redis server (read from
/proc, so Redis must run on this machine). The client is raw asyncio, so that it costs far
less than the gateway it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.processes import Gateway, delete_keys  # noqa: E402

TOKEN = "bench-token"
WARM_UP_SECONDS = 1.0
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().decode().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


def request_bytes(port: int, topic: str, batch: int) -> bytes:
    data = "x" * 100
    if batch == 1:
        body = json.dumps({"topic": topic, "data": data})
    else:
        body = json.dumps([{"topic": topic, "data": data} for _ in range(batch)])
    head = (
        f"POST /publish HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        f"authorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body.encode()


async def connection(port: int, request: bytes, stop: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.monotonic() < stop:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"the gateway answered {head[:40]!r}")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            if b'"failed":0' not in body and b'"id"' not in body[:8]:
                raise RuntimeError(f"not every event was published: {body[:200]!r}")
            counts[0] += 1
    finally:
        writer.close()


async def measure(
    port: int, pids: tuple[int, int], batch: int, connections: int, seconds: float
) -> dict[str, float]:
    stop = time.monotonic() + WARM_UP_SECONDS + seconds
    counts = [0]
    tasks = [
        asyncio.create_task(connection(port, request_bytes(port, f"bench{n}", batch), stop, counts))
        for n in range(connections)
    ]
    await asyncio.sleep(WARM_UP_SECONDS)
    counts[0] = 0
    started, cpu = time.monotonic(), [cpu_seconds(pid) for pid in pids]
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    used = [cpu_seconds(pid) - before for pid, before in zip(pids, cpu, strict=True)]
    publishes = counts[0] * batch
    return {
        "publishes_per_s": publishes / elapsed,
        "gateway_cpu_us_per_publish": used[0] / publishes * 1e6,
        "redis_cpu_us_per_publish": used[1] / publishes * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--batch", default="1,100", help="events per request, comma-separated (default: 1,100)"
    )
    args = parser.parse_args()
    prefix = f"publish-http-{uuid.uuid4().hex[:8]}:"
    with redis.Redis.from_url(args.redis_url) as client:
        redis_pid = int(client.info("server")["process_id"])
    with tempfile.TemporaryDirectory() as logs:
        gateway = Gateway(
            redis_url=args.redis_url,
            key_prefix=prefix,
            log_path=Path(logs) / "gateway.log",
            env={"HUB_PUBLISH_TOKEN": TOKEN, "HUB_LOG_FORMAT": "text"},
        )
        try:
            gateway.start()
            print(f"{'events/request':>14} {'publishes/s':>12} {'gateway µs/pub':>15}"
                  f" {'redis µs/pub':>13}")  # fmt: skip
            for batch in (int(b) for b in args.batch.split(",")):
                pids = (gateway.pid, redis_pid)
                r = uvloop.run(measure(gateway.port, pids, batch, args.connections, args.seconds))
                print(
                    f"{batch:>14} {r['publishes_per_s']:>12,.0f}"
                    f" {r['gateway_cpu_us_per_publish']:>15.1f}"
                    f" {r['redis_cpu_us_per_publish']:>13.1f}"
                )
        finally:
            gateway.close()
            delete_keys(args.redis_url, prefix)


if __name__ == "__main__":
    main()
