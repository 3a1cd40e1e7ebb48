"""Several gateway processes on one port, for a host with several cores.

Each worker is a whole gateway (its own subscription, its own clients) bound
to the same port with SO_REUSEPORT, so the kernel spreads new connections over
them. This process only starts them, restarts one that dies, and passes
SIGTERM on, so each ends its streams cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys

from hub.config import Settings
from hub.embedded import embedded_redis

log = logging.getLogger("hub.workers")
WORKER_FLAG = "--worker"
LISTEN_BACKLOG = 4096
"""Connections the kernel holds for the gateway to accept (Linux caps it at
net.core.somaxconn, 4096 by default): a login wave of thousands must not find
the queue full and wait seconds to retry its connect."""


def listening_socket(settings: Settings) -> socket.socket:
    """A worker's socket, shared with its siblings through SO_REUSEPORT."""
    sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


async def supervise(settings: Settings, announce: bool = True) -> None:
    async with contextlib.AsyncExitStack() as stack:
        redis_url = settings.redis_url
        if not redis_url:
            redis_url = await stack.enter_async_context(embedded_redis())
        env = {**os.environ, "HUB_REDIS_URL": redis_url}
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        workers = [await _start(env) for _ in range(settings.workers)]
        log.info(
            "started %d gateway workers on port %d",
            len(workers),
            settings.port,
            extra={"event": "start"},
        )
        if announce and not settings.redis_url:
            print(
                f"\n  The hub is running with {len(workers)} workers: open "
                f"http://{settings.host}:{settings.port}/\n"
                f"  Single-node development mode: an embedded Redis at {redis_url}\n",
                flush=True,
            )
        while not stopping.is_set():
            exits = {
                asyncio.ensure_future(worker.wait()): index for index, worker in enumerate(workers)
            }
            stop = asyncio.ensure_future(stopping.wait())
            done, _ = await asyncio.wait([*exits, stop], return_when=asyncio.FIRST_COMPLETED)
            for waiter in exits:
                waiter.cancel()
            stop.cancel()
            if stopping.is_set():
                break
            for waiter in done:
                if waiter in exits:
                    index = exits[waiter]
                    log.warning(
                        "worker %d exited with %s; starting it again",
                        index,
                        workers[index].returncode,
                    )
                    await asyncio.sleep(1.0)
                    workers[index] = await _start(env)
        log.info("stopping %d workers", len(workers), extra={"event": "stop"})
        for worker in workers:
            if worker.returncode is None:
                worker.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(settings.shutdown_seconds + 5):
                await asyncio.gather(*(worker.wait() for worker in workers))
        except TimeoutError:
            for worker in workers:
                if worker.returncode is None:
                    worker.kill()


async def _start(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "hub", WORKER_FLAG, env=env)
