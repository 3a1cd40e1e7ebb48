"""The write path: an event appended to its topic's stream and announced, as one step.

`PUBLISH_SCRIPT`, a Lua script, does both on the primary that owns the topic
(one server, the Sentinel-named primary, or the Cluster node of the topic's
slot), so the ID it returns is the stream entry ID that subscribers see as the
event's `id`.

`EventWriter` checks an event and builds the script's call (`prepare`, with
`script_call`), then writes calls (`write`): every call made during one turn
of the event loop, single publishes and batches alike, goes to the primary
that owns its topic in one pipeline of EVALSHA commands per primary, in the
order the calls were made, followed on the same connection by `WAIT` when
`HUB_PUBLISH_WAIT_REPLICAS` asks for replicas. Each caller gets its own
events' IDs or errors. A command that the pipeline's primary did not run (a
redirection, a script cache that was emptied) goes again through
`Primaries.run`, which follows the cluster and waits out a refused connection;
nothing that may have run is ever sent twice. The publisher library runs it on
Redis clients of its own; the gateway's `POST /publish` on the gateway's.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Coroutine, Iterable, Sequence
from functools import lru_cache
from typing import Any, NamedTuple, cast

from redis.exceptions import (
    AskError,
    ClusterDownError,
    NoScriptError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from hub.config import Settings
from hub.events import check_data, check_event_type
from hub.primaries import Command, Primaries, never_sent
from hub.redis_wire import exchange, pack
from hub.topics import Keys, check_topic
from hub.topology import Node, NoPrimary

PUBLISH_SCRIPT = """\
-- Append one event to a topic's stream and announce it, as one atomic step.
--
-- KEYS[1]  the topic's stream
-- ARGV[1]  data                      ARGV[2]  event type ('' for the default)
-- ARGV[3]  MAXLEN bound (0: none)    ARGV[4]  age bound in ms (0: none)
-- ARGV[5]  the topic's pub/sub channel (a channel, not a key: ACLs check it as one)
-- ARGV[6]  'PUBLISH', or 'SPUBLISH' in a Redis Cluster: sharded pub/sub announces the
--          event only on the primary that owns the topic's slot (its hash tag), where
--          the gateways subscribe with SSUBSCRIBE
-- KEYS[2]  (optional) a key in the stream's slot that is to name the entry's ID: a
--          Mercure publisher's own ID for the update, so a subscriber can resume from it
-- ARGV[7]  how long that key is kept, in ms
-- ARGV[8]  (optional) '1': the entry's ID is the server's clock in microseconds,
--          <ms>-<µs within the ms × 1000>, rather than Redis's <ms>-<counter>: entries
--          of different streams on one server then sort by the order they were
--          written in (Mercure's partitions: see hub/mercure/record.py)
--
-- Each entry records the ID of the entry before it ('p'). A gateway or a
-- replay that sees an entry whose 'p' is not the last ID it holds knows, for
-- certain, that events are missing between the two: trimmed history, a
-- subscription that was down, or a Redis that lost its data.
--
-- The message published is "<id>\\n<prev>\\n<type>\\n<data>": IDs and types hold
-- no newline, so the data, last, may contain anything.
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local prev = '0-0'
if last[1] then prev = last[1][1] end

local wanted = '*'
if ARGV[8] == '1' then
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local seq = (tonumber(now[2]) % 1000) * 1000
  if last[1] then
    local last_ms, last_seq = string.match(prev, '^(%d+)-(%d+)$')
    last_ms, last_seq = tonumber(last_ms), tonumber(last_seq)
    if ms < last_ms or (ms == last_ms and seq <= last_seq) then
      ms, seq = last_ms, last_seq + 1
    end
  end
  wanted = string.format('%.0f-%.0f', ms, seq)
end

local id
local maxlen = tonumber(ARGV[3])
if maxlen > 0 then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, wanted,
                  'p', prev, 't', ARGV[2], 'd', ARGV[1])
