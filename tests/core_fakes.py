"""In-process stand-ins for the core's surroundings, for the fast tests of its state machines.

The core (fan-out, history reads, client connections) runs for real, on the
test's event loop, against the real Redis where Redis's answers matter
(history, tails, trims). What a test must control is faked:

- `FakeSubscription`: no pub/sub connection. Subscribing confirms at once
  (`on_subscribed`), and the test hands live messages to `Fanout.on_message`
  itself, so it decides which announcements the gateway hears: drop one to
  make a gap, repeat one, feed one late.
- `Socket`: the ASGI server side of one response. It records every body and
  can stop draining, like a socket whose peer does not read.
- `PausingHistory`: a real `History` whose next read of a topic can be held
  after Redis answered, so a test can publish while a read is in flight.
- `Writer`: appends events with the real publish script and gives the message
  the script announced, byte for byte (or writes raw, malformed entries).
- `FlakyPrimaries`: real primaries whose next reads fail on demand.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from starlette.types import Message

from hub import topology
from hub.client_connection import ClientConnection, Ending, Flusher
from hub.events import ORIGIN, StreamId, format_id, parse_id
from hub.fanout import Fanout
from hub.history import History, Page
from hub.primaries import Commands, Primaries
from hub.publish import PUBLISH_SCRIPT
from hub.subscription import Subscription
from hub.topics import Keys

WAIT_SECONDS = 5.0
"""How long a condition may take to come true before a test fails (nothing takes near this)."""


async def wait_until(
    condition: Callable[[], bool], observed: Callable[[], object], within: float = WAIT_SECONDS
) -> None:
    """Poll `condition` until it holds; fail with what `observed` shows if it does not in time."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            seen = repr(observed())
            if len(seen) > 1500:
                seen = seen[:700] + " ... " + seen[-700:]
            raise AssertionError(f"condition not met in {within} s; observed: {seen}")
        await asyncio.sleep(0.002)


# -- Redis writes ----------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """One event as it is in the stream, and the message that announced it."""

    id: StreamId
    prev: StreamId
    data: str
    message: bytes

    @property
    def text_id(self) -> str:
        return format_id(self.id)


