"""What every server process here shares: ports, tools, logs, starting, stopping."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from .waiting import WaitTimeout, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
LOG_TAIL_CHARS = 4000


class ProcessStartError(RuntimeError):
    """A server process exited, or never became ready, while being started."""


class MissingTool(RuntimeError):
    """A program a helper needs is not installed (tests/conftest.py makes the test skip)."""


def require_tool(name: str) -> str:
    """The path of executable `name`; raises MissingTool when it is not installed."""
    path = shutil.which(name)
    if path is None:
        raise MissingTool(f"{name} not installed")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log file)"
    return text if len(text) <= chars else "...\n" + text[-chars:]


def http_status(host: str, port: int, path: str, timeout: float = 1.0) -> int | None:
    """The status of GET `path`, or None when nothing answers."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


Output = Path | IO[bytes]
"""Where a server's stdout and stderr go: a log file appended to, or a file already open."""


def spawn(
    command: Sequence[str],
    output: Output,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Starts `command` in a session of its own (so kill_session reaches whatever it starts)."""

    def popen(log: IO[bytes]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            list(command),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    if isinstance(output, Path):
        with open(output, "ab") as log:
            return popen(log)
    return popen(output)


def wait_started(
    process: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    *,
    timeout: float,
    name: str,
    goal: str,
    log: Callable[[], str],
) -> None:
    """Returns once `ready()`; ProcessStartError with the log's tail if the process exits first
    or `goal` (what `ready` checks, e.g. "answer PING") is not reached within `timeout` s."""

    def started() -> bool:
        if process.poll() is not None:
            raise ProcessStartError(
                f"{name} exited with {process.returncode} before it would {goal}; log:\n{log()}"
            )
        return ready()

    try:
        wait_until(started, timeout, f"{name} to {goal}")
    except WaitTimeout:
        raise ProcessStartError(
            f"{name} did not {goal} within {timeout:g} s; log:\n{log()}"
        ) from None


def stop(process: subprocess.Popen[bytes], timeout: float, sig: int = signal.SIGTERM) -> int:
    """Sends `sig` and returns the exit code. A process still running after `timeout` s is
    killed, and subprocess.TimeoutExpired raised: it did not stop in time."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def kill_session(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL to the process and everything in its session (stopped or not), then reaps it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


@contextmanager
def running(
    command: Sequence[str],
    output: Output,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stop_signal: int = signal.SIGTERM,
    stop_timeout: float = 15.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """A process for a `with` block: stopped with `stop_signal` at its end, killed if it lingers."""
    process = spawn(command, output, env=env, cwd=cwd)
    try:
        yield process
    finally:
        try:
            stop(process, stop_timeout, stop_signal)
        except subprocess.TimeoutExpired:
            pass
        kill_session(process)