else
  id = redis.call('XADD', KEYS[1], wanted, 'p', prev, 't', ARGV[2], 'd', ARGV[1])
end

local max_age = tonumber(ARGV[4])
if max_age > 0 then
  local now = redis.call('TIME')
  local oldest = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - max_age
  redis.call('XTRIM', KEYS[1], 'MINID', '~', oldest)
end

local announce = ARGV[6]
if announce ~= 'PUBLISH' and announce ~= 'SPUBLISH' then
  return redis.error_reply('ERR ARGV[6] must be PUBLISH or SPUBLISH')
end
redis.call(announce, ARGV[5], id .. '\\n' .. prev .. '\\n' .. ARGV[2] .. '\\n' .. ARGV[1])
if KEYS[2] then
  redis.call('SET', KEYS[2], id, 'PX', ARGV[7])
end
return id
"""
PUBLISH_SHA = hashlib.sha1(PUBLISH_SCRIPT.encode()).hexdigest()


class NotReplicated(RedisError):
    """The event was written, but fewer replicas than asked for hold it yet."""

    def __init__(self, event_id: str, replicas: int, wanted: int, waited_ms: int) -> None:
        super().__init__(
            f"event {event_id} reached {replicas} of {wanted} replicas in {waited_ms} ms;"
            " it is not acknowledged and may be lost if its primary fails"
        )
        self.event_id = event_id


class NotSent(RedisConnectionError):
    """An event of a batch that was never sent: Redis failed for an event before it."""

    def __init__(self, reason: BaseException) -> None:
        super().__init__(f"not sent, as Redis failed for an event before it: {reason}")
        self.__cause__ = reason


class NotAllPublished(RedisError):
    """Some events of a `publish_many` were not published, or not acknowledged.

    `results` holds each event's ID, or the error it met, in the order given;
    the events with an ID were published.
    """

    def __init__(self, results: list[str | Exception]) -> None:
        failed = [(n, r) for n, r in enumerate(results) if isinstance(r, Exception)]
        first_index, first = failed[0]
        super().__init__(
            f"{len(failed)} of {len(results)} events were not published;"
            f" the first, event {first_index}: {first}"
        )
        self.results = results
        self.__cause__ = first


@lru_cache(maxsize=16)
def _keys(prefix: str) -> Keys:
    return Keys(prefix)


def script_call(
    settings: Settings,
    topic: str,
    data: str,
    event_type: str,
    announce: str = "PUBLISH",
    internal: bool = False,
) -> tuple[str, list[str | int]]:
    """Check one event; the publish script's key and arguments for it (see `PUBLISH_SCRIPT`).

    An `internal` topic is one of the hub's own (a Mercure partition), whose name no
    client can give: the topic grammar does not apply to it.
    """
    if not internal:
        check_topic(topic)
    check_event_type(event_type)
    check_data(data, settings.max_event_bytes)
    keys = _keys(settings.key_prefix)
    return keys.stream(topic), [
        data,
        event_type,
        settings.retention_maxlen,
        settings.retention_seconds * 1000,
        keys.channel(topic),
        announce,
    ]


def alias_key(stream_key: str, alias: str) -> str:
    """The key that names the entry a publisher's own ID stands for (same slot as the stream)."""
    return f"{stream_key}:id:{alias}"


class Call(NamedTuple):
    """One checked event: its stream's key, and the EVALSHA command that publishes it, as
    words and in the Redis protocol."""

    key: str
    command: Command
    packed: bytes


Outcome = str | Exception
"""What became of one event: its ID, or the error it met."""

LIBRARY_CHUNK = 1000
"""Events `publish_many` writes at once: the event loop runs other tasks between chunks."""
_LOAD: Command = ("SCRIPT", "LOAD", PUBLISH_SCRIPT)
# Answers that mean the command did not run there: it may be sent again, elsewhere.
_AGAIN = (AskError, ReadOnlyError, TryAgainError, ClusterDownError, NoScriptError)


