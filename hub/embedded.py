"""A Redis for development when none is configured: nobody should need one to try the hub.

It runs a `redis-server` binary when one is on the PATH, else fakeredis's TCP
server in a thread. Either way it is single-node, keeps nothing on disk, and
ends with the gateway.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio


@asynccontextmanager
async def embedded_redis() -> AsyncIterator[str]:
    """Start a development Redis on a free local port; yield its URL."""
    port = _free_port()
    binary = shutil.which("redis-server")
    if binary:
        async with _redis_server(binary, port) as url:
            yield url
    else:
        async with _fake_server(port) as url:
            yield url


@asynccontextmanager
async def _redis_server(binary: str, port: int) -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory(prefix="hub-redis-") as workdir:
        process = await asyncio.create_subprocess_exec(
            *[
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session: Ctrl-C in the terminal stops the gateway, which then stops it.
            start_new_session=True,
        )
        try:
            url = f"redis://127.0.0.1:{port}"
            await _wait_until_up(url)
            yield url
        finally:
            process.terminate()
            async with asyncio.timeout(10):
                await process.wait()


@asynccontextmanager
async def _fake_server(port: int) -> AsyncIterator[str]:
    from fakeredis import TcpFakeServer

    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    thread = threading.Thread(target=server.serve_forever, name="fakeredis", daemon=True)
    thread.start()
    try:
        url = f"redis://127.0.0.1:{port}"
        await _wait_until_up(url)
        yield url
    finally:
        server.shutdown()
        server.server_close()


async def _wait_until_up(url: str) -> None:
    client = redis.asyncio.Redis.from_url(url)
    try:
        for _ in range(100):
            try:
                await client.ping()
                return
            except (redis.ConnectionError, OSError):
                await asyncio.sleep(0.05)
        raise RuntimeError(f"the embedded Redis at {url} did not start")
    finally:
        await client.aclose()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
