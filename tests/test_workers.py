"""HUB_WORKERS: several gateway processes share one port on one host."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Set as AbstractSet
from pathlib import Path

import httpx
import pytest
from processes import Gateways, wait_until_async
from sse_client import Listener, publisher

pytestmark = pytest.mark.anyio


def worker_pids(parent: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                children.append(int(entry))
    return children


async def wait_for_workers(
    parent: int, count: int, exclude: AbstractSet[int] = frozenset()
) -> list[int]:
    def workers() -> list[int]:
        pids = [p for p in worker_pids(parent) if p not in exclude]
        return pids if len(pids) >= count else []

    return await wait_until_async(
        workers,
        20,
        f"{count} workers of process {parent} (not {sorted(exclude)})",
        observe=lambda: f"children: {worker_pids(parent)}",
    )


def running(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def listening_sockets(port: int) -> int:
    """Sockets listening on `port` (each worker has its own, shared through SO_REUSEPORT)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            count += int(local.rsplit(":", 1)[1], 16) == port and state == "0A"
    return count


async def test_workers_share_the_port_and_all_clients_get_every_event(
    gateway: Gateways, redis_url: str, key_prefix: str
) -> None:
    hub = gateway({"HUB_WORKERS": "2", "HUB_SHUTDOWN_SECONDS": "5"})
    pids = await wait_for_workers(hub.pid, 2)
    await wait_until_async(
        lambda: listening_sockets(hub.port) == 2,
        20,
        f"both workers listening on port {hub.port}",
        observe=lambda: f"{listening_sockets(hub.port)} listening sockets",
    )
    clients = [Listener(hub.url, ["news"]).start() for _ in range(20)]
    for client in clients:
        await client.wait_connected()
    async with publisher(redis_url, key_prefix) as pub:
        for n in range(50):
            await pub.publish("news", str(n))
    for client in clients:
        await client.wait_for(50)
        assert client.data == [str(n) for n in range(50)], f"{client}: {client.data}"

    os.kill(pids[0], signal.SIGKILL)  # a worker dies: it is started again
    await wait_for_workers(hub.pid, 2, exclude={pids[0]})

    hub.process.terminate()
    assert await asyncio.to_thread(hub.wait, 15) == 0
    cut, ended = 0, 0
    for client in clients:
        try:
            await client.wait_ended(within=10)
            ended += 1
        except httpx.HTTPError:  # its worker was the one killed
            cut += 1
    assert cut > 0 and ended > 0, (
        f"the kernel spread the clients over both workers: {cut} were cut by the kill, "
        f"{ended} ended"
    )
    left = [pid for pid in pids[1:] if running(pid)]
    assert not left, f"workers still running after the gateway exited: {left}"
