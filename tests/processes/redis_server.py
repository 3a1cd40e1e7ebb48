"""A private `redis-server` on a free port, and the shared Redis the tests use by default."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import redis

from .common import (
    Output,
    free_port,
    kill_session,
    log_tail,
    require_tool,
    spawn,
    stop,
    wait_started,
)

SHARED_REDIS_URL = "redis://127.0.0.1:6379"


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
    """Unlinks every key starting with `prefix` (with SCAN: the server never blocks); the count."""
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


class RedisServer:
    """A private `redis-server` on 127.0.0.1, on a free port, in its own directory.

    `sentinel=True` runs it as a Redis Sentinel, configured by `config_path`.
    `persistent=True` turns on append-only persistence (fsync on every write), so what
    was acknowledged survives kill() + start(). start()/restart() always reuse the same
    port and directory; close() (or leaving the `with` block) kills it and removes the
    directory it created. Its output goes to `log_path` (redis.log in its directory), or
    to `output` when that is given.
    """

    def __init__(
        self,
        *,
        persistent: bool = False,
        port: int | None = None,
        directory: Path | None = None,
        extra_args: Sequence[str] = (),
        sentinel: bool = False,
        output: Output | None = None,
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
        self.output: Output = self.log_path if output is None else output
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
        assert self._process is not None, "freeze() before start()"
        os.kill(self._process.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        assert self._process is not None, "thaw() before start()"
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
        # A replica's first sync starts at once, not after the 5 s a primary waits by default
        # for more replicas to share its transfer: a cluster or a failover is ready sooner.
        replication = [] if self.sentinel else ["--repl-diskless-sync-delay", "0"]
        # A sentinel rewrites its configuration file: it must be one, and come first.
        return [
            self.binary, str(self.config_path),
            *(["--sentinel"] if self.sentinel else []),
            *replication,
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
        self._process = spawn(self.command(), self.output)
        try:
            wait_started(
                self._process,
                lambda: redis_answers(self.url, timeout=0.5),
                timeout=timeout,
                name=f"redis-server on port {self.port}",
                goal="answer PING",
                log=self.log_tail,
            )
        except BaseException:
            self.kill()
            raise
        return self

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait; returns the exit code (None when it was never started)."""
        if self._process is None:
            return None
        if self.frozen:
            self.thaw()  # a stopped process would never handle SIGTERM
        return stop(self._process, timeout)

    def kill(self) -> int | None:
        """SIGKILL and wait: a crash, nothing is flushed on the way out."""
        process = self._process
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.kill()
        self.frozen = False
        return process.wait()

    def restart(self, timeout: float = 15.0) -> Self:
        """stop() (SIGTERM) then start() on the same port and directory."""
        self.stop()
        return self.start(timeout)

    def log_tail(self) -> str:
        if isinstance(self.output, Path):
            return log_tail(self.output)
        return f"(written to {getattr(self.output, 'name', 'an open file')})"

    def log_text(self) -> str:
        return log_tail(self.log_path, chars=1_000_000)

    def close(self) -> None:
        """Kills the server (and any child it forked) and removes the directory it created."""
        if self._process is not None:
            kill_session(self._process)  # frozen or not
            self.frozen = False
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
