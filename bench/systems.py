"""The systems under test, each started fresh on free 127.0.0.1 ports and stopped after use.

- `hub`: one gateway process (`python -m hub`).
- `hub-mercure`: the same gateway, through its Mercure face: clients subscribe on
  `GET /.well-known/mercure?match=<topic>`, events are published with
  `POST /.well-known/mercure` (form-encoded, one update per request).
- `hub-x2`: two gateway processes behind nginx.
- `baseline`: bench/baseline_app.py under uvicorn (one Redis subscription per client).
- `nchan`: nginx with the Nchan module, one worker, EventSource subscribers, HTTP publisher.

The hub and the baseline read what the hub's publish script announces in Redis; Nchan
gets the same events over its HTTP publisher. The hub's gateways also take events over
HTTP (`POST /publish`, with the bench's fixed token `HUB_PUBLISH_TOKEN`). The processes (redis-server, gateways, nginx)
are started by the test suite's helpers, `tests.processes`, configured for the benchmark.
"""

from __future__ import annotations

import getpass
import http.client
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import quote

import redis
import repository  # noqa: F401  (the repository's root on sys.path, for tests.processes)
from native import BenchError
from procstat import tree

from hub.config import Settings
from hub.publish import PUBLISH_SCRIPT
from hub.topics import Keys
from publisher.client import Publisher
from tests.processes import (
    Gateway,
    MissingTool,
    NginxProcess,
    ProcessStartError,
    WaitTimeout,
    free_port,
    gateway_environment,
    http_status,
    running,
    wait_started,
)
from tests.processes import RedisServer as ProcessRedisServer

HERE = Path(__file__).resolve().parent
NCHAN_MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")
NGINX_FD_LIMIT = 20_000
PUBLISH_TOKEN = "bench-publish-token"
"""The gateways' HUB_PUBLISH_TOKEN: `POST /publish` with `Authorization: Bearer <it>`."""
START_ERRORS = (ProcessStartError, MissingTool, WaitTimeout, subprocess.TimeoutExpired)
"""A system that does not start: a BenchError for that measurement, not the end of the run."""


def topic_name(index: int) -> str:
    return f"b{index}"


MERCURE_TOPIC_BASE = "https://bench.example/"
"""The Mercure face's topics are IRIs: `MERCURE_TOPIC_BASE` + the native name (b<index>)."""


def mercure_topic(index: int) -> str:
    return MERCURE_TOPIC_BASE + topic_name(index)


MERCURE_SUBSCRIBE_PATH = (
    "/.well-known/mercure?match=" + quote(MERCURE_TOPIC_BASE + "b", safe="") + "%d"
)
"""The load client's --path template (its `%d` is the topic index; the rest goes as it is)."""


@contextmanager
def starting(what: str) -> Iterator[None]:
    """Turns a server that fails to start (or to stop) into a BenchError about `what`."""
    try:
        yield
    except START_ERRORS as exc:
        raise BenchError(f"{what}: {exc}") from exc


