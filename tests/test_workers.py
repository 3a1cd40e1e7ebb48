"""HUB_WORKERS: several gateway processes share one port on one host."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import pytest

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


async def wait_for_workers(parent: int, count: int, exclude: set[int] = set()) -> list[int]:
    deadline = time.monotonic() + 20
    while len(pids := [p for p in worker_pids(parent) if p not in exclude]) < count:
        assert time.monotonic() < deadline, f"workers: {pids}"
        await asyncio.sleep(0.1)
    return pids


async def test_workers_share_the_port_and_all_clients_get_every_event(gateway, redis_url, key_prefix) -> None:
    hub = gateway({"HUB_WORKERS": "2", "HUB_SHUTDOWN_SECONDS": "5"})
    pids = await wait_for_workers(hub.pid, 2)
    await asyncio.sleep(1.0)  # both workers listening
    clients = [Listener(hub.url, ["news"]).start() for _ in range(20)]
    for client in clients:
        await client.wait_connected()
    async with publisher(redis_url, key_prefix) as pub:
        for n in range(50):
            await pub.publish("news", str(n))
    for client in clients:
        await client.wait_for(50)
        assert client.data == [str(n) for n in range(50)]

    os.kill(pids[0], signal.SIGKILL)  # a worker dies: it is started again
    await wait_for_workers(hub.pid, 2, exclude={pids[0]})

    hub.process.terminate()
    assert await asyncio.to_thread(hub.wait, 15) == 0
    cut, ended = 0, 0
    for client in clients:
        try:
            await client.wait_ended(timeout=10)
            ended += 1
        except httpx.HTTPError:  # its worker was the one killed
            cut += 1
    assert cut > 0 and ended > 0, "the kernel spread the clients over both workers"
    assert all(not os.path.exists(f"/proc/{pid}") for pid in pids[1:])
