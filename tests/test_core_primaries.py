"""`Primaries.run` in process: redirections, refused and lost connections, and its deadline.

Most tests script the answers of a fake topology's nodes (`ScriptedPrimaries`
replaces the one method that talks to Redis); the last ones check, against
real sockets, that what redis-py raises for a refused or a dropped connection
is what `Primaries` expects.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    ReadOnlyError,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hub import topology
from hub.primaries import Command, Primaries
from hub.topology import Node, NoPrimary, Topology

pytestmark = pytest.mark.anyio

A, B, C = Node("10.0.0.1:6379", {}), Node("10.0.0.2:6379", {}), Node("10.0.0.3:6379", {})
GET: Command = ("GET", "k")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeTopology(Topology):
    """Primaries as a test sets them; `refresh` records who was asked and applies `on_refresh`."""

    def __init__(self, owner: Node | None) -> None:
        self.current = owner
        self.known = [A, B, C]
        self.refreshes: list[Node | None] = []
        self.on_refresh: Callable[[], None] = lambda: None

    def owner(self, key: str) -> Node:
        if self.current is None:
            raise NoPrimary("no primary known")
        return self.current

    def primaries(self) -> list[Node]:
        return self.known

    async def refresh(self, ask_first: Node | None = None) -> None:
        self.refreshes.append(ask_first)
        self.on_refresh()


Answer = Exception | list[Any]


class ScriptedPrimaries(Primaries):
    """Each `_send` takes the next answer of the script: raised if an error, else returned."""

    def __init__(self, topology: Topology, answers: list[Answer], timeout: float = 2.0) -> None:
        super().__init__(topology, 1, timeout)
        self.answers = answers
        self.sent: list[tuple[str, list[Command]]] = []

    async def _send(self, node: Node, batch: list[Command]) -> list[Any]:
        self.sent.append((node.name, batch))
        answer = self.answers.pop(0) if self.answers else ["ok"] * len(batch)
        if isinstance(answer, Exception):
            raise answer
        return answer


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def refused() -> RedisConnectionError:
    """What redis-py raises for a refused connection: its cause is `ConnectionRefusedError`."""
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError as exc:
            raise RedisConnectionError("Error 111 connecting to 10.0.0.1:6379.") from exc
    except RedisConnectionError as error:
        return error


def lost() -> RedisConnectionError:
    return RedisConnectionError("Connection closed by server.")


def switch_to(fake: FakeTopology, node: Node) -> Callable[[], None]:
    def switch() -> None:
        fake.current = node

    return switch


# -- redirections ---------------------------------------------------------------------------------


async def test_moved_learns_the_topology_again_and_resends_to_the_new_owner() -> None:
    fake = FakeTopology(A)
    fake.on_refresh = switch_to(fake, B)
    primaries = ScriptedPrimaries(fake, [MovedError("3999 10.0.0.2:6379"), ["value"]])
    result = await primaries.run("k", lambda node: [GET], idempotent=False)
    assert primaries.sent == [(A.name, [GET]), (B.name, [GET])], "no ASKING: B owns the slot now"
    assert fake.refreshes == [A], "the node that answered MOVED is asked first"
    assert result == ["value"]


async def test_moved_reaches_the_node_it_names() -> None:
    """Whatever else a MOVED does, the commands run once, on the node it names."""
    fake = FakeTopology(A)
    fake.on_refresh = switch_to(fake, B)
    primaries = ScriptedPrimaries(fake, [MovedError("3999 10.0.0.2:6379")])
    assert await primaries.run("k", lambda node: [GET], idempotent=False) == ["ok"]
    assert [name for name, _ in primaries.sent] == [A.name, B.name]
    assert [batch[-1] for _, batch in primaries.sent] == [GET, GET]


@pytest.mark.parametrize(
    "answer",
    [
        ReadOnlyError("You can't write against a read only replica."),
        TryAgainError("Multiple keys request during rehashing of slot"),
        ClusterDownError("The cluster is down"),
    ],
    ids=["READONLY", "TRYAGAIN", "CLUSTERDOWN"],
)
async def test_a_rerouting_answer_learns_the_topology_again_and_resends(answer: Exception) -> None:
    fake = FakeTopology(A)
    fake.on_refresh = switch_to(fake, B)
    primaries = ScriptedPrimaries(fake, [answer])
    nodes: list[Node] = []

    def commands(node: Node) -> list[Command]:
        nodes.append(node)
        return [GET]

    assert await primaries.run("k", commands, idempotent=False) == ["ok"]
    assert nodes == [A, B], "the commands are built for the node they go to"
    assert [name for name, _ in primaries.sent] == [A.name, B.name]
    assert fake.refreshes == [A], "asked first: the node that answered"


async def test_with_no_owner_known_the_topology_is_learnt_and_the_commands_go_to_the_owner() -> (
    None
):
    fake = FakeTopology(None)
    fake.on_refresh = switch_to(fake, B)
    primaries = ScriptedPrimaries(fake, [])
    assert await primaries.run("k", lambda node: [GET], idempotent=False) == ["ok"]
    assert primaries.sent == [(B.name, [GET])]
    assert fake.refreshes == [None]


async def test_ask_sends_asking_then_the_commands_once_to_the_importing_node() -> None:
    fake = FakeTopology(A)
    primaries = ScriptedPrimaries(fake, [AskError("3999 10.0.0.3:6379"), ["OK", "v1", "OK", "v2"]])
    batch: list[Command] = [GET, ("GET", "k2")]
    assert await primaries.run("k", lambda node: batch, idempotent=False) == ["v1", "v2"]
    asked = [("ASKING",), GET, ("ASKING",), ("GET", "k2")]
    assert primaries.sent == [(A.name, batch), (C.name, asked)], "ASKING lets in one command"
    assert fake.refreshes == [], "an ASK changes no owner"
    assert await primaries.run("k", lambda node: [GET], idempotent=False) == ["ok"]
    assert primaries.sent[-1] == (A.name, [GET]), "only that once: the owner is still A"


async def test_a_failure_at_the_importing_node_goes_back_to_the_owner() -> None:
    fake = FakeTopology(A)
    primaries = ScriptedPrimaries(fake, [AskError("3999 10.0.0.3:6379"), TryAgainError("busy")])
    assert await primaries.run("k", lambda node: [GET], idempotent=False) == ["ok"]
    assert primaries.sent == [(A.name, [GET]), (C.name, [("ASKING",), GET]), (A.name, [GET])]
    assert fake.refreshes == [C]


async def test_an_ask_to_an_unknown_node_is_reported() -> None:
    fake = FakeTopology(A)
    primaries = ScriptedPrimaries(fake, [AskError("3999 10.9.9.9:6379")])
    with pytest.raises(NoPrimary, match=r"10\.9\.9\.9:6379"):
        await primaries.run("k", lambda node: [GET], idempotent=True)


# -- lost and refused connections -----------------------------------------------------------------


@pytest.mark.parametrize("idempotent", [False, True])
async def test_a_refused_connection_is_retried_even_for_commands_that_must_not_run_twice(
    idempotent: bool,
) -> None:
    fake = FakeTopology(A)
    fake.on_refresh = switch_to(fake, B)  # the replacement of the primary that died
    primaries = ScriptedPrimaries(fake, [refused(), refused(), ["value"]])
    assert await primaries.run("k", lambda node: [GET], idempotent=idempotent) == ["value"]
    assert [name for name, _ in primaries.sent] == [A.name, B.name, B.name]
    assert fake.refreshes == [None, None]


async def test_a_lost_connection_is_not_retried_when_the_commands_may_have_run() -> None:
    fake = FakeTopology(A)
    primaries = ScriptedPrimaries(fake, [lost()])
    with pytest.raises(RedisConnectionError, match="closed by server"):
        await primaries.run("k", lambda node: [GET], idempotent=False)
    assert len(primaries.sent) == 1
    assert fake.refreshes == [None], "the topology is learnt again for the next caller"


@pytest.mark.parametrize(
    "failure", [lost(), RedisTimeoutError("Timeout reading"), OSError(113, "No route")]
)
async def test_a_lost_connection_is_retried_for_commands_safe_to_run_twice(
    failure: Exception,
) -> None:
    fake = FakeTopology(A)
    primaries = ScriptedPrimaries(fake, [failure, ["value"]])
    assert await primaries.run("k", lambda node: [GET], idempotent=True) == ["value"]
    assert len(primaries.sent) == 2


async def test_retries_stop_at_the_deadline_with_the_last_failure() -> None:
    fake = FakeTopology(A)
    primaries = ScriptedPrimaries(fake, [refused() for _ in range(1000)], timeout=0.5)
    started = time.monotonic()
    with pytest.raises(RedisConnectionError, match="Error 111"):
        await primaries.run("k", lambda node: [GET], idempotent=False)
    elapsed = time.monotonic() - started
    assert elapsed < 1.5, f"gave up after {elapsed:.2f} s (deadline 0.5 s)"
    assert 3 <= len(primaries.sent) < 20, f"{len(primaries.sent)} attempts, backing off"


async def test_no_known_primary_reports_why_the_topology_could_not_be_read() -> None:
    fake = FakeTopology(None)

    def unreachable() -> None:
        raise RedisConnectionError("no Sentinel answered")

    fake.on_refresh = unreachable
    primaries = ScriptedPrimaries(fake, [], timeout=0.2)
    with pytest.raises(RedisConnectionError, match="no Sentinel answered"):
        await primaries.run("k", lambda node: [GET], idempotent=True)
    assert primaries.sent == []
    fake.on_refresh = lambda: None
    with pytest.raises(NoPrimary):  # learnt, but still nobody serves the key
        await primaries.run("k", lambda node: [GET], idempotent=True)


async def test_a_redis_error_that_is_no_redirection_is_the_callers() -> None:
    fake = FakeTopology(A)
    primaries = ScriptedPrimaries(fake, [RedisError("WRONGTYPE Operation against a key")])
    with pytest.raises(RedisError, match="WRONGTYPE"):
        await primaries.run("k", lambda node: [GET], idempotent=True)
    assert len(primaries.sent) == 1 and fake.refreshes == []


# -- what redis-py really raises ------------------------------------------------------------------


class Counting(Primaries):
    sent = 0

    async def _send(self, node: Node, batch: list[Command]) -> list[Any]:
        self.sent += 1
        return await super()._send(node, batch)


@asynccontextmanager
async def dropping_server() -> AsyncIterator[int]:
    """A TCP server that accepts connections and closes each as soon as it receives anything."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_a_real_refused_connection_is_known_as_never_sent_and_retried_to_the_deadline() -> (
    None
):
    primaries = Counting(topology.from_url(f"redis://127.0.0.1:{free_port()}", 0.5), 1, 0.5)
    async with primaries:
        with pytest.raises(RedisConnectionError):
            await primaries.run("k", lambda node: [GET], idempotent=False)
        assert primaries.sent >= 3, "retried although the commands must not run twice"


