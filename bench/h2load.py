"""h2load (Debian: nghttp2-client) holding SSE streams open for a fixed time, and its report.

An SSE response never ends, so h2load runs in its duration mode (`-D`): each client opens
its connection, issues its `-m` requests (HTTP/2 streams, or one HTTP/1.1 request with
`-m 1`), reads the bodies as they come and, when the duration is over, stops and prints
its totals. No request is ever *done*: `requests: … started` says how many streams were
opened (a stream the server closes is reopened, so more than asked means streams were
lost), `status codes` how many answered 2xx, and `traffic: … data` the response bytes
received (after TLS, HTTP/1.1 chunked coding and HTTP/2 framing), which is the figure that
counts what the clients got.
"""

from __future__ import annotations

import math
import re
import subprocess
from dataclasses import dataclass
from types import TracebackType
from typing import IO

from native import BenchError


@dataclass(frozen=True)
class Report:
    """What h2load printed at its end."""

    started: int  # requests (streams) opened
    status_2xx: int
    errored: int  # requests that could not be sent or whose connection failed
    total_bytes: int  # everything read, after TLS: headers, framing and data
    header_bytes: int
    data_bytes: int  # response bodies
    application_protocol: str  # "http/1.1" or "h2"
    tls_protocol: str  # "" without TLS
    cipher: str


def command(
    url: str, *, connections: int, streams: int, seconds: float, http1: bool, threads: int = 1
) -> list[str]:
    """The h2load command line: `connections` × `streams` streams to `url` for `seconds`."""
    args = ["h2load", "--h1"] if http1 else ["h2load"]
    return [
        *args,
        "-c",
        str(connections),
        "-m",
        str(streams),
        "-t",
        str(threads),
        "-D",
        str(math.ceil(seconds)),
        url,
    ]


class H2Load:
    """One h2load process, started at once; `report()` waits for its end and parses it."""

    def __init__(self, args: list[str], binary: str, log: IO[bytes]) -> None:
        self.args = args
        self._log = log
        self._proc = subprocess.Popen(
            [binary, *args[1:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    @property
    def pid(self) -> int:
        return self._proc.pid

    def report(self, timeout: float) -> Report:
        try:
            out, err = self._proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"h2load did not end within {timeout:.0f} s") from exc
        self._log.write(b"$ " + " ".join(self.args).encode() + b"\n" + out + err)
        if self._proc.returncode != 0:
            raise BenchError(
                f"h2load exited with {self._proc.returncode}: {err.decode(errors='replace')[:300]}"
            )
        return parse(out.decode(errors="replace"))

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.communicate()

    def __enter__(self) -> H2Load:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _match(pattern: str, text: str) -> re.Match[str]:
    found = re.search(pattern, text, re.MULTILINE)
    if found is None:
        raise BenchError(f"h2load's report has no line matching {pattern!r}: {text[-600:]!r}")
    return found


def _optional(pattern: str, text: str) -> str:
    found = re.search(pattern, text, re.MULTILINE)
    return found.group(1).strip() if found else ""


def parse(text: str) -> Report:
    requests = _match(r"^requests: \d+ total, (\d+) started, .*?, (\d+) errored", text)
    traffic = _match(
        r"^traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers .*?, .*?\((\d+)\) data", text
    )
    return Report(
        started=int(requests.group(1)),
        status_2xx=int(_match(r"^status codes: (\d+) 2xx", text).group(1)),
        errored=int(requests.group(2)),
        total_bytes=int(traffic.group(1)),
        header_bytes=int(traffic.group(2)),
        data_bytes=int(traffic.group(3)),
        application_protocol=_optional(r"^Application protocol: (.+)$", text),
        tls_protocol=_optional(r"^TLS Protocol: (.+)$", text),
        cipher=_optional(r"^Cipher: (.+)$", text),
    )


def version(binary: str) -> str:
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else "unknown"
