"""The compiled load client and publisher: building them and driving them."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

HERE = Path(__file__).resolve().parent
SOURCES = {"loadclient": ("loadclient.c", ["-pthread"]), "publisher": ("publisher.c", [])}


class BenchError(RuntimeError):
    """A step of the benchmark could not be carried out."""


@dataclass(frozen=True)
class Tools:
    loadclient: Path
    publisher: Path


def build(build_dir: Path) -> Tools:
    """Compile both tools with `cc -O2` (again only when a source is newer)."""
    cc = shutil.which("cc")
    if cc is None:
        raise BenchError("a C compiler (cc) is needed to build the load client")
    build_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, (source, flags) in SOURCES.items():
        src, exe = HERE / source, build_dir / name
        if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
            cmd = [cc, "-O2", "-Wall", "-o", str(exe), str(src), *flags]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise BenchError(f"building {name} failed:\n{done.stderr}")
        out[name] = exe
    return Tools(out["loadclient"], out["publisher"])


class LoadClient:
    """One loadclient process: N SSE streams, steered over its stdin."""

    def __init__(
        self,
        exe: Path,
        port: int,
        path: str,
        conns: int,
        topics: int = 1,
        *,
        threads: int = 2,
        coalesce_us: int = 0,
        burst: int = 256,
        last_event_id: str = "",
        cursors: Path | None = None,
        final: int = 0,
        hold: bool = False,
        ready_timeout: float = 60,
        drain: float = 10,
        max_time: float = 300,
    ) -> None:
        self.conns = conns
        args = [
            str(exe),
            "--port",
            str(port),
            "--path",
            path,
            "--conns",
            str(conns),
            "--topics",
            str(topics),
            "--threads",
            str(threads),
            "--burst",
            str(burst),
            "--coalesce-us",
            str(coalesce_us),
            "--ready-timeout",
            str(ready_timeout),
            "--drain",
            str(drain),
            "--max-time",
            str(max_time),
        ]
        if last_event_id:
            args += ["--last-event-id", last_event_id]
        if cursors is not None:
            args += ["--cursors", str(cursors)]
        if final:
            args += ["--final", str(final)]
        if hold:
            args.append("--hold")
        self._max_time = max_time
        self._result_line: str | None = None
        self._pending = b""
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _line(self, timeout: float) -> str:
        """The client's next line. Read from the descriptor, not through a buffered reader:
        a reader may take two lines at once and leave the second where select() misses it."""
        assert self._proc.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._proc.stdout], [], [], max(0.0, left))
            if not ready:
                raise BenchError(f"load client said nothing for {timeout:.0f} s")
            data = os.read(self._proc.stdout.fileno(), 65536)
            if not data:
                err = self._proc.stderr.read() if self._proc.stderr else ""
                raise BenchError(f"load client exited: {err.strip()[:500]}")
            self._pending += data
        line, _, self._pending = self._pending.partition(b"\n")
        return line.decode().strip()

    def wait_ready(self, timeout: float) -> int:
        """Connected streams once all are up or the client's ready timeout passed."""
        line = self._line(timeout)
        if not line.startswith("READY "):
            raise BenchError(f"load client: unexpected {line[:200]!r}")
        return int(line.split()[1])

    def wait_caught(self, timeout: float) -> bool:
        """With --hold: True once every stream is caught up ("CAUGHT"), False if the client
        finished without (its result is kept for result()) or `timeout` passed."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._line(left)
            except BenchError:
                return False
            if line.startswith("CAUGHT"):
                return True
            if line.startswith("{"):
                self._result_line = line
                return False
        return False

    def _say(self, text: str) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(text + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            pass

    def go(self) -> None:
        self._say("GO")

    def end(self, final_seq: int) -> None:
        self._say(f"END {final_seq}")

    def quit(self) -> None:
        self._say("QUIT")

    def result(self, timeout: float) -> dict[str, Any]:
        line = self._result_line or self._line(timeout)
        while not line.startswith("{"):
            line = self._line(timeout)
        self._proc.wait(timeout=10)
        result: dict[str, Any] = json.loads(line)
        return result

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        for stream in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except BrokenPipeError:
                    # stdin still holds a line the client, gone (its drain ran out), never read
                    pass

    def __enter__(self) -> LoadClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def publish(
    exe: Path,
    *,
    mode: str,
    port: int,
    targets: Path,
    rate: float,
    duration: float = 0,
    count: int = 0,
    sha: str = "",
    maxlen: int = 10_000,
    maxage_ms: int = 0,
    conns: int = 1,
    window: int = 512,
    start_seq: int = 1,
    announce: str = "PUBLISH",
    token: str = "",
    batch: int = 0,
    linger_ms: float = 20,
    ids_out: Path | None = None,
    timeout: float = 120,
) -> dict[str, Any]:
    """Run the publisher to the end; its figures (sent, acked, final_seq, achieved_per_s...).

    `mode`: redis, nchan, hub (POST /publish, one event per request), hub-batch
    (`batch` events per request) or mercure (POST /.well-known/mercure, form-encoded, one
    update per request); `ids_out`: a file of each topic's last event ID."""
    args = [
        str(exe),
        "--mode",
        mode,
        "--port",
        str(port),
        "--targets",
        str(targets),
        "--rate",
        str(rate),
        "--conns",
        str(conns),
        "--window",
        str(window),
        "--start-seq",
        str(start_seq),
    ]
    args += ["--count", str(count)] if count else ["--duration", str(duration)]
    if token:
        args += ["--token", token]
    if mode == "hub-batch":
        args += ["--batch", str(batch or 100), "--linger-ms", str(linger_ms)]
    if ids_out is not None:
        args += ["--ids-out", str(ids_out)]
    if mode == "redis":
        args += [
            "--sha",
            sha,
            "--maxlen",
            str(maxlen),
            "--maxage-ms",
            str(maxage_ms),
            "--announce",
            announce,
        ]
    started = time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise BenchError(
            f"publisher ({mode}) failed ({done.returncode}): {done.stderr.strip()[:500]}"
        )
    result: dict[str, Any] = json.loads(done.stdout)
    result["wall_s"] = time.monotonic() - started
    return result