def wait_http(port: int, path: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Until GET path answers 200; BenchError if the process exits or time runs out."""
    with starting(f"{proc.args!r}"):
        wait_started(
            proc,
            lambda: http_status("127.0.0.1", port, path, timeout=2) == 200,
            timeout=timeout,
            name=f"127.0.0.1:{port}",
            goal=f"answer 200 on {path}",
            log=lambda: "(in the measurement's log)",
        )


class RedisServer:
    """The run's private redis-server (tests.processes.RedisServer): nothing on disk, room for
    19,000 clients, the hub's publish script loaded, and one client kept open."""

    def __init__(self, log: IO[bytes]) -> None:
        self.server = ProcessRedisServer(
            extra_args=["--maxclients", "19000", "--protected-mode", "no", "--loglevel", "warning"],
            output=log,
        )
        self.port = self.server.port
        self.url = self.server.url

    @property
    def pid(self) -> int:
        pid = self.server.pid
        if pid is None:
            raise BenchError("the private redis-server is not running")
        return pid

    def __enter__(self) -> RedisServer:
        with starting("the private redis-server"):
            self.server.start(timeout=10)
        self.client = redis.Redis.from_url(self.url)
        self.sha: str = self.client.script_load(PUBLISH_SCRIPT)
        return self

    def flush(self) -> None:
        self.client.flushall()
        self.sha = self.client.script_load(PUBLISH_SCRIPT)

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.server.close()


@dataclass
class Endpoint:
    """A started system: where clients connect and how events are published to it."""

    port: int
    path: str  # the load client's template: %d = topic index
    pid_groups: Callable[[], dict[str, list[int]]]
    publish_mode: str  # "redis", "nchan" or "mercure" (POST /.well-known/mercure at `port`)
    publish_port: int
    prefix: str = ""
    storm_publish_path: str = ""
    notes: list[str] = field(default_factory=list)
    publish_token: str = ""  # the hub's POST /publish (and Mercure's POST) at `port` take it

    def pids(self) -> list[int]:
        return [pid for group in self.pid_groups().values() for pid in group]

    def targets(
        self, topics: int, directory: Path, storm: bool = False, mode: str | None = None
    ) -> Path:
        """The publisher's targets file for topics 0..topics-1 (`mode`: the publish mode's)."""
        mode = mode or self.publish_mode
        path = directory / f"targets-{mode}-{topics}{'-storm' if storm else ''}.txt"
        keys = Keys(self.prefix)
        with path.open("w") as f:
            for i in range(topics):
                t = topic_name(i)
                if mode in ("hub", "hub-batch"):
                    f.write(f"{t}\n")
                elif mode == "mercure":
                    f.write(f"{mercure_topic(i)}\n")
                elif mode == "redis":
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
            conn.request(
                "POST",
                f"{self.storm_publish_path}?id={topic}",
                body=data,
                headers={"Accept": "text/json"},
            )
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


def _hub_settings(ctx: RunContext) -> dict[str, str]:
    """The gateway's HUB_* settings besides its Redis, address and key prefix."""
    settings = {
        "HUB_HEARTBEAT_SECONDS": "15",
        "HUB_SHUTDOWN_SECONDS": "5",
        "HUB_LOG_FORMAT": "text",
        "HUB_PUBLISH_TOKEN": PUBLISH_TOKEN,
        **ctx.env,
    }
    # one process per gateway: the bench places the processes itself
    for name in ("HUB_PROCESSES", "HUB_WORKERS"):
        settings[name] = "1"
    return settings


@contextmanager
def _hub_gateway(ctx: RunContext) -> Iterator[Gateway]:
    """A gateway (tests.processes.Gateway) ready to serve: its /readyz answers 200."""
    gateway = Gateway(
        redis_url=ctx.redis.url, key_prefix=ctx.prefix, output=ctx.log, env=_hub_settings(ctx)
    ).spawn()
    try:
        with starting("the gateway"):
            gateway.wait_healthy(timeout=30, path="/readyz")
        yield gateway
    finally:
        try:
            gateway.terminate(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        gateway.close()


def _nginx_conf(workdir: Path, body: str, workers: int, modules: str = "") -> str:
    user = f"user {getpass.getuser()};" if os.geteuid() == 0 else ""
    (workdir / "tmp").mkdir(exist_ok=True)
    return f"""{modules}
{user}
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
"""


@contextmanager
def _nginx(
    ctx: RunContext, body: str, port: int, workers: int, modules: str = ""
) -> Iterator[NginxProcess]:
    """nginx (tests.processes.NginxProcess) with `body` in its http block, ready on `port`."""
    with tempfile.TemporaryDirectory(prefix="nginx-", dir=ctx.workdir) as tmp:
        conf = _nginx_conf(Path(tmp), body, workers, modules)
        ngx = NginxProcess(Path(tmp), conf, port, "/nginx-ready", output=ctx.log)
        try:
            with starting("nginx"):
                ngx.start(timeout=30)
            yield ngx
        finally:
            ngx.close()
            err = Path(tmp, "error.log")
            if err.exists():
                ctx.log.write(err.read_bytes()[-20_000:])


def _pid(proc: subprocess.Popen[bytes] | None) -> int:
    if proc is None:
        raise BenchError("a process of the system is not running")
    return proc.pid


@contextmanager
def hub(ctx: RunContext) -> Iterator[Endpoint]:
    with _hub_gateway(ctx) as gateway:
        yield Endpoint(
            gateway.port,
            "/events?topic=b%d",
            lambda: {"gateway": tree(gateway.pid)},
            "redis",
            ctx.redis.port,
            ctx.prefix,
            publish_token=_hub_settings(ctx)["HUB_PUBLISH_TOKEN"],
        )


@contextmanager
def hub_mercure(ctx: RunContext) -> Iterator[Endpoint]:
    """The one gateway of `hub`, subscribed to and published to through its Mercure face."""
    with _hub_gateway(ctx) as gateway:
        yield Endpoint(
            gateway.port,
            MERCURE_SUBSCRIBE_PATH,
            lambda: {"gateway": tree(gateway.pid)},
            "mercure",
            gateway.port,
            ctx.prefix,
            publish_token=_hub_settings(ctx)["HUB_PUBLISH_TOKEN"],
        )


@contextmanager
def hub_x2(ctx: RunContext) -> Iterator[Endpoint]:
    with ExitStack() as stack:
        gateways = [stack.enter_context(_hub_gateway(ctx)) for _ in range(2)]
        port = free_port()
        servers = "\n".join(f"    server 127.0.0.1:{g.port};" for g in gateways)
        body = f"""
  upstream hubs {{
{servers}
    keepalive 32;
  }}
  server {{
    listen 127.0.0.1:{port} backlog=4096 reuseport;
    # The publisher pipelines its requests on a few connections: nginx would close each
    # after its 1,000th request (the default), with requests still in flight on it.
    keepalive_requests 100000000;
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
        ngx = stack.enter_context(_nginx(ctx, body, port, workers=2))

        def groups() -> dict[str, list[int]]:
            return {
                "gateway": [pid for g in gateways for pid in tree(g.pid)],
                "nginx": tree(_pid(ngx.process)),
            }

        yield Endpoint(
            port,
            "/events?topic=b%d",
            groups,
            "redis",
            ctx.redis.port,
            ctx.prefix,
            publish_token=_hub_settings(ctx)["HUB_PUBLISH_TOKEN"],
        )


@contextmanager
def baseline(ctx: RunContext) -> Iterator[Endpoint]:
    port = free_port()
    env = gateway_environment(ctx.redis.url, ctx.prefix, port, _hub_settings(ctx))
    args = [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(HERE),
        "baseline_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        "--backlog",
        "4096",
    ]
    with running(args, ctx.log, env=env) as proc:
        wait_http(port, "/healthz", proc)
        yield Endpoint(
            port,
            "/events?topic=b%d",
            lambda: {"server": tree(proc.pid)},
            "redis",
            ctx.redis.port,
            ctx.prefix,
        )


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
    with _nginx(ctx, body, port, workers=1, modules=f"load_module {NCHAN_MODULE};") as ngx:
        yield Endpoint(
            port,
            "/sub?id=b%d",
            lambda: {"nginx": tree(_pid(ngx.process))},
            "nchan",
            port,
            storm_publish_path="/pub-storm",
        )


SYSTEMS: dict[str, Callable[[RunContext], AbstractContextManager[Endpoint]]] = {
    "hub": hub,
    "hub-mercure": hub_mercure,
    "hub-x2": hub_x2,
    "baseline": baseline,
    "nchan": nchan,
}

LABELS = {
    "hub": "hub (1 gateway)",
    "hub-mercure": "hub, Mercure face (1 gateway)",
    "hub-x2": "hub (2 gateways + nginx)",
    "baseline": "baseline (sse-starlette, 1 Redis sub/client)",
    "nchan": "Nchan (1 worker)",
}
