"""A client for each Redis primary, and commands run on the primary that owns their key.

Gateways read history and publishers run the publish script through
`Primaries.run`: the commands go, on one connection (pipelined when there are
several), to the owner of the key. A `MOVED` or `READONLY` answer (a slot
moved, a primary was demoted) means nothing ran: the topology is learnt again
and the commands are sent to the new owner. An `ASK` during a slot migration sends them once to the
importing node, after `ASKING`. A refused connection (a primary that died and
is being replaced) is retried until the deadline; a connection lost with
commands on it is retried only for commands that are safe to run twice, and
is otherwise the caller's to report: the commands may have run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio
from redis.backoff import NoBackoff
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
from redis.retry import Retry

from hub.redis_wire import exchange, pack
from hub.topology import Node, NoPrimary, Topology

log = logging.getLogger("hub.primaries")

Command = tuple[str | int | bytes, ...]
Commands = Callable[[Node], list[Command]]
"""The commands to send to `Node`, each as its words (`("XRANGE", key, "-", "+")`)."""

_REROUTE = (MovedError, ReadOnlyError, TryAgainError, ClusterDownError, NoPrimary)
_LOST = (RedisConnectionError, RedisTimeoutError, OSError)


class Primaries:
    def __init__(self, topology: Topology, max_connections: int, timeout: float) -> None:
        self.topology = topology
        self._max_connections = max_connections
        self._timeout = timeout
        self._clients: dict[str, redis.asyncio.Redis] = {}
        self._refreshing: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Primaries:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()
        await self.topology.aclose()

    def client(self, node: Node) -> redis.asyncio.Redis:
        client = self._clients.get(node.name)
        if client is None:
            # A bounded pool that waits for a free connection: after a reconnect every
            # topic catches up at once, and an unbounded burst would be refused.
            pool = redis.asyncio.BlockingConnectionPool(
                max_connections=self._max_connections,
                timeout=self._timeout,
                # Never retried by the client library: a publish whose reply was lost may
                # have run, and running it again would append the event twice.
                retry=Retry(NoBackoff(), 0),
                **node.options,
            )
            client = self._clients[node.name] = redis.asyncio.Redis.from_pool(pool)
        return client

    async def refresh(self, ask_first: Node | None = None) -> None:
        """Learn the topology again; concurrent callers share one refresh, unless one
        names the node to ask."""
        if ask_first is not None or self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self.topology.refresh(ask_first))
        await asyncio.shield(self._refreshing)

    async def run(self, key: str, commands: Commands, *, idempotent: bool) -> list[Any]:
        """Run `commands` on the primary that owns `key`; their replies, in order, as Redis
        sent them (RESP2 lists and bytes, no decoding)."""
        deadline = time.monotonic() + self._timeout
        asking: Node | None = None
        unreachable: Exception | None = None
        delay = 0.02
        while True:
            try:
                node = asking or self.topology.owner(key)
                batch = commands(node)
                if asking is not None:  # ASKING lets only the next command in
                    asked = [word for command in batch for word in (("ASKING",), command)]
                    return (await self._send(node, asked))[1::2]
                return await self._send(node, batch)
            except _REROUTE as exc:  # before AskError: redis-py's MovedError is one
                failure: Exception = exc
                source = None if isinstance(exc, NoPrimary) else node
            except AskError as exc:
                asking = self.topology.node_at(exc.host, int(exc.port))
                continue
            except _LOST as exc:
                if not idempotent and not never_sent(exc):
                    await self._refresh_quietly()
                    raise
                failure = exc
                source = None
            asking = None
            if time.monotonic() + delay > deadline:
                # "No primary known" says less than why the topology could not be read.
                raise (unreachable if isinstance(failure, NoPrimary) and unreachable else failure)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
            unreachable = await self._refresh_quietly(source)

    async def _send(self, node: Node, batch: list[Command]) -> list[Any]:
        """The replies, as Redis sent them (not decoded); the first error reply raised."""
        replies = await exchange(self.client(node), [pack(command) for command in batch])
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def ping(self) -> None:
        """Raise unless every known primary answers."""
        primaries = self.topology.primaries()
        if not primaries:
            await self.refresh()
            primaries = self.topology.primaries()
        await asyncio.gather(*(self.client(node).ping() for node in primaries))

    async def _refresh_quietly(self, ask_first: Node | None = None) -> Exception | None:
        """Refresh; the error instead of raising it (the caller retries, then reports)."""
        try:
            await self.refresh(ask_first)
        except (RedisError, OSError) as exc:
            log.debug("learning the Redis topology failed: %s", exc)
            return exc
        return None


def never_sent(exc: BaseException) -> bool:
    """Whether the commands certainly did not reach Redis: the connection was refused."""
    return isinstance(exc.__cause__ or exc.__context__, ConnectionRefusedError)
