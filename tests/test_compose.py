"""`docker compose up`, for real: the project's docker-compose.yml and Dockerfile on a
real Docker engine, checked the way a user meets them.

The base images are stand-ins built from Debian packages under the official names
(tests/standin_images/); everything else is the project's own files, unmodified. The
topology runs under a project name of its own, with the load balancer on a free loopback
port; the tests run in file order on one topology, and the last one takes it down.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from processes import (
    REPO_ROOT,
    ComposeProject,
    ensure_standin_images,
    wait_until,
    wait_until_async,
)
from sse_client import ReconnectingListener, connected, count_settled, settled_marker

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

GATEWAYS = 3
"""The compose file's replicas."""


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def stack() -> Iterator[ComposeProject]:
    started = time.monotonic()
    ensure_standin_images()
    images = time.monotonic() - started
    with ComposeProject({"HUB_PUBLISH_TOKEN": secrets.token_hex(16)}) as project:
        started = time.monotonic()
        # As a newcomer types it, without --build: the hub's image is built, never pulled.
        output = project.up()
        print(
            f"\n[compose] base images ready in {images:.1f} s, "
            f"`up --wait` (building the hub's image) {time.monotonic() - started:.1f} s"
        )
        said = (output.stdout + output.stderr).lower()
        assert "pulling" not in said and "pull access denied" not in said, said[-2000:]
        yield project


def token(stack: ComposeProject) -> str:
    return stack.environment["HUB_PUBLISH_TOKEN"]


def gateway_names(stack: ComposeProject, *, running: bool = True) -> list[str]:
    return [c.name for c in stack.containers("gateway") if c.running or not running]


def open_streams(stack: ComposeProject, name: str) -> int:
    """The SSE streams gateway container `name` holds (its /metrics, read from inside)."""
    page = stack.exec(
        name,
        [
            "python",
            "-c",
            "import urllib.request as u; "
            "print(u.urlopen('http://127.0.0.1:8000/metrics').read().decode())",
        ],
    )
    line = next(line for line in page.splitlines() if line.startswith("hub_connected_clients "))
    return int(float(line.split()[1]))


