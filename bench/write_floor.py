"""The floor under sparse delivery: what one SSE frame per event costs a bare uvloop server.

    python bench/write_floor.py                  # 10,000 streams, 5,000 events/s, 8 s
    python bench/write_floor.py --streams 1000 --rate 2000 --seconds 5

A server with no framework and no Redis: it answers each of the load client's
streams with SSE headers, then writes one chunked frame per event straight to
its transport, each event to another stream (as in `sparse-10k`), and reports
its own CPU per write. The gateway's cost per delivery in `sparse-10k` can get
no lower than this on the same machine; the difference is the gateway's own
work (reading Redis, framing, uvicorn's `send`).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from pathlib import Path

import uvloop
from native import LoadClient, build
from run import raise_open_files

HERE = Path(__file__).resolve().parent
HEADERS = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


class Stream(asyncio.Protocol):
    """One stream: its request names its topic (`?id=b<n>`); it is then only written to."""

    def __init__(self, streams: dict[int, asyncio.Transport]) -> None:
        self.streams = streams
        self.request = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.request += data
        if b"\r\n\r\n" in self.request:
            target = self.request.split(b" ", 2)[1]
            self.streams[int(target.split(b"id=b")[1].split(b"&")[0])] = self.transport  # type: ignore[assignment]
            self.transport.write(HEADERS)  # type: ignore[attr-defined]
            self.request = b""


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def serve(args: argparse.Namespace) -> None:
    streams: dict[int, asyncio.Transport] = {}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Stream(streams), "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    tools = build(HERE / "build")
    client = LoadClient(
        tools.loadclient, port, "/sub?id=b%d", args.streams, args.streams, burst=1000,
        ready_timeout=60, max_time=args.seconds + 120,
    )  # fmt: skip
    with client:
        await loop.run_in_executor(None, client.wait_ready, 70)
        await asyncio.sleep(1)
        client.go()
        cpu0, t0, written = cpu_seconds(), time.monotonic(), 0
        while (elapsed := time.monotonic() - t0) < args.seconds:
            while written < int(elapsed * args.rate):
                topic, seq = written % args.streams, written // args.streams + 1
                body = b'id: %d-0\ndata: {"seq":%d,"t":%d}\n\n' % (written, seq, time.time_ns())
                streams[topic].write(b"%x\r\n%b\r\n" % (len(body), body))
                written += 1
            await asyncio.sleep(0.001)
        cpu = cpu_seconds() - cpu0
        client.end(written // args.streams)
        result = await loop.run_in_executor(None, client.result, 60)
    server.close()
    print(
        f"{written:,} writes to {args.streams:,} streams at {args.rate:,.0f}/s: "
        f"{cpu / written * 1e6:.1f} µs of server CPU per write "
        f"(the client saw {result['deliveries']:,} events, lost {result['lost']}, "
        f"p99 {result['lat_us']['p99'] / 1000:.1f} ms)"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=5_000.0, help="events/s in all")
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    raise_open_files()
    uvloop.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
