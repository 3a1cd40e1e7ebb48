"""Mercure's active subscriptions: their events, and the API that lists them, hub-wide.

Every matcher of every open Mercure stream is a subscription. When one begins
or ends, the gateway holding it publishes a private update on its topic,
`/.well-known/mercure/subscriptions/{matchType}/{match}/{subscriber}`, and the
subscriptions API lists those of every gateway: gateways keep no state of
their own, so the list lives in Redis.

    {prefix}mercure:gateways                  sorted set: gateway instance -> last refresh (ms)
    {prefix}mercure:subscriptions:{instance}  hash: subscription -> its JSON-LD document
    {prefix}mercure:sweep:{instance}          the lock of the gateway that sweeps a dead one

Each gateway writes only its own hash, from one task, so its writes keep the
order in which its streams opened and closed. It refreshes its score every
`REFRESH_SECONDS`; a gateway whose score is older than `STALE_MS` is dead (a
crash, a kill: nothing said goodbye for it), and the first live gateway to
take its lock announces the end of each subscription it left behind, then
deletes its hash: so they end once, within `STALE_MS` and a refresh. The hash
itself outlives the staleness by far (`KEY_TTL_MS`), so a sweeper still finds
what to announce; its expiry only clears up after a hub that stopped whole.

Each command touches one key, through `Primaries.run`, so a Redis Cluster
serves this as well as one server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from redis.exceptions import RedisError

from hub.auth import Authority
from hub.mercure.dispatch import MercureStream
from hub.mercure.gateway import MercureGateway
from hub.mercure.record import Update, hub_id

log = logging.getLogger("hub.mercure.presence")

SUBSCRIPTIONS_PATH: Final = "/.well-known/mercure/subscriptions"
CONTEXT: Final = "https://mercure.rocks/"

REFRESH_SECONDS: Final = 10.0
"""How often a gateway says it is alive (and looks for dead ones)."""
STALE_MS: Final = 30_000
"""A gateway that has not refreshed for this long is dead; its subscriptions are ended."""
KEY_TTL_MS: Final = 4 * STALE_MS
"""A gateway's hash outlives its staleness so that a sweeper still finds it to announce."""
SWEEP_LOCK_MS: Final = 30_000
"""How long one gateway has to sweep a dead one before another may try again."""
SWEEP_BATCH: Final = 100
"""Dead gateways looked at per sweep."""
PUBLISH_CHUNK: Final = 1000
"""Updates published at once (one pipeline per primary), so memory stays bounded."""
HSET_CHUNK: Final = 1000
"""Subscriptions written by one HSET when a whole hash is written again."""
MAX_QUEUED_UPDATES: Final = 100_000
"""Announcements kept while Redis does not answer; past that the oldest are dropped."""

REDIS_ERRORS = (RedisError, OSError)  # TimeoutError is an OSError


def subscription_id(match_type: str, match: str, subscriber: str) -> str:
    """The subscription's topic and JSON-LD `id`: each variable percent-encoded once, whole."""
    return f"{SUBSCRIPTIONS_PATH}/{match_type}/{encoded(match)}/{encoded(subscriber)}"


def encoded(value: str) -> str:
    return quote(value, safe="")


def _now_ms() -> int:
    # Gateways compare one another's wall clocks: NTP keeps them within milliseconds,
    # far below the staleness threshold.
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class _Keys:
    prefix: str

    @property
    def gateways(self) -> str:
        return f"{self.prefix}mercure:gateways"

    def subscriptions(self, instance: str) -> str:
        # The instance is a hash tag: in a Cluster, one gateway's hash is one slot.
        return f"{self.prefix}mercure:subscriptions:{{{instance}}}"

    def sweep(self, instance: str) -> str:
        return f"{self.prefix}mercure:sweep:{{{instance}}}"


@dataclass(frozen=True, slots=True)
class _Held:
    """A stream's subscriptions: the hash fields they are kept under, and their documents."""

    fields: tuple[str, ...]
    documents: tuple[dict[str, Any], ...]


