"""With no Redis configured, the gateway brings its own, so a newcomer sees it work at once."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from processes import Gateways, wait_until_async
from sse_client import listening

from hub.config import Settings
from publisher import AsyncPublisher

pytestmark = pytest.mark.anyio


def announced_redis_url(gateway_log: str) -> str:
    match = re.search(r"HUB_REDIS_URL=(redis://127\.0\.0\.1:\d+)", gateway_log)
    assert match, gateway_log
    return match[1]


@pytest.mark.parametrize("server", ["redis-server", "fakeredis"])
async def test_the_gateway_runs_on_an_embedded_redis(
    gateway: Gateways, tmp_path: Path, server: str
) -> None:
    env = {"HUB_REDIS_URL": ""}
    if server == "fakeredis":
        # A PATH with only the Python interpreter: no redis-server to be found.
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "python").symlink_to(sys.executable)
        env["PATH"] = str(bin_dir)
    else:
        assert shutil.which("redis-server"), "redis-server is needed for this case"
    hub = gateway(env)
    await wait_until_async(
        lambda: "HUB_REDIS_URL=" in hub.log_text(),
        10,
        "the gateway to announce its embedded Redis",
        observe=hub.log_tail,
    )
    log = hub.log_text()
    assert "Single-node development mode" in log
    assert f"open http://127.0.0.1:{hub.port}/" in log
    url = announced_redis_url(log)
    async with listening(hub.url, ["demo"], count=2) as clients:
        async with AsyncPublisher(
            Settings(redis_url=url, key_prefix=hub.env["HUB_KEY_PREFIX"])
        ) as pub:
            first = await pub.publish("demo", "hello")
            await pub.publish("demo", "world")
        for client in clients:
            await client.wait_for(2)
            assert client.data == ["hello", "world"]
            assert client.events[0].id == first
    hub.terminate()
    assert hub.returncode == 0
    if server == "redis-server":
        listed = await asyncio.to_thread(
            subprocess.run, ["ps", "-eo", "args"], capture_output=True, text=True
        )
        processes = listed.stdout
        assert f":{url.rsplit(':', 1)[1]}" not in processes, (
            "the embedded Redis stops with the gateway"
        )
