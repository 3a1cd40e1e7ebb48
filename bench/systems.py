"""The systems under test, each started fresh on free 127.0.0.1 ports and stopped after use.

- `hub`: one gateway process (`python -m hub`).
- `hub-x2`: two gateway processes behind nginx.
- `baseline`: bench/baseline_app.py under uvicorn (one Redis subscription per client).
- `nchan`: nginx with the Nchan module, one worker, EventSource subscribers, HTTP publisher.

The hub and the baseline read what the hub's publish script announces in Redis; Nchan
gets the same events over its HTTP publisher.
"""

from __future__ import annotations

import getpass
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import redis

from hub.config import Settings
from hub.topics import Keys
from native import BenchError
from procstat import tree
from hub.publish import PUBLISH_SCRIPT
from publisher.client import Publisher

HERE = Path(__file__).resolve().parent
NCHAN_MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")
NGINX_FD_LIMIT = 20_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def topic_name(index: int) -> str:
    return f"b{index}"


def _http_status(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def wait_http(port: int, path: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Until GET path answers 200; BenchError if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{proc.args!r} exited with {proc.returncode} while starting")
        try:
            if _http_status(port, path) == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise BenchError(f"127.0.0.1:{port}{path} did not answer 200 within {timeout:.0f} s")


@contextmanager
def process(args: list[str], log: IO[bytes], env: dict[str, str] | None = None,
            stop_signal: int = signal.SIGTERM) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                            stdin=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(stop_signal)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class RedisServer:
    """A private redis-server for the run: nothing on disk, room for 19,000 clients."""

    def __init__(self, log: IO[bytes]) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self._stack = ExitStack()
        self._log = log

    def __enter__(self) -> RedisServer:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--maxclients", "19000", "--protected-mode", "no",
                "--loglevel", "warning"]
        self.proc = self._stack.enter_context(process(args, self._log))
        self.client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise BenchError("the private redis-server did not start") from None
                time.sleep(0.05)
        self.sha: str = self.client.script_load(PUBLISH_SCRIPT)
        return self

    def flush(self) -> None:
        self.client.flushall()
        self.sha = self.client.script_load(PUBLISH_SCRIPT)

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self._stack.close()


@dataclass
class Endpoint:
    """A started system: where clients connect and how events are published to it."""

    port: int
    path: str  # printf format, %d = topic index
    pid_groups: Callable[[], dict[str, list[int]]]
    publish_mode: str  # "redis" or "nchan"
    publish_port: int
    prefix: str = ""
    storm_publish_path: str = ""
    notes: list[str] = field(default_factory=list)

    def pids(self) -> list[int]:
        return [pid for group in self.pid_groups().values() for pid in group]

    def targets(self, topics: int, directory: Path, storm: bool = False) -> Path:
        """The publisher's targets file for topics 0..topics-1."""
        path = directory / f"targets-{self.publish_mode}-{topics}{'-storm' if storm else ''}.txt"
        keys = Keys(self.prefix)
        with path.open("w") as f:
            for i in range(topics):
                t = topic_name(i)
                if self.publish_mode == "redis":
                    f.write(f"{keys.stream(t)} {keys.channel(t)}\n")
                else:
                    where = self.storm_publish_path if storm else "/pub"
                    f.write(f"{where}?id={t}\n")
        return path

    def seed(self, redis_url: str, topic: str, data: str) -> str:
        """Publish one event and return its ID (the cursor clients resume from)."""
        if self.publish_mode == "redis":
            settings = Settings(redis_url=redis_url, key_prefix=self.prefix)
            with Publisher(settings) as pub:
                return pub.publish(topic, data)
        conn = http.client.HTTPConnection("127.0.0.1", self.publish_port, timeout=10)
        try:
            conn.request("POST", f"{self.storm_publish_path}?id={topic}", body=data,
                         headers={"Accept": "text/json"})
            answer = conn.getresponse()
            body = answer.read()
            if answer.status not in (200, 201, 202):
                raise BenchError(f"nchan publish answered {answer.status}")
            return str(json.loads(body)["last_message_id"])
        finally:
            conn.close()


@dataclass(frozen=True)
class RunContext:
    redis: RedisServer
    prefix: str
    log: IO[bytes]
    workdir: Path
    env: Mapping[str, str] = field(default_factory=dict)  # more HUB_* settings for the gateway


def _hub_env(ctx: RunContext, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "HUB_REDIS_URL": ctx.redis.url,
        "HUB_HOST": "127.0.0.1",
        "HUB_PORT": str(port),
        "HUB_KEY_PREFIX": ctx.prefix,
        "HUB_HEARTBEAT_SECONDS": "15",
        "HUB_SHUTDOWN_SECONDS": "5",
        "HUB_LOG_FORMAT": "text",
    })
    env.update(ctx.env)
    # one process per gateway: the bench places the processes itself
    for name in ("HUB_PROCESSES", "HUB_WORKERS"):
        env[name] = "1"
    return env


@contextmanager
def _hub_gateway(ctx: RunContext) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    with process([sys.executable, "-m", "hub"], ctx.log, _hub_env(ctx, port)) as proc:
        wait_http(port, "/readyz", proc)
        yield port, proc


