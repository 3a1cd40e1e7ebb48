"""The gateway process's pub/sub: one connection per Redis primary, shared by all its clients.

`Subscription` keeps one `NodeSubscription` per primary (one in all for a single
server or a Sentinel-watched primary) and subscribes to each wanted topic on
the primary that owns it. When a primary is lost, or answers that a topic's
slot is no longer its own, it learns the topology again and moves the topics
to their new owners.

Each `NodeSubscription` owns its reconnect loop rather than trusting the client
library's (redis-py has a long record of subscriptions that do not come back
after a Redis restart: redis/redis-py#2089, #2417, #3979). After every
(re)connect it subscribes to its topics again, and each confirmation tells the
listener, which backfills from the stream whatever went by meanwhile. A
connection that goes silent is found with `PING` and a deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import MovedError, RedisError, ResponseError

from hub.primaries import Primaries
from hub.redis_wire import Wire, WireFactory
from hub.topics import Keys
from hub.topology import Node

log = logging.getLogger("hub.subscription")

REFRESH_SECONDS = 5.0
"""How often a gateway re-reads a topology that can change, even when nothing went wrong."""


class Listener(Protocol):
    def on_subscribed(self, topic: str) -> None: ...
    def on_message(self, topic: str, message: bytes) -> None: ...
    def on_replies_done(self) -> None:
        """Every message of one read from Redis has been handled."""


@dataclass(frozen=True)
class Verbs:
    """The pub/sub commands and replies of one flavour: server-wide or sharded."""

    subscribe: str
    unsubscribe: str
    message: bytes
    subscribed: bytes
    unsubscribed: bytes
    channels_per_command: int | None  # None: any number


SERVER_WIDE = Verbs("SUBSCRIBE", "UNSUBSCRIBE", b"message", b"subscribe", b"unsubscribe", None)
# In a cluster, one SSUBSCRIBE may only name channels of one slot.
SHARDED = Verbs("SSUBSCRIBE", "SUNSUBSCRIBE", b"smessage", b"ssubscribe", b"sunsubscribe", 1)


class NodeSubscription:
    """One pub/sub connection to one primary, kept up and subscribed to its topics."""

    def __init__(
        self,
        node: Node,
        verbs: Verbs,
        keys: Keys,
        listener: Listener,
        on_trouble: Callable[[Node | None], None],
        timeout: float,
    ) -> None:
        self._wires = WireFactory(node.options)
        self.node = node
        self._verbs = verbs
        self._keys = keys
        self._listener = listener
        self._on_trouble = on_trouble
        self._timeout = timeout
        self.topics: set[str] = set()
        self._wire: Wire | None = None
        self._task: asyncio.Task[None] | None = None
        self.connected = False
        self.reconnects = 0
        self._heard = False
        self._outbox: list[tuple[str, str]] = []  # (verb, channel)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"redis-subscription {self.node.name}")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self._wires.aclose()

    def subscribe(self, topic: str) -> None:
        """Want `topic`; the listener hears `on_subscribed` once Redis confirms."""
        self.topics.add(topic)
        self._send([topic], self._verbs.subscribe)

    def unsubscribe(self, topic: str) -> None:
        self.topics.discard(topic)
        self._send([topic], self._verbs.unsubscribe)

    def _send(self, topics: list[str], verb: str) -> None:
        """Queue the command for `topics`; what one loop turn queues goes in one write."""
        if self._wire is None or not self.connected or not topics:
            return  # the reconnect loop subscribes to everything wanted
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._send_outbox)
        self._outbox += [(verb, self._keys.channel(topic)) for topic in topics]

    def _send_outbox(self) -> None:
        """Send what was queued, in order, each run of one verb as few commands as allowed."""
        outbox, self._outbox = self._outbox, []
        if self._wire is None or not outbox:
            return
        size = self._verbs.channels_per_command or len(outbox)
        commands: list[tuple[str, ...]] = []
        for verb, run in itertools.groupby(outbox, key=lambda command: command[0]):
            channels = [channel for _, channel in run]
            commands += [(verb, *channels[i : i + size]) for i in range(0, len(channels), size)]
        self._wire.send(commands)

    async def _run(self) -> None:
        delay = 0.05
        while True:
            wire: Wire | None = None
            try:
                wire = self._wire = await self._wires.connect(self._on_replies)
                self.connected = True
                self._outbox = []
                self._send(list(self.topics), self._verbs.subscribe)
                log.info("redis subscription up at %s", self.node.name, extra={"event": "redis_up"})
                delay = 0.05
                await self._listen(wire)
            except (RedisError, OSError) as exc:
                if self.connected:
                    self.reconnects += 1
                    log.warning(
                        "redis subscription lost at %s: %s",
                        self.node.name,
                        exc,
                        extra={"event": "redis_lost"},
                    )
                self._on_trouble(None)
            finally:
                self.connected = False
                self._wire = None
                if wire is not None:
                    await wire.close()
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 2.0)

    async def _listen(self, wire: Wire) -> None:
        watchdog = asyncio.create_task(self._watch(wire))
        try:
            await wire.closed
        finally:
            watchdog.cancel()

    def _on_replies(self, replies: list[Any]) -> None:
        """Every reply one read brought, in order; then the listener's clients are written."""
        self._heard = True
        for reply in replies:
            if isinstance(reply, MovedError):
                self._on_trouble(self.node)  # a topic's slot is served elsewhere now
            elif isinstance(reply, ResponseError):
                log.error("redis refused a subscription at %s: %s", self.node.name, reply)
            else:
                try:
                    self._dispatch(reply)
                except Exception:  # a bug in handling one message must not stop the feed
                    log.exception("handling a message from redis failed")
        self._listener.on_replies_done()

    async def _watch(self, wire: Wire) -> None:
        """PING a connection that has been quiet; drop it if the answer does not come in time."""
        idle = min(1.0, self._timeout / 2)
        while True:
            self._heard = False
            await asyncio.sleep(idle)
            if self._heard:
                continue
            wire.send([("PING",)])
            await asyncio.sleep(self._timeout)
            if not self._heard:
                log.warning(
                    "redis subscription silent at %s: no reply to PING in %s s",
                    self.node.name,
                    self._timeout,
                )
                await wire.close()  # the reader fails and the loop reconnects
                return

    def _dispatch(self, reply: list[bytes]) -> None:
        kind = reply[0]
        if kind == self._verbs.message:
            self._listener.on_message(self._keys.topic_of_channel(reply[1].decode()), reply[2])
        elif kind == self._verbs.subscribed:
            topic = self._keys.topic_of_channel(reply[1].decode())
            if topic in self.topics:
                self._listener.on_subscribed(topic)
        elif kind == self._verbs.unsubscribed and reply[1] is not None:
            # Unasked: a primary that loses a slot unsubscribes its shard channels.
            topic = self._keys.topic_of_channel(reply[1].decode())
            if topic in self.topics:
                self.topics.discard(topic)
                self._on_trouble(self.node)


