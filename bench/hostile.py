"""Hostile clients against a gateway: a process of its own for bench/soak.py (asyncio, raw sockets).

    python bench/hostile.py --port 8000 --per-kind 500 --history-topic h --max-time 120

Four kinds, `--per-kind` connections of each, all from 127.0.0.1. Each connection is kept
up for the whole run: one the gateway drops is opened again a second later.

- `never-reading`: `GET /events?topic=<history>&last_event_id=0-0` (a topic full of large
  events) with a small receive buffer, and not one byte read;
- `slowloris`: a request line, then one header line every few seconds, never the blank line;
- `oversized-body`: `POST /publish` with `Content-Length: 6000000` and a token that is not
  valid, 64 KiB of the body, a little more each second for a while, then nothing;
- `endless-headers`: 64 KiB of header lines at once, then another KiB each second, never
  the blank line.

The kinds that read note the status of the gateway's answer and see it close. A connection
that never reads cannot see a close: the gateway's FIN waits behind the data it could not
send. So every second it also looks up the gateway's end of itself in /proc/net/tcp (same
machine): once that is no longer ESTABLISHED, the gateway has let go (`abandoned`), and the
client reconnects like the others.

It talks to the harness over stdin/stdout like the load client: `READY <json>` once every
connection was tried once, then it runs until `STOP` (or end of stdin, or --max-time) and
prints one JSON object of figures per kind. `HostileClients` drives it from the harness.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import select
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from native import BenchError

KINDS = ("never-reading", "slowloris", "oversized-body", "endless-headers")
HOST = "127.0.0.1"
RECONNECT_SECONDS = 1.0  # plus up to half a second of jitter, so reconnects do not march in step
CONNECT_TIMEOUT = 5.0
SMALL_RCVBUF = 4096  # so the kernel does not read the replay on the never-reading client's behalf
STATE_CHECK_SECONDS = 1.0
SLOWLORIS_LINE_SECONDS = 5.0
TRICKLE_SECONDS = 1.0
MAX_STEPS = 1000  # header lines or body pieces one connection sends at most
BODY_DECLARED = 6_000_000
BODY_FIRST = 64 * 1024
BODY_TRICKLE = 4096
BODY_TRICKLE_STEPS = 15  # then it stalls
HEADER_LINE = 1024
HEADERS_AT_ONCE = 64  # lines of HEADER_LINE bytes: 64 KiB before the first pause
MAX_LIFETIMES = 100_000
TCP_ESTABLISHED, TCP_CLOSE = 1, 7
GATEWAY_SIDE_MAX_AGE = 0.5  # seconds a reading of /proc/net/tcp is reused


class Dropped(Exception):
    """The gateway closed (`closed`) or reset (`reset`) the connection."""

    def __init__(self, how: str) -> None:
        super().__init__(how)
        self.how = how


@dataclass
class KindStats:
    opened: int = 0
    refused: int = 0  # the connection could not be opened (refused, timed out, no descriptor)
    dropped: int = 0  # the gateway closed or reset a connection this side still held
    held: int = 0
    peak_held: int = 0
    held_at_stop: int = 0
    gateway_held_at_stop: int = 0  # of those, how many the gateway's end still held
    bytes_sent: int = 0
    refusals: Counter[str] = field(default_factory=Counter)
    endings: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)  # status codes the gateway sent
    lifetimes: list[float] = field(default_factory=list)  # seconds each dropped one was held
    open_ports: set[int] = field(default_factory=set)  # local ports of the connections held now

    def summary(self) -> dict[str, Any]:
        life = sorted(self.lifetimes)
        return {
            "opened": self.opened,
            "refused": self.refused,
            "dropped": self.dropped,
            "held_at_stop": self.held_at_stop,
            "gateway_held_at_stop": self.gateway_held_at_stop,
            "peak_held": self.peak_held,
            "bytes_sent": self.bytes_sent,
            "refusals": dict(self.refusals),
            "endings": dict(self.endings),
            "answers": dict(self.answers),
            "lifetime_s": {"p50": round(life[len(life) // 2], 2), "max": round(life[-1], 2)}
            if life
            else None,
        }


class GatewaySide:
    """The gateway's end of each connection, from /proc/net/tcp: does the gateway still hold it?"""

    def __init__(self, port: int) -> None:
        self._port = f"{port:04X}"
        self._states: dict[int, int] = {}  # client port -> TCP state of the gateway's socket
        self._read_at = -1.0

    def refresh(self) -> None:
        states = {}
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                fields = line.split(None, 4)
                local, remote, state = fields[1], fields[2], fields[3]
                if local.endswith(":" + self._port) and not remote.endswith(":0000"):
                    states[int(remote.rsplit(":", 1)[1], 16)] = int(state, 16)
        self._states = states
        self._read_at = time.monotonic()

    def holds(self, client_port: int) -> bool:
        # Not yet accepted is ESTABLISHED too; a socket the gateway closed with data unsent
        # goes to FIN_WAIT1 (or is gone).
        if time.monotonic() - self._read_at > GATEWAY_SIDE_MAX_AGE:
            self.refresh()
        return self._states.get(client_port) == TCP_ESTABLISHED


