"""Real server processes for tests: private Redis servers and gateway processes.

Everything here is synchronous and usable without pytest fixtures (each class is
a context manager); tests/conftest.py wraps them into fixtures that stop every
process a test started.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import pytest
import redis

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_REDIS_URL = "redis://127.0.0.1:6379"
LOG_TAIL_CHARS = 4000


class ProcessStartError(RuntimeError):
    """A server process exited, or never became ready, while being started."""


def require_tool(name: str) -> str:
    """The path of executable `name`; skips the calling test when it is not installed."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed")
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


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    """Whether the Redis at `url` answers PING within `timeout` seconds."""
    try:
        with redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        ) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def delete_keys(url: str, prefix: str) -> int:
    """Unlinks every key starting with `prefix` (SCAN, so the server never blocks); returns the count."""
    deleted = 0
    with redis.Redis.from_url(url) as client:
        batch: list[bytes] = []
        for key in client.scan_iter(match=_glob_escape(prefix) + "*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(client.unlink(*batch))
                batch.clear()
        if batch:
            deleted += int(client.unlink(*batch))
    return deleted


def _wait_stopped(process: subprocess.Popen[bytes], timeout: float) -> int:
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        # Never leave a process behind, but still report that it did not stop in time.
        process.kill()
        process.wait()
        raise


class RedisServer:
    """A private `redis-server` on 127.0.0.1, on a free port, in its own directory.

    `sentinel=True` runs it as a Redis Sentinel, configured by `config_path`.
    `persistent=True` turns on append-only persistence (fsync on every write), so what
    was acknowledged survives kill() + start(). start()/restart() always reuse the same
    port and directory; close() (or leaving the `with` block) kills it and removes the
    directory it created.
    """

    def __init__(
        self,
        *,
        persistent: bool = False,
        port: int | None = None,
        directory: Path | None = None,
        extra_args: Sequence[str] = (),
        sentinel: bool = False,
    ) -> None:
        self.binary = require_tool("redis-server")
        self.sentinel = sentinel
        self.port = port if port is not None else free_port()
        self._owns_directory = directory is None
        self.directory = (
            Path(tempfile.mkdtemp(prefix="redis-test-")) if directory is None else directory
        )
        self.persistent = persistent
        self.extra_args = tuple(extra_args)
        self.log_path = self.directory / "redis.log"
        self.config_path = self.directory / "redis.conf"
        self._process: subprocess.Popen[bytes] | None = None
        self.frozen = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def answering(self) -> bool:
        """Running and not frozen."""
        return self.running and not self.frozen

    def freeze(self) -> None:
        """SIGSTOP: the process holds its sockets open and answers nothing (a hung host)."""
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGCONT)
        self.frozen = False

    def command(self) -> list[str]:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.persistent
            else ["--appendonly", "no"]
        )
        if not self.config_path.exists():
            self.config_path.write_text("")
        # A sentinel rewrites its configuration file: it must be one, and come first.
        return [
            self.binary, str(self.config_path),
            *(["--sentinel"] if self.sentinel else []),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--daemonize", "no",
            "--save", "",
            *persistence,
            *self.extra_args,
        ]  # fmt: skip

    def client(self) -> redis.Redis:
        """A new client of this server; close it (or use it in a `with` block)."""
        return redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)

    def start(self, timeout: float = 15.0) -> Self:
        """Starts the server and returns once it answers PING."""
        if self.running:
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                raise ProcessStartError(
                    f"redis-server on port {self.port} exited with {code} while starting;"
                    f" log:\n{log_tail(self.log_path)}"
                )
            if redis_answers(self.url, timeout=0.5):
                return self
            time.sleep(0.05)
        self.kill()
        raise ProcessStartError(
            f"redis-server on port {self.port} did not answer PING within {timeout}s;"
            f" log:\n{log_tail(self.log_path)}"
        )

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait; returns the exit code (None when it was not running)."""
        process = self._process
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        return _wait_stopped(process, timeout)

    def kill(self) -> int | None:
        """SIGKILL and wait: a crash, nothing is flushed on the way out."""
        process = self._process
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.kill()
        return process.wait()

    def restart(self, timeout: float = 15.0) -> Self:
        """stop() (SIGTERM) then start() on the same port and directory."""
        self.stop()
        return self.start(timeout)

    def log_text(self) -> str:
        return log_tail(self.log_path, chars=1_000_000)

    def close(self) -> None:
        """Kills the server (and any child it forked) and removes the directory it created."""
        if self._process is not None:
            try:
                os.killpg(self._process.pid, signal.SIGKILL)  # frozen or not
            except ProcessLookupError:
                pass
            self._process.wait()
        if self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class RedisServers:
    """Factory behind the `private_redis` fixture: starts servers, closes all of them at the end."""

    def __init__(self) -> None:
        self.servers: list[RedisServer] = []

    def __call__(self, *, persistent: bool = False, extra_args: Sequence[str] = ()) -> RedisServer:
        server = RedisServer(persistent=persistent, extra_args=extra_args)
        self.servers.append(server)
        return server.start()

    def close(self) -> None:
        for server in self.servers:
            server.close()


def _http_status(host: str, port: int, path: str, timeout: float) -> int | None:
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


class Gateway:
    """One gateway as a real process (`python -m hub` by default), logging to `log_path`.

    The child gets the test process's environment minus every inherited HUB_*
    variable, then HUB_REDIS_URL, HUB_HOST, HUB_PORT, HUB_KEY_PREFIX and finally `env`.
    It runs in its own session so that close() can also reach anything it started.
    """

    HOST = "127.0.0.1"

    def __init__(
        self,
        *,
        redis_url: str,
        key_prefix: str,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        self.port = port if port is not None else free_port()
        self.log_path = log_path
        self.command = list(command) if command is not None else [sys.executable, "-m", "hub"]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
        self.env.update(
            PYTHONUNBUFFERED="1",
            HUB_REDIS_URL=redis_url,
            HUB_HOST=self.HOST,
            HUB_PORT=str(self.port),
            HUB_KEY_PREFIX=key_prefix,
        )
        self.env.update(env or {})
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
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                self.command,
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait_healthy(self, timeout: float = 15.0, path: str = "/healthz") -> Self:
        """Returns once GET `path` answers 200; raises ProcessStartError with the log's tail otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise ProcessStartError(
                    f"gateway {self.command} exited with {code} before {path} answered;"
                    f" log tail:\n{self.log_tail()}"
                )
            if _http_status(self.HOST, self.port, path, timeout=1.0) == 200:
                return self
            time.sleep(0.05)
        raise ProcessStartError(
            f"gateway {self.command} on port {self.port}: {path} did not answer 200 within"
            f" {timeout}s; log tail:\n{self.log_tail()}"
        )

    def start(self, timeout: float = 15.0) -> Self:
        return self.spawn().wait_healthy(timeout)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        return log_tail(self.log_path, chars)

    def wait(self, timeout: float) -> int:
        """The exit code; raises subprocess.TimeoutExpired if still running after `timeout`."""
        return self.process.wait(timeout)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the exit code (a graceful shutdown)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return _wait_stopped(self.process, timeout)

    def kill(self) -> int:
        """SIGKILL the gateway process alone (a crash) and return its exit code."""
        if self.process.poll() is None:
            self.process.kill()
        return self.process.wait()

    def close(self) -> None:
        """Kills the gateway and whatever it left in its session (for example an embedded Redis)."""
        if self._process is None:
            return
        try:
            os.killpg(self._process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._process.wait()

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
            yield gateway.log_path.name, gateway.log_tail()

    def close(self) -> None:
        for gateway in self.started:
            gateway.close()