class Writer:
    """Appends to topics' streams: with the publish script, or raw (for malformed entries)."""

    def __init__(self, client: redis.asyncio.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self._script = client.register_script(PUBLISH_SCRIPT)

    async def publish(self, topic: str, data: str, event_type: str = "") -> Sent:
        """Run the publish script; the message is the one it announced (id, prev, type, data)."""
        args: list[str | int] = [data, event_type, 0, 0, self._keys.channel(topic), "PUBLISH"]
        raw_id = await self._script(keys=[self._keys.stream(topic)], args=args)
        entry = await self.entry(topic, _text(raw_id))
        return Sent(
            parse_id(_text(raw_id)),
            parse_id(entry[b"p"].decode()),
            data,
            _text(raw_id).encode()
            + b"\n"
            + entry[b"p"]
            + b"\n"
            + entry[b"t"]
            + b"\n"
            + entry[b"d"],
        )

    async def publish_many(self, topic: str, count: int, prefix: str = "e") -> list[Sent]:
        return [await self.publish(topic, f"{prefix}{n}") for n in range(count)]

    async def raw(self, topic: str, fields: dict[bytes, bytes]) -> Sent:
        """XADD an entry as anyone with write access could; its message as the script builds one."""
        raw_id = await self._client.xadd(self._keys.stream(topic), fields)  # type: ignore[arg-type]
        sid = _text(raw_id)
        prev = fields.get(b"p", b"0-0")
        message = b"\n".join([sid.encode(), prev, fields.get(b"t", b""), fields.get(b"d", b"")])
        try:
            prev_id = parse_id(prev.decode())
        except (ValueError, UnicodeDecodeError):
            prev_id = ORIGIN
        return Sent(
            parse_id(sid), prev_id, fields.get(b"d", b"").decode("utf-8", "replace"), message
        )

    async def entry(self, topic: str, sid: str) -> dict[bytes, bytes]:
        entries = await self._client.xrange(self._keys.stream(topic), sid, sid)
        assert entries, f"entry {sid} of {topic} is not in the stream"
        return cast(dict[bytes, bytes], entries[0][1])

    async def trim(self, topic: str, maxlen: int) -> None:
        """Keep exactly the newest `maxlen` entries (an exact trim, unlike the script's `~`)."""
        await self._client.xtrim(self._keys.stream(topic), maxlen=maxlen, approximate=False)

    async def delete(self, topic: str, *sids: StreamId) -> None:
        await self._client.xdel(self._keys.stream(topic), *(format_id(sid) for sid in sids))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- Redis that fails on demand ----------------------------------------------------------------


class FlakyPrimaries(Primaries):
    """Real primaries whose next `fail` reads raise as if Redis had gone away."""

    fail = 0
    calls = 0

    async def run(self, key: str, commands: Commands, *, idempotent: bool) -> list[Any]:
        self.calls += 1
        if self.fail:
            self.fail -= 1
            await asyncio.sleep(0)  # fail while others may join the read
            raise RedisConnectionError("redis went away")
        return await super().run(key, commands, idempotent=idempotent)


# -- a subscription the test drives ---------------------------------------------------


class FakeSubscription:
    """Stands in for `Subscription`: no connection; Redis's confirmations come at once
    (on the next turn of the loop, as they would), unless `confirm` is off."""

    def __init__(self, fanout: Fanout) -> None:
        self._fanout = fanout
        self.confirm = True
        self.subscribed: list[str] = []
        self.unsubscribed: list[str] = []

    async def __aenter__(self) -> FakeSubscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pass

    def subscribe(self, topic: str) -> None:
        self.subscribed.append(topic)
        if self.confirm:
            asyncio.get_running_loop().call_soon(self._fanout.on_subscribed, topic)

    def unsubscribe(self, topic: str) -> None:
        self.unsubscribed.append(topic)


# -- a history whose reads can be held ---------------------------------------------------


@dataclass
class Pause:
    """A read held after Redis answered it: `reached` once it is held, `release()` to go on."""

    topic: str
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    go: asyncio.Event = field(default_factory=asyncio.Event)
    after: StreamId | None = None

    def release(self) -> None:
        self.go.set()

    async def wait_reached(self) -> None:
        await asyncio.wait_for(self.reached.wait(), WAIT_SECONDS)


class PausingHistory(History):
    """A real `History`; `pause_next(topic)` holds the next page read of `topic` after its
    result is in, and `calls` records every `page_after` asked for."""

    def __init__(self, primaries: Primaries, keys: Keys, page_size: int, page_bytes: int) -> None:
        super().__init__(primaries, keys, page_size, page_bytes)
        self._pauses: dict[str, Pause] = {}
        self.calls: list[tuple[str, StreamId, int]] = []

    def pause_next(self, topic: str) -> Pause:
        pause = self._pauses[topic] = Pause(topic)
        return pause

    async def page_after(self, topic: str, after: StreamId, not_before: int = 0) -> Page:
        self.calls.append((topic, after, not_before))
        page = await super().page_after(topic, after, not_before)
        pause = self._pauses.pop(topic, None)
        if pause is not None:
            pause.after = after
            pause.reached.set()
            await pause.go.wait()
        return page


# -- one client's response -------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One SSE message as a browser would parse it (a comment or a bare `retry:` is none)."""

    id: str | None
    event: str
    data: str


def parse_frames(stream: bytes) -> list[Frame]:
    frames = []
    for block in stream.decode("utf-8").split("\n\n"):
        event_id: str | None = None
        event, data = "message", []
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            if name == "id":
                event_id = value
            elif name == "event":
                event = value
            elif name == "data":
                data.append(value)
        if data:
            frames.append(Frame(event_id, event, "\n".join(data)))
    return frames


class Socket:
    """The server side of one streaming response: records each body handed to `send`.

    With `draining` cleared, a `send` does not return until it is set again, as
    uvicorn's does not while the socket's buffer is full. `waits_on` says how it
    waits: "future" as uvicorn does (`await asyncio.Event().wait()`, a Future),
    or "yield" with bare yields of the loop, which `hub.server.run_eagerly` can
    resume (it cannot resume a wait on a Future: see
    test_core_client_connection.py).
    """

    def __init__(self, waits_on: str = "future") -> None:
        self.bodies: list[bytes] = []
        self.finished = False
        self.draining = asyncio.Event()
        self.draining.set()
        self.waits_on = waits_on
        self.waiting = 0
        self.disconnected = asyncio.Event()
        self.fail_with: Exception | None = None

    async def send(self, message: Message) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        assert not self.finished, "a body after the response finished"
        self.bodies.append(message["body"])
        self.finished = not message["more_body"]
        if self.draining.is_set():
            return
        self.waiting += 1
        try:
            if self.waits_on == "future":
                await self.draining.wait()
            else:
                while not self.draining.is_set():  # noqa: ASYNC110 - bare yields, on purpose
                    await asyncio.sleep(0)
        finally:
            self.waiting -= 1

    async def receive(self) -> Message:
        await self.disconnected.wait()
        return {"type": "http.disconnect"}

    @property
    def stream(self) -> bytes:
        return b"".join(self.bodies)


class Client:
    """A `ClientConnection` with a fake socket; its endings recorded (and, given a fan-out,
    the connection detached from it as the gateway does)."""

    def __init__(
        self,
        topics: tuple[str, ...],
        flusher: Flusher,
        limit: int = 1 << 22,
        fanout: Fanout | None = None,
        waits_on: str = "future",
    ) -> None:
        self.socket = Socket(waits_on)
        self.endings: list[Ending] = []
        self._fanout = fanout
        self.connection = ClientConnection(
            topics, [ORIGIN] * len(topics), limit, flusher, self._ended
        )
        self.task: asyncio.Task[None] | None = None

    def _ended(self, connection: ClientConnection, ending: Ending) -> None:
        self.endings.append(ending)
        if self._fanout is not None:
            self._fanout.detach(connection)

    def start(self) -> Client:
        self.task = asyncio.create_task(self.connection.run(self.socket.send, self.socket.receive))
        return self

    @property
    def frames(self) -> list[Frame]:
        return parse_frames(self.socket.stream)

    @property
    def events(self) -> list[tuple[str | None, str]]:
        """(id, data) of every frame of the default type."""
        return [(frame.id, frame.data) for frame in self.frames if frame.event == "message"]

    async def wait_frames(self, count: int) -> list[Frame]:
        await wait_until(lambda: len(self.frames) >= count, lambda: self.frames)
        return self.frames

    async def close(self) -> None:
        self.socket.disconnected.set()
        self.socket.draining.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, WAIT_SECONDS)


