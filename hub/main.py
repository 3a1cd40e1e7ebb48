"""`sse-hub`: run one gateway process (uvicorn on uvloop) until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import shutil
import signal
import sys
from pathlib import Path

import uvicorn
import uvloop

from hub import logs, topology
from hub import server as server_glue
from hub.app import create_app
from hub.auth import Authority
from hub.config import ConfigError, Settings
from hub.connection_guard import Connections, Limits, guarded
from hub.embedded import embedded_redis
from hub.gateway import Gateway
from hub.heap import FrozenHeap
from hub.workers import LISTEN_BACKLOG, WORKER_FLAG, listening_socket, supervise

log = logging.getLogger("hub")


def main() -> None:
    try:
        settings = Settings.from_env()
        if settings.redis_url:
            topology.from_url(settings.redis_url, settings.redis_timeout_seconds)  # its shape
        Authority(settings)  # its key fits its algorithms
    except ConfigError as exc:
        sys.exit(f"sse-hub: error: {exc}")
    logs.configure(settings)
    # uvicorn raises the signal it caught again once it has stopped; these
    # handlers take it, so the embedded Redis and the connections still close.
    if settings.workers > 1 and WORKER_FLAG not in sys.argv[1:]:
        uvloop.run(supervise(settings))
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, frame: None)
    uvloop.run(serve(settings, worker=WORKER_FLAG in sys.argv[1:]))


async def serve(settings: Settings, worker: bool = False) -> None:
    async with contextlib.AsyncExitStack() as stack:
        development = not settings.redis_url
        if development:
            url = await stack.enter_async_context(embedded_redis())
            settings = dataclasses.replace(settings, redis_url=url)
        gateway = await stack.enter_async_context(Gateway(settings))
        connections = Connections()
        await stack.enter_async_context(
            FrozenHeap(lambda: connections.open, lambda: connections.lost)
        )
        limits = Limits(
            # Room for the longest request line and header block the app accepts; the
            # app then answers 414 or 431 with the exact limit.
            max_header_bytes=settings.max_url_bytes + 2 * settings.max_header_bytes,
            header_seconds=settings.request_header_seconds,
            body_seconds=settings.request_body_seconds,
            linger_seconds=settings.client_stall_seconds,
        )
        config = uvicorn.Config(
            create_app(gateway),
            host=settings.host,
            port=settings.port,
            http=guarded(server_glue.HTTP_PROTOCOL, limits, connections),
            # uvicorn believes X-Forwarded-For from loopback unless told otherwise.
            proxy_headers=bool(settings.trusted_proxies),
            forwarded_allow_ips=list(settings.trusted_proxies),
            ws="none",
            backlog=LISTEN_BACKLOG,
            lifespan="on",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=math.ceil(settings.shutdown_seconds),
        )
        server = uvicorn.Server(config)
        watcher = asyncio.create_task(_watch(server, gateway, development))
        try:
            await server.serve(sockets=[listening_socket(settings)] if worker else None)
        finally:
            watcher.cancel()
        log.info("gateway stopped", extra={"event": "stop"})


def _publish_command() -> str:
    """`sse-publish`, with the path to it when it is not on the PATH (a virtualenv's bin)."""
    beside = Path(sys.executable).parent / "sse-publish"
    if beside.exists() and shutil.which("sse-publish") != str(beside):
        return str(beside)
    return "sse-publish"


async def _watch(server: uvicorn.Server, gateway: Gateway, development: bool) -> None:
    """Announce the gateway once it listens; end every stream as soon as it is told to exit.

    uvicorn waits for open responses before it shuts the app down, and a stream
    never finishes by itself, so the gateway ends its streams on the server's
    exit flag (the server's own signal handling stays untouched).
    """
    await server_glue.listening(server)
    settings = gateway.settings
    page = f"http://{settings.host}:{settings.port}/"
    log.info("gateway listening on %s", page, extra={"event": "start"})
    if development:
        print(
            f"\n  The hub is running: open {page}\n"
            f"  Single-node development mode: an embedded Redis at {settings.redis_url}\n"
            f"  (set HUB_REDIS_URL to use your own). Publish from another terminal:\n\n"
            f"    HUB_REDIS_URL={settings.redis_url} {_publish_command()} send demo 'hello'\n",
            flush=True,
        )
    await server_glue.exit_requested(server)
    log.info("shutting down: ending %d streams", len(gateway.streams), extra={"event": "stop"})
    gateway.end_all()