class Presence:
    """The active subscriptions of this gateway, kept in Redis beside every other gateway's.

    Opening and closing streams only queue changes: the stream is never delayed,
    and a Redis that does not answer costs a logged warning, not a subscriber.
    """

    def __init__(self, mercure: MercureGateway, authority: Authority) -> None:
        self.mercure = mercure
        self.authority = authority
        self.instance = str(uuid.uuid4())
        self._keys = _Keys(mercure.settings.key_prefix)
        self._hash = self._keys.subscriptions(self.instance)
        self._held: dict[MercureStream, _Held] = {}
        self._desired: dict[str, str] = {}
        """What this gateway's hash is to hold: field -> document (JSON)."""
        self._dirty: set[str] = set()
        """Fields whose value in Redis may differ from `_desired`."""
        self._queued: list[Update] = []
        self._wake = asyncio.Event()
        self._registered = False
        self._sweeping: asyncio.Task[None] | None = None
        self._closed = False
        # Needs the running loop: `create_app` is called inside the server's.
        self._writer = asyncio.get_running_loop().create_task(self._write_forever())
        mercure.on_open.append(self._opened)
        mercure.on_close.append(self._ended)
        mercure.gateway.closing.append(self.close)

    def close(self) -> None:
        """Stop writing; the gateway's Redis clients close next.

        Whatever is left in this gateway's hash is ended by the next gateway to
        sweep, as for a crash: cleaning up is idempotent by design.
        """
        self._closed = True
        for task in (self._writer, self._sweeping):
            if task is not None:
                task.cancel()

    # -- events ---------------------------------------------------------------

    def _opened(self, stream: MercureStream) -> None:
        if self._closed:
            return
        grant = stream.grant
        subject = grant.subject if grant is not None else None
        # Without a token's `sub`, the hub makes the identifier; no client may choose it.
        subscriber = subject or f"urn:uuid:{uuid.uuid4()}"
        connection = uuid.uuid4().hex
        fields = []
        documents = []
        for matcher in stream.selects.matchers:
            document: dict[str, Any] = {
                "@context": CONTEXT,
                "id": subscription_id(matcher.match_type, matcher.pattern, subscriber),
                "type": "Subscription",
                "matchType": matcher.match_type,
                "match": matcher.pattern,
                "subscriber": subscriber,
                "active": True,
            }
            payload = grant.payload_for(matcher.pattern) if grant is not None else None
            if payload is not None:
                document["payload"] = payload
            # Two connections of one `sub` make the same subscription ID: the suffix
            # keeps each one's entry until that connection ends.
            field = f"{document['id']} {connection}"
            fields.append(field)
            documents.append(document)
            self._desired[field] = _json(document)
            self._dirty.add(field)
            self._announce(document)
        self._held[stream] = _Held(tuple(fields), tuple(documents))
        self._wake.set()

    def _ended(self, stream: MercureStream) -> None:
        held = self._held.pop(stream, None)
        if held is None or self._closed:
            return
        for field, document in zip(held.fields, held.documents, strict=True):
            self._desired.pop(field, None)
            self._dirty.add(field)
            self._announce({**document, "active": False})
        self._wake.set()

    def _announce(self, document: dict[str, Any]) -> None:
        excess = len(self._queued) + 1 - MAX_QUEUED_UPDATES
        if excess > 0:
            del self._queued[:excess]
            log.warning("subscription events wait for Redis: dropped the %d oldest", excess)
        self._queued.append(_update(document))

    # -- this gateway's hash ------------------------------------------------------

    async def _write_forever(self) -> None:
        """Write the changes as they come, refresh, and sweep, each in its turn."""
        refresh_due = 0.0
        while True:
            # Cleared first: a change that comes while Redis is written to wakes the next turn.
            self._wake.clear()
            now = time.monotonic()
            if now >= refresh_due:
                refresh_due = now + REFRESH_SECONDS
                await self._quietly(self._refresh(), "refreshing this gateway's subscriptions")
                if self._sweeping is None or self._sweeping.done():
                    self._sweeping = asyncio.create_task(
                        self._quietly(self._sweep(), "sweeping dead gateways")
                    )
            if self._dirty or self._queued:
                await self._quietly(self._flush(), "recording subscriptions")
            # What failed is tried again with the next change or at the next refresh,
            # never in a tight loop while Redis is away.
            try:
                async with asyncio.timeout(max(0.0, refresh_due - time.monotonic())):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _quietly(self, work: Awaitable[None], what: str) -> None:
        try:
            await work
        except REDIS_ERRORS as exc:
            log.warning("%s failed: %s", what, exc or type(exc).__name__)
        except Exception:
            # Anything else is a bug; the writer lives on so the next change still goes out.
            log.exception("%s failed", what)

    async def _flush(self) -> None:
        """Bring the hash up to date, then publish what was announced up to then.

        An event goes out only once its subscription is written: whoever hears of it
        and asks the API finds it there.
        """
        dirty, self._dirty = self._dirty, set()
        queued, self._queued = self._queued, []
        try:
            await self._write_fields(dirty)
        except BaseException:
            self._dirty |= dirty
            self._queued[:0] = queued
            raise
        for start in range(0, len(queued), PUBLISH_CHUNK):
            failed = await self._publish(queued[start : start + PUBLISH_CHUNK])
            if failed:
                # Kept for the next try, in their order, before anything queued since.
                self._queued[:0] = failed + queued[start + PUBLISH_CHUNK :]
                raise _not_published(len(failed))

    async def _write_fields(self, fields: Iterable[str]) -> None:
        key = self._hash
        sets: list[str] = []
        deletes: list[str] = []
        for field in fields:
            value = self._desired.get(field)
            if value is None:
                deletes.append(field)
            else:
                sets += (field, value)
        commands: list[tuple[str | int, ...]] = []
        for start in range(0, len(sets), 2 * HSET_CHUNK):
            commands.append(("HSET", key, *sets[start : start + 2 * HSET_CHUNK]))
        if deletes:
            commands.append(("HDEL", key, *deletes))
        commands.append(("PEXPIRE", key, KEY_TTL_MS))
        # Setting and deleting are safe to repeat: a lost reply may be retried.
        await self._run(key, commands, idempotent=True)

    async def _publish(self, updates: list[Update]) -> list[Update]:
        """Publish, all in one turn of the loop (so in one pipeline); those that failed."""
        outcomes = await asyncio.gather(
            *(self.mercure.publish(update) for update in updates), return_exceptions=True
        )
        failed = []
        for update, outcome in zip(updates, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, REDIS_ERRORS):
                    raise outcome
                failed.append(update)
        return failed

    async def _refresh(self) -> None:
        """Say this gateway is alive; write its hash again if Redis lost it or it was swept."""
        gateways = self._keys.gateways
        [kept] = await self._run(self._hash, [("PEXPIRE", self._hash, KEY_TTL_MS)], idempotent=True)
        [added] = await self._run(
            gateways, [("ZADD", gateways, _now_ms(), self.instance)], idempotent=True
        )
        # Listed before and not any more: another gateway took this one for dead (its
        # loop stalled past the threshold) and ended its subscriptions. Begin them again.
        swept = bool(added) and self._registered
        self._registered = True
        if (swept or not kept) and self._desired:
            log.warning(
                "this gateway's subscriptions were %s in Redis: writing them again",
                "ended by another gateway" if swept else "missing",
            )
            self._dirty |= set(self._desired)
            if swept:
                for field in self._desired:
                    self._queued.append(_update(json.loads(self._desired[field])))

    # -- dead gateways --------------------------------------------------------

    async def _sweep(self) -> None:
        gateways = self._keys.gateways
        threshold = _now_ms() - STALE_MS
        [stale] = await self._run(
            gateways,
            [("ZRANGEBYSCORE", gateways, "-inf", f"({threshold}", "LIMIT", 0, SWEEP_BATCH)],
            idempotent=True,
        )
        for raw in stale:
            instance = raw.decode()
            if instance != self.instance:
                await self._sweep_one(instance, threshold)

    async def _sweep_one(self, instance: str, threshold: int) -> None:
        lock = self._keys.sweep(instance)
        # Not retried: a lost reply leaves the lock to expire, and the sweep to whoever
        # comes next, rather than risk two sweepers.
        [taken] = await self._run(
            lock, [("SET", lock, "1", "NX", "PX", SWEEP_LOCK_MS)], idempotent=False
        )
        if taken is None:
            return  # another gateway is at it
        gateways = self._keys.gateways
        [score] = await self._run(gateways, [("ZSCORE", gateways, instance)], idempotent=True)
        if score is None or float(score) >= threshold:
            return  # swept since we looked, or alive again
        key = self._keys.subscriptions(instance)
        [values] = await self._run(key, [("HVALS", key)], idempotent=True)
        ended = [_update({**document, "active": False}) for document in _documents(values)]
        for start in range(0, len(ended), PUBLISH_CHUNK):
            failed = await self._publish(ended[start : start + PUBLISH_CHUNK])
            if failed:
                # The lock expires and the next sweep announces them all again: a repeated
                # `active: false` is harmless, a missing one is not.
                raise _not_published(len(failed))
        log.info("gateway %s stopped refreshing: ended its %d subscriptions", instance, len(ended))
        await self._run(key, [("DEL", key)], idempotent=True)
        await self._run(gateways, [("ZREM", gateways, instance)], idempotent=True)

    # -- reading --------------------------------------------------------------

    async def subscriptions(self) -> list[dict[str, Any]]:
        """The documents of the active subscriptions of every live gateway, by ID."""
        gateways = self._keys.gateways
        [live] = await self._run(
            gateways,
            [("ZRANGEBYSCORE", gateways, _now_ms() - STALE_MS, "+inf")],
            idempotent=True,
        )
        instances = {raw.decode() for raw in live} | {self.instance}
        keys = [self._keys.subscriptions(instance) for instance in sorted(instances)]
        replies = await asyncio.gather(
            *(self._run(key, [("HVALS", key)], idempotent=True) for key in keys)
        )
        found: dict[str, dict[str, Any]] = {}
        for [values] in replies:
            for document in _documents(values):
                # One `sub` on two connections is one subscription.
                found.setdefault(document["id"], document)
        return [found[key] for key in sorted(found)]

    async def last_event_id(self) -> str:
        """A place in the hub-wide order every subscriber can resume from."""
        await self.mercure.sequencer.started()
        return hub_id(self.mercure.sequencer.released)

    async def _run(
        self, key: str, commands: list[tuple[str | int, ...]], idempotent: bool
    ) -> list[Any]:
        return await self.mercure.gateway.primaries.run(
            key, lambda node: list(commands), idempotent=idempotent
        )


def _not_published(count: int) -> RedisError:
    return RedisError(f"{count} subscription events were not published")


def _update(document: dict[str, Any]) -> Update:
    return Update(topics=(document["id"],), data=_json(document), private=True)


def _json(document: dict[str, Any]) -> str:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def _documents(values: list[bytes]) -> Iterator[dict[str, Any]]:
    """The subscription documents a registry hash holds (anything else in it is skipped)."""
    for value in values:
        try:
            document = json.loads(value)
        except ValueError:
            continue
        if isinstance(document, dict) and isinstance(document.get("id"), str):
            yield document