# -- the core, assembled ----------------------------------------------------------------------


@dataclass
class Core:
    redis: redis.asyncio.Redis
    keys: Keys
    primaries: FlakyPrimaries
    history: PausingHistory
    fanout: Fanout
    subscription: FakeSubscription
    flusher: Flusher
    writer: Writer
    clients: list[Client] = field(default_factory=list)

    def client(self, *topics: str, limit: int = 1 << 22, waits_on: str = "future") -> Client:
        client = Client(tuple(sorted(topics)), self.flusher, limit, self.fanout, waits_on).start()
        self.clients.append(client)
        return client


@asynccontextmanager
async def core(
    redis_url: str,
    key_prefix: str,
    *,
    page_size: int = 1000,
    page_bytes: int = 262_144,
    redis_timeout: float = 5.0,
) -> AsyncIterator[Core]:
    """A fan-out over the real Redis (history, tails) with a subscription the test drives."""
    keys = Keys(key_prefix)
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        primaries = FlakyPrimaries(topology.from_url(redis_url, redis_timeout), 4, redis_timeout)
        async with primaries:
            history = PausingHistory(primaries, keys, page_size, page_bytes)
            fanout = Fanout(primaries, keys, history, redis_timeout)
            subscription = FakeSubscription(fanout)
            fanout.subscription = cast(Subscription, subscription)
            async with fanout:
                assembled = Core(
                    client,
                    keys,
                    primaries,
                    history,
                    fanout,
                    subscription,
                    fanout.flusher,
                    Writer(client, keys),
                )
                try:
                    yield assembled
                finally:
                    for each in assembled.clients:
                        await each.close()
    finally:
        await client.aclose()