class Subscription:
    """Every wanted topic, subscribed on the primary that owns it."""

    def __init__(
        self, primaries: Primaries, keys: Keys, listener: Listener, timeout: float
    ) -> None:
        self._primaries = primaries
        self._topology = primaries.topology
        self._keys = keys
        self._listener = listener
        self._timeout = timeout
        self._verbs = SHARDED if self._topology.sharded else SERVER_WIDE
        self._wanted: set[str] = set()
        self._nodes: dict[str, NodeSubscription] = {}
        self._placed: dict[str, NodeSubscription] = {}
        self._trouble = asyncio.Event()
        self._known = False
        self._reconnects_of_closed = 0
        self._ask_first: Node | None = None
        self.moves = 0
        """Times a topic was moved to another primary (failover, slot migration)."""
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Subscription:
        self._tasks = [
            asyncio.create_task(self._follow_topology(), name="redis-topology"),
            asyncio.create_task(
                self._topology.watch(lambda: self._on_trouble(None)), name="redis-announcements"
            ),
        ]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        nodes, self._nodes = self._nodes, {}
        for node in nodes.values():
            await node.aclose()

    @property
    def connected(self) -> bool:
        """Whether every primary's connection is up, so every topic's events arrive."""
        return self._known and all(node.connected for node in self._nodes.values())

    @property
    def reconnects(self) -> int:
        return self._reconnects_of_closed + sum(node.reconnects for node in self._nodes.values())

    @property
    def primaries(self) -> int:
        """Primaries this gateway holds a live pub/sub connection to."""
        return sum(node.connected for node in self._nodes.values())

    def subscribe(self, topic: str) -> None:
        """Want `topic`; the listener hears `on_subscribed` once Redis confirms."""
        self._wanted.add(topic)
        if self._known:
            self._place(topic)

    def unsubscribe(self, topic: str) -> None:
        self._wanted.discard(topic)
        node = self._placed.pop(topic, None)
        if node is not None:
            node.unsubscribe(topic)

    def _on_trouble(self, node: Node | None) -> None:
        """A connection was lost (no node), or `node` gave a topic's slot up: learn again.

        A node that gave a slot up knows its new owner before the rest of the
        cluster hears of it, so it is asked first.
        """
        self._ask_first = node
        self._trouble.set()

    async def _follow_topology(self) -> None:
        """Learn the primaries, keep a connection to each, and keep topics on their owners."""
        delay = 0.05
        while True:
            ask_first, self._ask_first = self._ask_first, None
            try:
                await self._primaries.refresh(ask_first)
            except (RedisError, OSError) as exc:
                log.warning("learning the Redis topology failed: %s", exc)
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.05
            self._known = True
            await self._place_all()
            if not self._topology.moves:
                await self._trouble.wait()  # a lone server: its connection reconnects itself
                self._trouble.clear()
                continue
            # While a primary is lost, ask again soon: its replica may have taken over.
            settled = all(node.connected for node in self._nodes.values())
            try:
                await asyncio.wait_for(self._trouble.wait(), REFRESH_SECONDS if settled else 0.25)
            except TimeoutError:
                pass
            self._trouble.clear()

    async def _place_all(self) -> None:
        primaries = {node.name: node for node in self._topology.primaries()}
        for name, node in primaries.items():
            if name not in self._nodes:
                subscription = NodeSubscription(
                    node, self._verbs, self._keys, self._listener, self._on_trouble, self._timeout
                )
                self._nodes[name] = subscription
                subscription.start()
        for topic in list(self._wanted):
            self._place(topic)
        for name in [name for name in self._nodes if name not in primaries]:
            if not self._nodes[name].topics:
                log.info("redis node %s is no longer a primary", name)
                gone = self._nodes.pop(name)
                self._reconnects_of_closed += gone.reconnects
                await gone.aclose()

    def _place(self, topic: str) -> None:
        """Subscribe `topic` on its owner, leaving the node it was on, if that changed."""
        try:
            owner = self._nodes.get(self._topology.owner(self._keys.channel(topic)).name)
        except RedisError:
            return  # no owner known now; the next refresh places it
        placed = self._placed.get(topic)
        if owner is None or (placed is owner and topic in owner.topics):
            return
        if placed is not None and placed is not owner:
            self.moves += 1
            placed.unsubscribe(topic)
        self._placed[topic] = owner
        owner.subscribe(topic)