@dataclass
class HttpSteadyPublisher:
    """Numbered events (`<topic>#<n>`) through the load balancer's POST /publish, at a
    steady rate, as a publisher on the host would send them; keeps what was acknowledged."""

    url: str
    token: str
    topic: str
    rate: float = 50.0
    acknowledged: list[str] = field(default_factory=list)
    refused: int = 0
    errors: set[str] = field(default_factory=set)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def publish(self, client: httpx.AsyncClient, data: str) -> bool:
        try:
            response = await client.post(
                f"{self.url}/publish",
                json={"topic": self.topic, "data": data},
                headers={"Authorization": f"Bearer {self.token}"},
            )
        except httpx.HTTPError as exc:
            self.errors.add(type(exc).__name__)
            return False
        if response.status_code != 200:
            self.errors.add(str(response.status_code))
            return False
        return True

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=10.0) as client:
            started = time.monotonic()
            n = 0
            while not self._stop.is_set():
                data = f"{self.topic}#{n}"
                if await self.publish(client, data):
                    self.acknowledged.append(data)
                else:
                    self.refused += 1  # the publisher sees it: never a silent loss
                n += 1
                delay = started + n / self.rate - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), delay)

    def stop(self) -> None:
        self._stop.set()

    async def settle_and_count(
        self, clients: list[ReconnectingListener], label: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        async with httpx.AsyncClient(timeout=10.0) as client:
            assert await self.publish(client, settled_marker(self.topic))
        await count_settled(
            clients,
            {self.topic: self.acknowledged},
            label,
            capsys,
            refused=self.refused,
            errors=sorted(self.errors),
        )


async def everyone_gets_more(
    steady: HttpSteadyPublisher, clients: list[ReconnectingListener], more: int = 50
) -> None:
    """Wait until every client received an event published `more` events from now."""
    mark = f"{steady.topic}#{len(steady.acknowledged) + steady.refused + more}"
    await wait_until_async(
        lambda: all(mark in client.data for client in clients),
        60.0,
        f"every client to receive {mark}",
        observe=lambda: f"{sum(mark not in c.data for c in clients)} clients have not",
    )


def test_the_page_and_health_answer_through_the_load_balancer_on_loopback_only(
    stack: ComposeProject,
) -> None:
    page = httpx.get(f"{stack.url}/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert httpx.get(f"{stack.url}/healthz").text.strip() == "ok"
    (lb,) = stack.containers("lb")
    assert sorted(stack.published_ports(lb.name)) == sorted(
        [("127.0.0.1", str(stack.port)), ("127.0.0.1", str(stack.tls_port))]
    )
    (redis,) = stack.containers("redis")
    assert stack.published_ports(redis.name) == [], "Redis must not be published on the host"
    # nginx logs on its output: the requests above are in `docker compose logs lb`, without
    # their query, where a browser's token may be.
    httpx.get(f"{stack.url}/healthz", params={"access_token": "secret-in-the-query"})
    wait_until(lambda: "GET /healthz" in stack.logs("lb"), 10.0, "the access log in the lb's logs")
    assert "secret-in-the-query" not in stack.logs("lb")


async def test_https_serves_streams_over_http2_with_the_development_certificate(
    stack: ComposeProject, tmp_path: Path
) -> None:
    # As the README says: the certificate authority to trust comes out of the tls service.
    assert "Trust ca.pem" in stack.logs("tls")
    ca = tmp_path / "ca.pem"
    stack.compose("cp", "tls:/tls/ca.pem", str(ca))
    curl = ["curl", "-sS", "--http2", "--cacert", str(ca)]
    answer = [*curl, "-o", "/dev/null", "-w", "%{http_version} %{http_code}"]
    version = (
        await asyncio.to_thread(
            subprocess.run,
            [*answer, f"{stack.tls_url}/healthz"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
    ).stdout
    assert version == "2 200"
    stream = await asyncio.create_subprocess_exec(
        *curl, "-N", f"{stack.tls_url}/events?topic=over-h2", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert stream.stdout is not None
        steady = HttpSteadyPublisher(stack.url, token(stack), "over-h2")
        async with httpx.AsyncClient(timeout=10.0) as client:
            # The stream is open once the gateway answers with its first bytes.
            first = await asyncio.wait_for(stream.stdout.readline(), 30)
            assert first, "the stream over HTTP/2 ended at once"
            assert await steady.publish(client, "over HTTP/2")
        lines: list[bytes] = []
        while b"data: over HTTP/2\n" not in lines:
            lines.append(await asyncio.wait_for(stream.stdout.readline(), 30))
    finally:
        stream.kill()
        await stream.wait()


def test_the_gateways_run_unprivileged_with_the_tested_dependency_versions(
    stack: ComposeProject,
) -> None:
    name = gateway_names(stack)[0]
    assert stack.exec(name, ["id", "-u"]).strip() != "0"

    def pinned(lines: list[str]) -> dict[str, str]:
        pairs = (line.split("==", 1) for line in lines if "==" in line and line[0] != "#")
        return {name.lower().replace("_", "-").replace(".", "-"): v for name, v in pairs}

    installed = pinned(stack.exec(name, ["pip", "list", "--format=freeze"]).splitlines())
    pins = pinned((REPO_ROOT / "constraints.txt").read_text().splitlines())
    for requirement in ("redis", "starlette", "uvicorn", "hiredis", "pyjwt", "urlpattern"):
        assert installed[requirement] == pins[requirement], requirement
    differing = {k: (v, pins[k]) for k, v in installed.items() if k in pins and pins[k] != v}
    assert differing == {}, "the image's versions differ from the tested ones"


def test_a_wrong_or_missing_publish_token_gets_401(stack: ComposeProject) -> None:
    for headers in ({"Authorization": "Bearer wrong"}, {}):
        response = httpx.post(
            f"{stack.url}/publish", json={"topic": "t", "data": "x"}, headers=headers
        )
        assert response.status_code == 401, (headers, response.status_code, response.text)


async def test_publishing_from_the_host_reaches_a_browser_like_client(
    stack: ComposeProject,
) -> None:
    (client,) = await connected([ReconnectingListener(stack.url, ["from-host"]).start()])
    cli = Path(sys.executable).with_name("sse-publish")
    # The README's two ways in from the host: the CLI through the load balancer, and curl.
    await asyncio.to_thread(
        subprocess.run,
        [str(cli), "--hub", stack.url, "--token", token(stack), "send", "from-host", "by the CLI"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    await asyncio.to_thread(
        subprocess.run,
        [
            "curl",
            "-sSf",
            "-H",
            f"Authorization: Bearer {token(stack)}",
            "--data-urlencode",
            "topic=from-host",
            "--data-urlencode",
            "data=by curl",
            f"{stack.url}/publish",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    await client.wait_for(2)
    await client.close()
    assert client.data == ["by the CLI", "by curl"]


async def test_a_killed_a_stopped_and_a_crashed_gateway_lose_no_event(
    stack: ComposeProject, capsys: pytest.CaptureFixture[str]
) -> None:
    clients = await connected(
        [ReconnectingListener(stack.url, ["faults"]).start() for _ in range(30)]
    )
    steady = HttpSteadyPublisher(stack.url, token(stack), "faults")
    publishing = asyncio.create_task(steady.run())
    await everyone_gets_more(steady, clients)
    crashing, killed, stopped = gateway_names(stack)

    # A crash: the process dies without Docker being asked; the restart policy brings it
    # back, and nginx sends it new streams again.
    crashed = stack.container(crashing)
    os.kill(crashed.pid, signal.SIGKILL)
    await everyone_gets_more(steady, clients)
    await wait_until_async(
        lambda: stack.container(crashing).health == "healthy",
        60.0,
        "the crashed gateway restarted by Docker and healthy",
        observe=lambda: str(stack.container(crashing)),
    )
    assert stack.container(crashing).restarts == crashed.restarts + 1
    # The docker CLI runs in a thread: clients and publisher go on meanwhile.
    await asyncio.to_thread(stack.docker_cli, "kill", killed)  # by hand: Docker leaves it down
    await everyone_gets_more(steady, clients)
    # SIGTERM: the gateway ends its streams and exits.
    await asyncio.to_thread(stack.docker_cli, "stop", stopped)
    await everyone_gets_more(steady, clients)
    assert not stack.container(killed).running and not stack.container(stopped).running
    await everyone_gets_more(steady, clients)
    steady.stop()
    await publishing
    await steady.settle_and_count(clients, "compose: docker kill, docker stop, crash", capsys)
    # A publish in flight when its gateway is SIGKILLed (twice here) gets a 502 from nginx,
    # which cannot pass a POST on once it was sent: its publisher sees it, nothing is lost.
    assert steady.refused <= 2 and steady.errors <= {"502"}, (steady.refused, steady.errors)
    refusals = sum(client.refusals for client in clients)
    assert refusals == 0, f"{refusals} reconnects answered other than 200: a browser gives up"
    assert stack.container(stopped).exit_code == 0, "a stopped gateway exits cleanly"
    # Gateways stopped by hand come back with `up`, as the README says.
    stack.up()
    assert len(gateway_names(stack)) == GATEWAYS


async def test_scaling_out_gives_the_new_gateways_new_streams_without_a_restart(
    stack: ComposeProject, capsys: pytest.CaptureFixture[str]
) -> None:
    (lb,) = stack.containers("lb")
    stack.up("--scale", f"gateway={GATEWAYS + 2}", "--no-recreate")
    names = gateway_names(stack)
    assert len(names) == GATEWAYS + 2
    before = {name: open_streams(stack, name) for name in names}
    # Browsers arrive over time (the hub's retry: is jittered, people open pages when they
    # do). nginx spreads them at random over the gateways Docker's DNS names; only requests
    # that arrive in the same instant as its lookup (every 2 s) share one gateway. With 60
    # streams over 3 s, one of the new gateways missing out by chance would happen about
    # once in a million runs.
    clients = []
    for _ in range(60):
        clients.append(ReconnectingListener(stack.url, ["scaled"]).start())
        await asyncio.sleep(0.05)
    await connected(clients)
    after = {name: open_streams(stack, name) for name in names}
    for client in clients:
        await client.close()
    new = names[GATEWAYS:]
    gained = {name: after[name] - before[name] for name in names}
    with capsys.disabled():
        print(f"\n[compose scale-out] new streams per gateway: {list(gained.values())}")
    assert all(gained[name] > 0 for name in new), f"new streams per gateway: {gained}"
    assert stack.container(lb.name).started_at == lb.started_at, "lb was not restarted"
    stack.up("--scale", f"gateway={GATEWAYS}", "--no-recreate")
    assert len(gateway_names(stack)) == GATEWAYS


async def test_a_redis_restart_keeps_the_history(stack: ComposeProject) -> None:
    steady = HttpSteadyPublisher(stack.url, token(stack), "kept")
    async with httpx.AsyncClient(timeout=10.0) as client:
        for n in range(20):
            assert await steady.publish(client, f"kept#{n}")
    stack.compose("restart", "redis")
    stack.up()  # waits until Redis and the gateways are healthy again
    reader = ReconnectingListener(stack.url, ["kept"], last_event_id="0-0").start()
    await reader.wait_for(20)
    await reader.close()
    assert reader.data == [f"kept#{n}" for n in range(20)]


async def test_the_demo_publisher_ticks_every_second_and_stops_at_once(
    stack: ComposeProject, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.compose("--profile", "demo", "up", "-d", "publisher")
    listener = ReconnectingListener(stack.url, ["demo"]).start()
    arrivals: list[float] = []

    def count_arrivals() -> bool:
        while len(arrivals) < len(listener.data):
            arrivals.append(time.monotonic())
        return len(arrivals) >= 6

    await wait_until_async(count_arrivals, 30.0, "6 ticks", interval=0.01)
    await listener.close()
    gaps = [b - a for a, b in itertools.pairwise(arrivals[1:])]
    assert all(0.7 < gap < 1.3 for gap in gaps), f"seconds between ticks: {gaps}"
    assert sum(gaps) / len(gaps) == pytest.approx(1.0, abs=0.05), gaps
    assert all(data.startswith("tick ") for data in listener.data)
    started = time.monotonic()
    stack.compose("--profile", "demo", "stop", "publisher")
    stopped_in = time.monotonic() - started
    (publisher,) = stack.containers("publisher")
    with capsys.disabled():
        print(
            f"\n[compose demo] seconds between ticks: {', '.join(f'{g:.3f}' for g in gaps)}; "
            f"stopped in {stopped_in:.2f} s, exit code {publisher.exit_code}"
        )
    assert stopped_in < 2.0, f"the demo publisher took {stopped_in:.1f} s to stop"
    assert publisher.exit_code != 137, "killed after the stop timeout, not stopped by SIGTERM"


def test_down_v_leaves_nothing_behind(stack: ComposeProject) -> None:
    stack.compose("--profile", "demo", "down", "-v", "--timeout", "5")
    assert stack.leftovers() == {"containers": [], "networks": [], "volumes": []}
    # The compose file's settings, read back by Compose v2 itself.
    config = json.loads(stack.compose("config", "--format", "json").stdout)
    assert config["services"]["gateway"]["restart"] == "unless-stopped"
