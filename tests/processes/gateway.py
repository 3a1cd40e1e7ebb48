"""Gateways as real processes (`python -m hub`), alone or several sharing a Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from .common import (
    LOG_TAIL_CHARS,
    REPO_ROOT,
    Output,
    free_port,
    http_status,
    kill_session,
    log_tail,
    spawn,
    stop,
    wait_started,
)


def gateway_environment(
    redis_url: str, key_prefix: str, port: int, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A gateway's environment: this process's, minus every inherited HUB_* variable, then
    HUB_REDIS_URL, HUB_HOST, HUB_PORT, HUB_KEY_PREFIX and finally `env`."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    environment.update(
        PYTHONUNBUFFERED="1",
        HUB_REDIS_URL=redis_url,
        HUB_HOST=Gateway.HOST,
        HUB_PORT=str(port),
        HUB_KEY_PREFIX=key_prefix,
    )
    environment.update(env or {})
    return environment


class Gateway:
    """One gateway as a real process (`python -m hub` by default), logging to `log_path`.

    The child's environment is gateway_environment(...) (no inherited HUB_*). It runs
    in its own session so that close() can also reach anything it started. `output`,
    an open file, takes its output instead of `log_path` (the benchmark keeps each
    system's processes in one log).
    """

    HOST = "127.0.0.1"

    def __init__(
        self,
        *,
        redis_url: str,
        key_prefix: str,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        command: Sequence[str] | None = None,
        output: Output | None = None,
    ) -> None:
        self.output: Output
        if output is not None:
            self.output = output
        elif log_path is not None:
            self.output = log_path
        else:
            raise ValueError("a Gateway logs to log_path or to output: give one of them")
        self.port = port if port is not None else free_port()
        self.log_path = log_path
        self.command = list(command) if command is not None else [sys.executable, "-m", "hub"]
        self.env = gateway_environment(redis_url, key_prefix, self.port, env)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.HOST}:{self.port}"

    @property
    def process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError("gateway not started")
        return self._process

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def spawn(self) -> Self:
        """Starts the process without waiting for it to answer."""
        if self._process is not None:
            raise RuntimeError("a Gateway object runs its process once; make a new one")
        self._process = spawn(self.command, self.output, env=self.env, cwd=REPO_ROOT)
        return self

    def answers(self, path: str = "/healthz") -> bool:
        """Whether GET `path` answers 200 now."""
        return http_status(self.HOST, self.port, path, timeout=1.0) == 200

    def wait_healthy(self, timeout: float = 15.0, path: str = "/healthz") -> Self:
        """Returns once GET `path` answers 200; else ProcessStartError with the log's tail."""
        wait_started(
            self.process,
            lambda: self.answers(path),
            timeout=timeout,
            name=f"gateway {self.command} on port {self.port} (GET {path})",
            goal="answer 200",
            log=self.log_tail,
        )
        return self

    def start(self, timeout: float = 15.0) -> Self:
        return self.spawn().wait_healthy(timeout)

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        if self.log_path is None:
            return f"(written to {getattr(self.output, 'name', 'an open file')})"
        return log_tail(self.log_path, chars)

    def wait(self, timeout: float) -> int:
        """The exit code; raises subprocess.TimeoutExpired if still running after `timeout`."""
        return self.process.wait(timeout)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the exit code (a graceful shutdown)."""
        return stop(self.process, timeout)

    def kill(self) -> int:
        """SIGKILL the gateway process alone (a crash) and return its exit code."""
        if self.process.poll() is None:
            self.process.kill()
        return self.process.wait()

    def close(self) -> None:
        """Kills the gateway and whatever it left in its session (for example an embedded Redis)."""
        if self._process is not None:
            kill_session(self._process)

    def __enter__(self) -> Self:
        if self._process is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Gateways:
    """Factory behind the `gateway` fixture: every gateway it started is closed at the end."""

    def __init__(self, log_dir: Path, redis_url: str, key_prefix: str) -> None:
        self.log_dir = log_dir
        self.redis_url = redis_url
        self.key_prefix = key_prefix
        self.started: list[Gateway] = []

    def new(
        self,
        env: Mapping[str, str] | None = None,
        *,
        redis_url: str | None = None,
        key_prefix: str | None = None,
        port: int | None = None,
        command: Sequence[str] | None = None,
    ) -> Gateway:
        """A configured, not yet started Gateway that will be closed at the end."""
        gateway = Gateway(
            redis_url=self.redis_url if redis_url is None else redis_url,
            key_prefix=self.key_prefix if key_prefix is None else key_prefix,
            log_path=self.log_dir / f"gateway-{len(self.started)}.log",
            env=env,
            port=port,
            command=command,
        )
        self.started.append(gateway)
        return gateway

    def __call__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        redis_url: str | None = None,
        key_prefix: str | None = None,
        port: int | None = None,
        command: Sequence[str] | None = None,
        wait_ready: bool = True,
        timeout: float = 15.0,
    ) -> Gateway:
        gateway = self.new(
            env, redis_url=redis_url, key_prefix=key_prefix, port=port, command=command
        )
        gateway.spawn()
        return gateway.wait_healthy(timeout) if wait_ready else gateway

    def many(
        self,
        count: int,
        env: Mapping[str, str] | None = None,
        *,
        redis_url: str | None = None,
        key_prefix: str | None = None,
        command: Sequence[str] | None = None,
        timeout: float = 15.0,
    ) -> list[Gateway]:
        """`count` gateways sharing Redis and key prefix, started in parallel."""
        gateways = [
            self.new(env, redis_url=redis_url, key_prefix=key_prefix, command=command).spawn()
            for _ in range(count)
        ]
        # One deadline for all: they boot concurrently.
        deadline = time.monotonic() + timeout
        for gateway in gateways:
            gateway.wait_healthy(max(deadline - time.monotonic(), 1.0))
        return gateways

    def logs(self) -> Iterator[tuple[str, str]]:
        for gateway in self.started:
            yield (
                (gateway.log_path.name if gateway.log_path else str(gateway.port)),
                gateway.log_tail(),
            )

    def close(self) -> None:
        for gateway in self.started:
            gateway.close()