async def test_a_real_connection_dropped_by_the_server_is_not_retried_unless_idempotent() -> None:
    async with dropping_server() as port:
        url = f"redis://127.0.0.1:{port}"
        once = Counting(topology.from_url(url, 0.5), 1, 0.5)
        async with once:
            with pytest.raises(RedisConnectionError):
                await once.run("k", lambda node: [GET], idempotent=False)
            assert once.sent == 1
        again = Counting(topology.from_url(url, 0.5), 1, 0.5)
        async with again:
            with pytest.raises(RedisConnectionError):
                await again.run("k", lambda node: [GET], idempotent=True)
            assert again.sent >= 3


async def test_a_dead_primary_replaced_by_a_live_one_serves_the_commands(
    redis_url: str, key_prefix: str
) -> None:
    live = topology.from_url(redis_url, 1.0).owner("k")
    dead = topology.from_url(f"redis://127.0.0.1:{free_port()}", 1.0).owner("k")
    fake = FakeTopology(dead)
    fake.known = [dead, live]
    fake.on_refresh = switch_to(fake, live)
    key = f"{key_prefix}counter"
    primaries = Counting(fake, 1, 2.0)
    async with primaries:
        assert await primaries.run(key, lambda node: [("INCR", key)], idempotent=False) == [1]
        assert primaries.sent == 2 and fake.refreshes == [None]


async def test_several_commands_go_to_redis_on_one_connection_in_order(
    redis_url: str, key_prefix: str
) -> None:
    key = f"{key_prefix}pipelined"
    async with Primaries(topology.from_url(redis_url, 1.0), 1, 1.0) as primaries:
        batch: list[Command] = [("SET", key, 1), ("INCR", key), ("GET", key)]
        replies = await primaries.run(key, lambda node: batch, idempotent=False)
        assert replies == [b"OK", 2, b"2"], "in order, as Redis sent them"