def _nginx_conf(workdir: Path, body: str, workers: int, modules: str = "") -> Path:
    user = f"user {getpass.getuser()};" if os.geteuid() == 0 else ""
    (workdir / "tmp").mkdir(exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(f"""{modules}
{user}
daemon off;
worker_processes {workers};
worker_rlimit_nofile {NGINX_FD_LIMIT};
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections {NGINX_FD_LIMIT - 500}; multi_accept on; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/tmp/body;
  proxy_temp_path {workdir}/tmp/proxy;
{body}
}}
""")
    return conf


@contextmanager
def _nginx(ctx: RunContext, body: str, workers: int, modules: str = ""
           ) -> Iterator[subprocess.Popen[bytes]]:
    with tempfile.TemporaryDirectory(prefix="nginx-", dir=ctx.workdir) as tmp:
        conf = _nginx_conf(Path(tmp), body, workers, modules)
        check = subprocess.run(["nginx", "-t", "-p", tmp, "-c", str(conf)], capture_output=True,
                               text=True)
        if check.returncode != 0:
            raise BenchError(f"nginx config rejected: {check.stderr.strip()[:500]}")
        with process(["nginx", "-p", tmp, "-c", str(conf)], ctx.log) as proc:
            try:
                yield proc
            finally:
                err = Path(tmp, "error.log")
                if err.exists():
                    ctx.log.write(err.read_bytes()[-20_000:])


@contextmanager
def hub(ctx: RunContext) -> Iterator[Endpoint]:
    with _hub_gateway(ctx) as (port, proc):
        yield Endpoint(port, "/events?topic=b%d", lambda: {"gateway": tree(proc.pid)}, "redis",
                       ctx.redis.port, ctx.prefix)


@contextmanager
def hub_x2(ctx: RunContext) -> Iterator[Endpoint]:
    with ExitStack() as stack:
        gateways = [stack.enter_context(_hub_gateway(ctx)) for _ in range(2)]
        port = free_port()
        servers = "\n".join(f"    server 127.0.0.1:{p};" for p, _ in gateways)
        body = f"""
  upstream hubs {{
{servers}
  }}
  server {{
    listen 127.0.0.1:{port} backlog=4096 reuseport;
    location = /nginx-ready {{ return 200 "ok"; }}
    location / {{
      proxy_pass http://hubs;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_buffering off;
      proxy_cache off;
      proxy_read_timeout 1h;
      proxy_send_timeout 1h;
    }}
  }}"""
        # two workers: one would need two descriptors per stream, past the open-file limit at 10k
        ngx = stack.enter_context(_nginx(ctx, body, workers=2))
        wait_http(port, "/nginx-ready", ngx)

        def groups() -> dict[str, list[int]]:
            return {"gateway": [pid for _, p in gateways for pid in tree(p.pid)],
                    "nginx": tree(ngx.pid)}

        yield Endpoint(port, "/events?topic=b%d", groups, "redis", ctx.redis.port, ctx.prefix)


@contextmanager
def baseline(ctx: RunContext) -> Iterator[Endpoint]:
    port = free_port()
    env = _hub_env(ctx, port)
    args = [sys.executable, "-m", "uvicorn", "--app-dir", str(HERE), "baseline_app:app",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
            "--no-access-log", "--backlog", "4096"]
    with process(args, ctx.log, env) as proc:
        wait_http(port, "/healthz", proc)
        yield Endpoint(port, "/events?topic=b%d", lambda: {"server": tree(proc.pid)}, "redis",
                       ctx.redis.port, ctx.prefix)


@contextmanager
def nchan(ctx: RunContext) -> Iterator[Endpoint]:
    if not NCHAN_MODULE.exists():
        raise BenchError(f"Nchan is not installed ({NCHAN_MODULE} is missing)")
    port = free_port()
    body = f"""
  nchan_shared_memory_size 512m;
  keepalive_requests 100000000;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = /nginx-ready {{ return 200 "ok"; }}
    location = /pub {{
      nchan_publisher http;
      nchan_channel_id $arg_id;
      nchan_message_buffer_length 10;
      nchan_message_timeout 1h;
    }}
    location = /pub-storm {{
      nchan_publisher http;
      nchan_channel_id $arg_id;
      nchan_message_buffer_length 2000;
      nchan_message_timeout 1h;
    }}
    location = /sub {{
      nchan_subscriber eventsource;
      nchan_channel_id $arg_id;
      nchan_subscriber_first_message newest;
    }}
  }}"""
    with _nginx(ctx, body, workers=1, modules=f"load_module {NCHAN_MODULE};") as ngx:
        wait_http(port, "/nginx-ready", ngx)
        yield Endpoint(port, "/sub?id=b%d", lambda: {"nginx": tree(ngx.pid)}, "nchan", port,
                       storm_publish_path="/pub-storm")


SYSTEMS: dict[str, Callable[[RunContext], AbstractContextManager[Endpoint]]] = {
    "hub": hub,
    "hub-x2": hub_x2,
    "baseline": baseline,
    "nchan": nchan,
}

LABELS = {
    "hub": "hub (1 gateway)",
    "hub-x2": "hub (2 gateways + nginx)",
    "baseline": "baseline (sse-starlette, 1 Redis sub/client)",
    "nchan": "Nchan (1 worker)",
}
