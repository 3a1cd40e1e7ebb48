"""Where the hub's Redis primaries are: one server, a Sentinel-watched primary, or a Cluster.

`HUB_REDIS_URL` names one of three shapes (`rediss` instead of `redis` for TLS):

    redis://[user:password@]host:6379[/db]        one server (also `unix:///path.sock`)
    redis+sentinel://[user:password@]s1:26379,s2:26379/service[/db]
                                                  the primary that the Sentinels name `service`
    redis+cluster://[user:password@]n1:6379,n2:6379
                                                  a Redis Cluster, found from any of these nodes

The user and password are those of the data nodes; Sentinels that need their
own take `?sentinel_username=…&sentinel_password=…`.

A topology answers one question, which primary owns a key, and learns the
answer again (`refresh`) when a primary fails over or a slot moves. In a
Cluster, pub/sub is sharded (`SPUBLISH`, `SSUBSCRIBE`): a topic's channel lives
on the primary that owns its stream, because both carry the topic's hash tag.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio
from redis.asyncio.connection import parse_url
from redis.asyncio.sentinel import MasterNotFoundError
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from hub.config import ConfigError

ASK_SECONDS = 1.0
"""The longest one cluster node is given to answer `CLUSTER SLOTS` before the next is asked."""


class NoPrimary(RedisConnectionError):
    """No primary is known for a key (the topology is unreachable, or a slot is not served)."""


@dataclass(frozen=True)
class Node:
    """One primary: a name that identifies it, and how redis-py connects to it."""

    name: str
    options: dict[str, Any] = field(compare=False, hash=False)


class Topology(ABC):
    sharded = False
    """Whether pub/sub is per shard (`SPUBLISH`/`SSUBSCRIBE`) rather than server-wide."""
    moves = False
    """Whether primaries can change while the hub runs (failover, slot migration)."""

    @abstractmethod
    def owner(self, key: str) -> Node:
        """The primary that owns `key`, as last learnt; `NoPrimary` when none is known."""

    @abstractmethod
    def primaries(self) -> list[Node]:
        """Every primary, as last learnt."""

    async def refresh(self, ask_first: Node | None = None) -> None:  # noqa: B027 - optional
        """Learn the primaries again (from `ask_first`, where that matters); a `RedisError`
        when nobody answers."""

    def node_at(self, host: str, port: int) -> Node:
        """The node at an address a redirection named."""
        for node in self.primaries():
            if node.name == f"{host}:{port}":
                return node
        raise NoPrimary(f"redirected to {host}:{port}, which is no known primary")

    async def watch(self, changed: Callable[[], None]) -> None:  # noqa: B027 - optional
        """Call `changed` whenever the topology announces a change of primaries; runs until
        cancelled. Only Sentinels announce (a Cluster's nodes tell their own clients)."""

    async def aclose(self) -> None:  # noqa: B027 - optional
        """Close the connections used to learn the topology."""


class SingleServer(Topology):
    def __init__(self, url: str, timeouts: dict[str, float]) -> None:
        options = {**parse_url(url), **timeouts}
        location = (
            options.get("path") or f"{options.get('host', 'localhost')}:{options.get('port', 6379)}"
        )
        self._node = Node(str(location), options)

    def owner(self, key: str) -> Node:
        return self._node

    def primaries(self) -> list[Node]:
        return [self._node]


class SentinelPrimary(Topology):
    moves = True

    def __init__(
        self,
        sentinels: list[tuple[str, int]],
        service: str,
        options: dict[str, Any],
        sentinel_options: dict[str, Any],
    ) -> None:
        self._sentinel = redis.asyncio.Sentinel(  # type: ignore[no-untyped-call]
            sentinels, sentinel_kwargs=sentinel_options
        )
        self._sentinel_names = ",".join(f"{host}:{port}" for host, port in sentinels)
        self._service = service
        self._options = options
        self._primary: Node | None = None

    def owner(self, key: str) -> Node:
        if self._primary is None:
            raise NoPrimary(f"no Sentinel has named the primary of {self._service!r} yet")
        return self._primary

    def primaries(self) -> list[Node]:
        return [] if self._primary is None else [self._primary]

    async def refresh(self, ask_first: Node | None = None) -> None:
        try:
            host, port = await self._sentinel.discover_master(self._service)
        except MasterNotFoundError:
            raise NoPrimary(
                f"no Sentinel at {self._sentinel_names} named a primary for {self._service!r}"
                " (none answered, or none monitors it)"
            ) from None
        name = f"{host}:{port}"
        if self._primary is None or self._primary.name != name:
            self._primary = Node(name, {**self._options, "host": host, "port": int(port)})

    async def watch(self, changed: Callable[[], None]) -> None:
        """Hear `+switch-master` from a Sentinel: a switchover in which the old primary
        stays up (and keeps the gateway's connection) is then known at once."""
        while True:
            for sentinel in self._sentinel.sentinels:
                pubsub = sentinel.pubsub()
                try:
                    await pubsub.subscribe("+switch-master")
                    async for message in pubsub.listen():
                        # "<service> <old host> <old port> <new host> <new port>"
                        if message["type"] == "message" and message["data"].split()[0] == (
                            self._service.encode()
                        ):
                            changed()
                except (RedisError, OSError):
                    continue  # the next Sentinel; the periodic refresh covers the gap
                finally:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(1.0)

    async def aclose(self) -> None:
        for sentinel in self._sentinel.sentinels:
            await sentinel.aclose()


class Cluster(Topology):
    sharded = True
    moves = True

    def __init__(self, seeds: list[tuple[str, int]], options: dict[str, Any]) -> None:
        self._options = options
        self._seeds = [self.node_at(host, port) for host, port in seeds]
        self._slots: list[Node | None] = [None] * REDIS_CLUSTER_HASH_SLOTS

    def node_at(self, host: str, port: int) -> Node:
        # A node importing a slot during a migration may not own any slot yet.
        return Node(f"{host}:{port}", {**self._options, "host": host, "port": port})

    def owner(self, key: str) -> Node:
        node = self._slots[key_slot(key.encode())]
        if node is None:
            raise NoPrimary(f"no cluster node is known to serve the slot of {key!r}")
        return node

    def primaries(self) -> list[Node]:
        return list({node.name: node for node in self._slots if node is not None}.values())

    async def refresh(self, ask_first: Node | None = None) -> None:
        """Read the slot map from the first node that answers: `ask_first`, known primaries,
        then seeds.

        A node that just gave a slot up (it answered MOVED, or dropped a subscription)
        knows the slot's new owner; other nodes may hear of it a moment later.
        """
        failures: list[str] = []
        candidates = [*([ask_first] if ask_first else []), *self.primaries(), *self._seeds]
        for node in {n.name: n for n in candidates}.values():
            # A short deadline: a node that vanished from the network must not hold up
            # learning who replaced it.
            deadline = min(ASK_SECONDS, node.options.get("socket_timeout") or ASK_SECONDS)
            client = redis.asyncio.Redis(
                **{**node.options, "socket_timeout": deadline, "socket_connect_timeout": deadline},
                protocol=2,
            )
            try:
                ranges = await client.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
            except (RedisError, OSError) as exc:
                failures.append(f"{node.name}: {exc}")
                continue
            finally:
                await client.aclose()
            self._slots = self._slot_map(ranges, node)
            return
        raise NoPrimary("no cluster node answered CLUSTER SLOTS (" + "; ".join(failures) + ")")

    def _slot_map(self, ranges: Any, asked: Node) -> list[Node | None]:
        slots: list[Node | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        nodes: dict[tuple[str, int], Node] = {}
        # Each range: [start, end, [primary host, port, id, ...], [replica ...], ...]
        for start, end, primary, *_ in ranges:
            host = primary[0].decode() if isinstance(primary[0], bytes) else str(primary[0])
            # A node that does not know its own address reports an empty host.
            address = (host or asked.options["host"], int(primary[1]))
            node = nodes.setdefault(address, self.node_at(*address))
            slots[int(start) : int(end) + 1] = [node] * (int(end) - int(start) + 1)
        return slots


def _addresses(text: str, default_port: int) -> list[tuple[str, int]]:
    addresses = []
    for part in text.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host:
            host, port = port, str(default_port)
        if not host or not port.isdigit():
            raise ConfigError(f"{part!r} is not host:port")
        addresses.append((host.strip("[]"), int(port)))
    return addresses


def from_url(url: str, timeout: float) -> Topology:
    """The topology `url` names (see the module's docstring); `ConfigError` if it names none."""
    timeouts = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    scheme = url.partition("://")[0].lower()
    if scheme in ("redis", "rediss", "unix"):
        try:
            return SingleServer(url, timeouts)
        except ValueError as exc:
            raise ConfigError(f"invalid Redis URL: {exc}") from None
    if scheme not in ("redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster"):
        raise ConfigError(
            f"Redis URL scheme {scheme!r} is none of redis, rediss, unix, "
            "redis+sentinel, rediss+sentinel, redis+cluster, rediss+cluster"
        )
    parts = urlsplit(url)
    credentials, _, hosts = parts.netloc.rpartition("@")
    username, _, password = credentials.partition(":")
    options: dict[str, Any] = {
        **timeouts,
        "username": unquote(username) or None,
        "password": unquote(password) or None,
    }
    if scheme.startswith("rediss"):
        options["ssl"] = True
    path = [unquote(p) for p in parts.path.split("/") if p]
    query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    if scheme.endswith("cluster"):
        if path:
            raise ConfigError("a Redis Cluster URL has no path: a cluster has database 0 only")
        return Cluster(_addresses(hosts, 6379), options)
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ConfigError("a Sentinel URL ends in /service or /service/db")
    if len(path) == 2:
        options["db"] = int(path[1])
    sentinel_options = {
        **timeouts,
        "username": query.get("sentinel_username"),
        "password": query.get("sentinel_password"),
    }
    return SentinelPrimary(_addresses(hosts, 26379), path[0], options, sentinel_options)