class Connection:
    """One open hostile connection: sends without ever blocking, and notices when it is dropped."""

    def __init__(
        self, sock: socket.socket, stats: KindStats, reads: bool, gateway: GatewaySide
    ) -> None:
        self.sock = sock
        self.stats = stats
        self.reads = reads
        self.port: int = sock.getsockname()[1]
        self._gateway = gateway
        self._unsent = b""
        self._answered = False

    def send(self, data: bytes) -> None:
        """Queue `data` and hand the socket what it takes now; the rest waits for the next call."""
        self._unsent += data
        try:
            sent = self.sock.send(self._unsent)
        except BlockingIOError:
            return
        except OSError:  # EPIPE, ECONNRESET: the gateway is gone
            raise Dropped("reset") from None
        self.stats.bytes_sent += sent
        self._unsent = self._unsent[sent:]

    async def pause(self, seconds: float) -> None:
        """Let `seconds` pass; Dropped if the gateway lets go meanwhile."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.reads:
                await self._read(left)
            else:
                await asyncio.sleep(min(left, STATE_CHECK_SECONDS))
                self._check_state()
            if self._unsent:
                self.send(b"")

    async def hold(self, seconds: float) -> None:
        """Send nothing more; stay until dropped or `seconds` are over."""
        await self.pause(seconds)

    async def _read(self, within: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            data = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), within)
        except TimeoutError:
            return
        except ConnectionResetError:
            raise Dropped("reset") from None
        if not data:
            raise Dropped("closed")
        if not self._answered:
            self._answered = True
            status = (
                data.split(b" ", 2)[1].decode(errors="replace")
                if data.startswith(b"HTTP/")
                else "?"
            )
            self.stats.answers[status] += 1

    def _check_state(self) -> None:
        if self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            raise Dropped("reset")
        state = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
        if state != TCP_ESTABLISHED:
            raise Dropped("reset" if state == TCP_CLOSE else "closed")
        if not self._gateway.holds(self.port):
            raise Dropped("abandoned")


@dataclass(frozen=True)
class Target:
    port: int
    history_topic: str
    max_time: float
    gateway: GatewaySide

    def head(self, request_line: str) -> bytes:
        return f"{request_line} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n".encode()


async def never_reading(conn: Connection, target: Target) -> None:
    conn.send(
        target.head(f"GET /events?topic={target.history_topic}&last_event_id=0-0")
        + b"Accept: text/event-stream\r\n\r\n"
    )
    await conn.hold(target.max_time)


async def slowloris(conn: Connection, target: Target) -> None:
    conn.send(target.head(f"GET /events?topic={target.history_topic}"))
    for step in range(MAX_STEPS):
        await conn.pause(SLOWLORIS_LINE_SECONDS)
        conn.send(f"X-Slow-{step}: {step}\r\n".encode())
    await conn.hold(target.max_time)


async def oversized_body(conn: Connection, target: Target) -> None:
    conn.send(
        target.head("POST /publish")
        + b"Authorization: Bearer not-the-token\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {BODY_DECLARED}\r\n\r\n".encode()
        + b"x" * BODY_FIRST
    )
    for _ in range(BODY_TRICKLE_STEPS):
        await conn.pause(TRICKLE_SECONDS)
        conn.send(b"x" * BODY_TRICKLE)
    await conn.hold(target.max_time)


def _header_line(step: int) -> bytes:
    name = f"X-Pad-{step}: ".encode()
    return name + b"a" * (HEADER_LINE - len(name) - 2) + b"\r\n"


async def endless_headers(conn: Connection, target: Target) -> None:
    conn.send(
        target.head(f"GET /events?topic={target.history_topic}")
        + b"".join(_header_line(step) for step in range(HEADERS_AT_ONCE))
    )
    for step in range(HEADERS_AT_ONCE, MAX_STEPS):
        await conn.pause(TRICKLE_SECONDS)
        conn.send(_header_line(step))
    await conn.hold(target.max_time)


Behaviour = Callable[[Connection, Target], Awaitable[None]]
BEHAVIOURS: dict[str, tuple[Behaviour, bool]] = {  # kind -> (what it does, whether it reads)
    "never-reading": (never_reading, False),
    "slowloris": (slowloris, True),
    "oversized-body": (oversized_body, True),
    "endless-headers": (endless_headers, True),
}


async def _connect(port: int, rcvbuf: int, stats: KindStats) -> socket.socket | None:
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        stats.refusals[os.strerror(exc.errno or 0)] += 1
        return None
    sock.setblocking(False)
    if rcvbuf:
        sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf
        )  # before connect: sets the window
    try:
        await asyncio.wait_for(
            asyncio.get_running_loop().sock_connect(sock, (HOST, port)), CONNECT_TIMEOUT
        )
        return sock
    except TimeoutError:
        stats.refusals["timeout"] += 1
    except OSError as exc:
        stats.refusals[os.strerror(exc.errno or 0)] += 1
    sock.close()
    return None


async def keep_up(kind: str, target: Target, stats: KindStats) -> None:
    """One hostile client for the whole run: open, attack until dropped, open again."""
    behaviour, reads = BEHAVIOURS[kind]
    rcvbuf = 0 if reads else SMALL_RCVBUF
    deadline = time.monotonic() + target.max_time
    while time.monotonic() < deadline:
        sock = await _connect(target.port, rcvbuf, stats)
        if sock is None:
            stats.refused += 1
        else:
            await _attack(Connection(sock, stats, reads, target.gateway), behaviour, target)
        await asyncio.sleep(RECONNECT_SECONDS + random.uniform(0, 0.5))


async def _attack(conn: Connection, behaviour: Behaviour, target: Target) -> None:
    stats = conn.stats
    stats.opened += 1
    stats.held += 1
    stats.open_ports.add(conn.port)
    stats.peak_held = max(stats.peak_held, stats.held)
    started = time.monotonic()
    try:
        await behaviour(conn, target)
    except Dropped as exc:
        stats.dropped += 1
        stats.endings[exc.how] += 1
        if len(stats.lifetimes) < MAX_LIFETIMES:
            stats.lifetimes.append(time.monotonic() - started)
    finally:
        stats.held -= 1
        stats.open_ports.discard(conn.port)
        conn.sock.close()


def _raise_open_files() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _stop_on_stdin(stop: asyncio.Event) -> None:
    """Set `stop` on a STOP line or the end of stdin."""
    loop = asyncio.get_running_loop()

    def readable() -> None:
        data = os.read(sys.stdin.fileno(), 1024)
        if not data or b"STOP" in data:
            loop.remove_reader(sys.stdin.fileno())
            stop.set()

    loop.add_reader(sys.stdin.fileno(), readable)


async def run(target: Target, per_kind: int, ramp_seconds: float) -> dict[str, Any]:
    started = time.monotonic()
    stats = {kind: KindStats() for kind in KINDS}
    stop = asyncio.Event()
    _stop_on_stdin(stop)
    tasks: list[asyncio.Task[None]] = []
    pause = ramp_seconds / max(1, per_kind * len(KINDS))
    for _ in range(per_kind):
        for kind in KINDS:
            tasks.append(asyncio.create_task(keep_up(kind, target, stats[kind])))
            await asyncio.sleep(pause)
    ready_by = time.monotonic() + CONNECT_TIMEOUT + 1
    while time.monotonic() < ready_by and not stop.is_set():
        if sum(s.opened + s.refused for s in stats.values()) >= len(tasks):
            break
        await asyncio.sleep(0.05)
    print("READY " + json.dumps({kind: s.held for kind, s in stats.items()}), flush=True)
    why = "stop"
    try:
        await asyncio.wait_for(
            stop.wait(), max(0.0, target.max_time - (time.monotonic() - started))
        )
    except TimeoutError:
        why = "max-time"
    target.gateway.refresh()
    for s in stats.values():
        s.held_at_stop = s.held
        s.gateway_held_at_stop = sum(1 for port in s.open_ports if target.gateway.holds(port))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "why": why,
        "per_kind": per_kind,
        "run_s": round(time.monotonic() - started, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "kinds": {kind: s.summary() for kind, s in stats.items()},
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--per-kind", type=int, default=500, help="connections of each kind")
    p.add_argument("--history-topic", required=True, help="a topic that holds many large events")
    p.add_argument("--ramp", type=float, default=5.0, help="seconds over which to open them all")
    p.add_argument("--max-time", type=float, default=300.0, help="end by itself after this long")
    args = p.parse_args(argv)
    _raise_open_files()
    target = Target(args.port, args.history_topic, args.max_time, GatewaySide(args.port))
    try:
        import uvloop

        result = uvloop.run(run(target, args.per_kind, args.ramp))
    except ImportError:
        result = asyncio.run(run(target, args.per_kind, args.ramp))
    print(json.dumps(result), flush=True)
    return 0


class HostileClients:
    """The harness's side: one hostile.py process, steered over its stdin."""

    def __init__(
        self,
        port: int,
        per_kind: int,
        history_topic: str,
        ramp: float,
        max_time: float,
        log: IO[bytes],
    ) -> None:
        args = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--port",
            str(port),
            "--per-kind",
            str(per_kind),
            "--history-topic",
            history_topic,
            "--ramp",
            str(ramp),
            "--max-time",
            str(max_time),
        ]
        self._proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1
        )

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _line(self, timeout: float) -> str:
        assert self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        line = self._proc.stdout.readline() if ready else ""
        if not line:
            how = "exited" if self._proc.poll() is not None else f"said nothing for {timeout:.0f} s"
            raise BenchError(f"the hostile clients {how} (their log has more)")
        return line.strip()

    def wait_ready(self, timeout: float) -> dict[str, int]:
        """Connections held of each kind once each was tried once."""
        line = self._line(timeout)
        if not line.startswith("READY "):
            raise BenchError(f"hostile clients: unexpected {line[:200]!r}")
        held: dict[str, int] = json.loads(line[len("READY ") :])
        return held

    def stop(self, timeout: float) -> dict[str, Any]:
        """Close every hostile connection; the figures."""
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write("STOP\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            pass
        line = self._line(timeout)
        while not line.startswith("{"):
            line = self._line(timeout)
        result: dict[str, Any] = json.loads(line)
        self._proc.wait(timeout=10)
        return result

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                stream.close()

    def __enter__(self) -> HostileClients:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