class _Waiter:
    """The outcomes of one `write`, filled in as its events' replies come."""

    __slots__ = ("future", "left", "results")

    def __init__(self, future: asyncio.Future[None], count: int) -> None:
        self.future = future
        self.results: list[Outcome | None] = [None] * count
        self.left = count


class _Entry:
    """One event on its way: its call, and where its outcome goes."""

    __slots__ = ("call", "index", "waiter")

    def __init__(self, call: Call, waiter: _Waiter, index: int) -> None:
        self.call = call
        self.waiter = waiter
        self.index = index

    @property
    def abandoned(self) -> bool:
        """Whether its caller stopped waiting (was cancelled) before it was sent."""
        return self.waiter.future.cancelled()

    def settle(self, outcome: Outcome) -> None:
        waiter = self.waiter
        if waiter.results[self.index] is None:
            waiter.results[self.index] = outcome
            waiter.left -= 1
            if not waiter.left and not waiter.future.done():
                waiter.future.set_result(None)


class EventWriter:
    """Publishes events through `primaries`, which its owner opens and closes."""

    def __init__(self, settings: Settings, primaries: Primaries) -> None:
        self.settings = settings
        self._primaries = primaries
        self._announce = "SPUBLISH" if primaries.topology.sharded else "PUBLISH"
        self._packed_bounds = _words(settings.retention_maxlen, settings.retention_seconds * 1000)
        self._packed_announce = _words(self._announce)
        self._wanted = settings.publish_wait_replicas
        self._wait: Command | None = (
            ("WAIT", self._wanted, settings.publish_wait_ms) if self._wanted else None
        )
        self._packed_wait = pack(self._wait) if self._wait is not None else b""
        # Primaries the script is known to be loaded on. It is loaded before the first
        # EVALSHA, not on NOSCRIPT: the embedded development server (fakeredis) answers
        # an unknown SHA with an error redis-py does not recognise. A primary is
        # forgotten when its connection fails (it may have restarted without its cache).
        self._loaded: set[str] = set()
        self._queued: dict[str, tuple[Node, list[_Entry]]] = {}
        self._unrouted: list[_Entry] = []
        self._flush_planned = False
        self._tasks: set[asyncio.Task[None]] = set()

    def prepare(self, topic: str, data: str, event_type: str = "") -> Call:
        """Check one event (`InvalidTopic`, `InvalidEvent`); the call that publishes it."""
        key, args = script_call(self.settings, topic, data, event_type, self._announce)
        command: Command = ("EVALSHA", PUBLISH_SHA, 1, key, *args)
        k, d, t, c = key.encode(), data.encode(), event_type.encode(), str(args[4]).encode()
        # pack(command), with the words that are the same for every event packed once.
        packed = b"".join(
            (
                _PACKED_EVALSHA,
                b"$%d\r\n" % len(k), k,
                b"\r\n$%d\r\n" % len(d), d,
                b"\r\n$%d\r\n" % len(t), t,
                b"\r\n", self._packed_bounds,
                b"$%d\r\n" % len(c), c,
                b"\r\n", self._packed_announce,
            )
        )  # fmt: skip
        return Call(key, command, packed)

    def prepare_internal(self, topic: str, data: str, alias: str, alias_ms: int) -> Call:
        """The call for an event of one of the hub's own topics, its ID from the server's
        clock in microseconds; with an `alias`, the publish also sets
        `<stream key>:id:<alias>` to the event's ID for `alias_ms`."""
        key, args = script_call(self.settings, topic, data, "", self._announce, internal=True)
        keys = (key, alias_key(key, alias)) if alias else (key,)
        command: Command = ("EVALSHA", PUBLISH_SHA, len(keys), *keys, *args, alias_ms, "1")
        return Call(key, command, pack(command))

    async def publish(self, topic: str, data: str, event_type: str = "") -> str:
        """Append and announce one event; return its ID."""
        [outcome] = await self.write([self.prepare(topic, data, event_type)])
        if isinstance(outcome, Exception):
            # The same error may be every caller's whose event shared a pipeline.
            raise outcome.with_traceback(None)
        return outcome

    async def publish_many(
        self, events: Iterable[tuple[str, str] | tuple[str, str, str]]
    ) -> list[str]:
        """Append and announce `(topic, data[, type])` events, pipelined; their IDs in order.

        Every event is checked before any is sent. If some fail, `NotAllPublished`
        holds each event's outcome; once Redis is unreachable, the rest are not sent.
        """
        calls = [self.prepare(*event) for event in events]
        outcomes: list[Outcome] = []
        failure: Exception | None = None
        for start in range(0, len(calls), LIBRARY_CHUNK):
            chunk = calls[start : start + LIBRARY_CHUNK]
            if failure is not None:
                outcomes += [NotSent(failure)] * len(chunk)
                continue
            written = await self.write(chunk)
            failure = next(
                (o for o in written if isinstance(o, Exception) and _unavailable(o)), None
            )
            outcomes += written
        if any(isinstance(outcome, Exception) for outcome in outcomes):
            raise NotAllPublished(outcomes)
        return cast(list[str], outcomes)

    async def write(self, calls: Sequence[Call]) -> list[Outcome]:
        """Publish prepared calls; each one's ID, or the error it met, in order (never raises
        for Redis). The calls of one topic are written in the order given."""
        if not calls:
            return []
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), len(calls))
        owner = self._primaries.topology.owner
        queued = self._queued
        for index, call in enumerate(calls):
            entry = _Entry(call, waiter, index)
            try:
                node = owner(call.key)
            except NoPrimary:
                self._unrouted.append(entry)
                continue
            group = queued.get(node.name)
            if group is None:
                queued[node.name] = (node, [entry])
            else:
                group[1].append(entry)
        if not self._flush_planned:
            # Sent once this turn of the event loop is over, with every call made in it.
            self._flush_planned = True
            loop.call_soon(self._flush)
        await waiter.future
        return cast(list[Outcome], waiter.results)

    def _flush(self) -> None:
        self._flush_planned = False
        queued, self._queued = self._queued, {}
        unrouted, self._unrouted = self._unrouted, []
        for node, entries in queued.values():
            self._start(self._deliver(node, entries))
        if unrouted:
            self._start(self._deliver(None, unrouted))

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)  # a task nobody refers to may be collected mid-way
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, node: Node | None, entries: list[_Entry]) -> None:
        """Send `entries` to `node` (None: no owner is known), then again what it did not
        run; no caller is left waiting, whatever happens."""
        try:
            await self._reroute(entries if node is None else await self._pipeline(node, entries))
        except BaseException as exc:
            failure = RedisError(f"publishing failed: {exc!r}; the event may have been written")
            for entry in entries:
                entry.settle(failure)
            raise

    async def _pipeline(self, node: Node, entries: list[_Entry]) -> list[_Entry]:
        """Send `entries` to `node` as one pipeline and settle them; those to send again."""
        entries = [entry for entry in entries if not entry.abandoned]
        if not entries:
            return []
        commands = [entry.call.packed for entry in entries]
        loading = node.name not in self._loaded
        if loading:
            commands.insert(0, _PACKED_LOAD)
        if self._wait is not None:
            commands.append(self._packed_wait)
        try:
            replies = await exchange(self._primaries.client(node), commands)
        except (RedisError, OSError) as exc:
            self._loaded.discard(node.name)
            if never_sent(exc):
                return entries
            for entry in entries:  # any of them may have run: none is sent again
                entry.settle(exc)
            return []
        load_error = None
        if loading:
            loaded = replies[0]
            replies = replies[1:]
            if isinstance(loaded, Exception):
                load_error = loaded
            else:
                self._loaded.add(node.name)
        replicas = replies.pop() if self._wait is not None else None
        again = []
        for entry, reply in zip(entries, replies, strict=True):
            if isinstance(reply, _AGAIN):
                if isinstance(reply, NoScriptError):
                    self._loaded.discard(node.name)
                    if load_error is not None:
                        entry.settle(load_error)
                        continue
                again.append(entry)
            elif isinstance(reply, Exception):
                entry.settle(reply)
            else:
                entry.settle(self._acknowledged(_text(reply), replicas))
        return again

    async def _reroute(self, entries: list[_Entry]) -> None:
        """Send `entries` again, in order: the first through `Primaries.run` (it follows
        redirections, learns the topology again, waits out a refused connection), then
        the others as pipelines once more, until none is left."""
        while entries:
            head, rest = entries[0], entries[1:]
            if not head.abandoned:
                try:
                    head.settle(await self._run(head.call))
                except (RedisError, OSError) as exc:
                    head.settle(exc)
                    if _unavailable(exc):
                        for entry in rest:
                            entry.settle(NotSent(exc))
                        return
            entries = await self._resend(rest)

    async def _resend(self, entries: list[_Entry]) -> list[_Entry]:
        """Pipelines of `entries` by owner again; those that must still go again, in order."""
        groups: dict[str, tuple[Node, list[_Entry]]] = {}
        again: list[_Entry] = []
        for entry in entries:
            try:
                node = self._primaries.topology.owner(entry.call.key)
            except NoPrimary:
                again.append(entry)
                continue
            groups.setdefault(node.name, (node, []))[1].append(entry)
        sent = await asyncio.gather(*(self._pipeline(*group) for group in groups.values()))
        again_ids = {id(entry) for entry in again} | {id(e) for group in sent for e in group}
        return [entry for entry in entries if id(entry) in again_ids]

    async def _run(self, call: Call) -> Outcome:
        """One event through `Primaries.run`."""
        used: list[Node] = []

        def commands(node: Node) -> list[Command]:
            used.append(node)
            batch = [call.command]
            if node.name not in self._loaded:
                batch.insert(0, _LOAD)
            if self._wait is not None:
                batch.append(self._wait)
            return batch

        try:
            try:
                results = await self._primaries.run(call.key, commands, idempotent=False)
            except NoScriptError:  # a restarted or promoted primary lost its script cache
                self._loaded.clear()
                results = await self._primaries.run(call.key, commands, idempotent=False)
        except (RedisConnectionError, OSError):
            if used:
                self._loaded.discard(used[-1].name)
            raise
        self._loaded.add(used[-1].name)
        replicas = results.pop() if self._wait is not None else None
        return self._acknowledged(_text(results[-1]), replicas)  # after SCRIPT LOAD's answer

    def _acknowledged(self, event_id: str, replicas: Any) -> Outcome:
        """The event's ID, unless `WAIT` found fewer replicas holding it than wanted."""
        if self._wait is None:
            return event_id
        if isinstance(replicas, Exception):
            return replicas
        if int(replicas) < self._wanted:
            return NotReplicated(
                event_id, int(replicas), self._wanted, self.settings.publish_wait_ms
            )
        return event_id


def _words(*words: str | int | bytes) -> bytes:
    """Words in the Redis protocol, without the count that starts a command."""
    return pack(words).partition(b"\r\n")[2]


_PACKED_LOAD = pack(_LOAD)
_PACKED_EVALSHA = b"*10\r\n" + _words("EVALSHA", PUBLISH_SHA, 1)


def _unavailable(outcome: Outcome) -> bool:
    """Whether an outcome says that Redis could not be used, rather than refusing one event."""
    if not isinstance(outcome, Exception) or isinstance(outcome, NotReplicated):
        return False
    return not isinstance(outcome, ResponseError) or isinstance(outcome, _AGAIN)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
