"""A test's view of the hub from outside: SSE clients (httpx-sse) and a publisher."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, fields

import httpx
import pytest
import redis
from httpx_sse import aconnect_sse
from processes import WaitTimeout, wait_until_async

from hub.config import Settings
from hub.events import parse_id
from hub.topics import Keys
from publisher import AsyncPublisher

TLS = ssl.create_default_context()
"""The one TLS context of every test client. The tests speak plain HTTP to 127.0.0.1, but
an httpx client builds a context (loading the CA bundle, about 25 ms of CPU that holds
the event loop) unless it is given one: clients that reconnect often would spend their
time there."""


def _recent(events: Sequence[Received], count: int = 3) -> str:
    return ", ".join(f"{e.id} {e.event} {e.data[:40]!r}" for e in events[-count:]) or "none"


@dataclass
class Received:
    id: str
    event: str
    data: str


@dataclass
class Listener:
    """One SSE connection that records every event it receives, in order."""

    base_url: str
    topics: Sequence[str]
    last_event_id: str = ""
    use_query: bool = False
    events: list[Received] = field(default_factory=list)
    headers: httpx.Headers | None = None
    path: str = "/events"
    query: Sequence[tuple[str, str]] | None = None
    """The query in full, instead of `topic=` per topic (a Mercure subscription's matchers)."""
    request_headers: Mapping[str, str] = field(default_factory=dict)
    cookies: Mapping[str, str] = field(default_factory=dict)
    status: int | None = None
    ended: bool = False
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> Listener:
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        params = _query(self.topics, self.query)
        headers = dict(self.request_headers)
        if self.last_event_id and self.use_query:
            params.append(("last_event_id", self.last_event_id))
        elif self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        timeout = httpx.Timeout(10.0, read=None)
        async with httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, verify=TLS, cookies=dict(self.cookies)
        ) as client:
            async with aconnect_sse(
                client, "GET", self.path, params=params, headers=headers
            ) as source:
                self.status = source.response.status_code
                self.headers = source.response.headers
                self.connected.set()
                if self.status != 200:
                    return
                async for sse in source.aiter_sse():
                    if not sse.data:
                        # httpx-sse also yields a blank line after a comment or a bare
                        # `retry:` as an event (a browser dispatches none); the tests
                        # publish no empty data, so these are skipped.
                        continue
                    self.events.append(Received(sse.id, sse.event, sse.data))
        self.ended = True

    @property
    def data(self) -> list[str]:
        return [event.data for event in self.events if event.event == "message"]

    @property
    def cursor(self) -> str:
        return self.events[-1].id if self.events else self.last_event_id

    def __str__(self) -> str:
        return f"listener of {list(self.topics)} at {self.base_url}"

    async def wait_connected(self, within: float = 10.0) -> None:
        try:
            await asyncio.wait_for(self.connected.wait(), within)
        except TimeoutError:
            raise WaitTimeout(f"{self}: no response to GET /events within {within:g} s") from None

    async def wait_for(self, count: int, within: float = 20.0, any_type: bool = False) -> None:
        """Until `count` events of the default type (or of any type) came, or the stream ended."""

        def arrived() -> bool:
            if self._task is not None and self._task.done():
                self._task.result()  # the stream failed: its error, not a timeout
                return True
            return self.ended or len(self.events if any_type else self.data) >= count

        await wait_until_async(
            arrived,
            within,
            f"{count} {'events' if any_type else 'message events'} at the {self}",
            observe=lambda: (
                f"{len(self.events)} events (status {self.status}), "
                f"the last: {_recent(self.events)}"
            ),
            interval=0.01,
        )

    async def wait_ended(self, within: float = 20.0) -> None:
        assert self._task is not None, "wait_ended() before start()"
        await asyncio.wait_for(asyncio.shield(self._task), within)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await self._task


def _query(topics: Sequence[str], query: Sequence[tuple[str, str]] | None) -> list[tuple[str, str]]:
    return list(query) if query is not None else [("topic", topic) for topic in topics]


@contextlib.asynccontextmanager
async def listening(
    base_url: str, topics: Sequence[str], count: int = 1, last_event_id: str = ""
) -> AsyncIterator[list[Listener]]:
    """`count` connected listeners, closed on exit."""
    listeners = [Listener(base_url, topics, last_event_id).start() for _ in range(count)]
    try:
        for listener in listeners:
            await listener.wait_connected()
        yield listeners
    finally:
        for listener in listeners:
            await listener.close()


@contextlib.asynccontextmanager
async def publisher(
    redis_url: str, key_prefix: str, **settings: object
) -> AsyncIterator[AsyncPublisher]:
    hub = AsyncPublisher(Settings(redis_url=redis_url, key_prefix=key_prefix, **settings))  # type: ignore[arg-type]
    try:
        yield hub
    finally:
        await hub.aclose()


@dataclass
class ReconnectingListener:
    """A client that behaves like a browser's EventSource.

    When its stream ends or breaks it waits the `retry:` delay the hub sent
    last, then reconnects with `Last-Event-ID` set to the last ID it saw.
    """

    base_url: str
    topics: Sequence[str]
    last_event_id: str = ""
    events: list[Received] = field(default_factory=list)
    connections: int = 0
    refusals: int = 0
    """Responses other than 200 (nginx's 502 when it has no gateway to offer, for example).
    This client tries again after them; a browser's EventSource would give up for good."""
    retry_ms: int = 3000
    path: str = "/events"
    query: Sequence[tuple[str, str]] | None = None
    request_headers: Mapping[str, str] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None

    def start(self) -> ReconnectingListener:
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        params = _query(self.topics, self.query)
        timeout = httpx.Timeout(5.0, read=30.0)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=timeout, verify=TLS) as client:
            while True:
                headers = dict(self.request_headers)
                if self.last_event_id:
                    headers["Last-Event-ID"] = self.last_event_id
                try:
                    async with aconnect_sse(
                        client, "GET", self.path, params=params, headers=headers
                    ) as source:
                        if source.response.status_code != 200:
                            self.refusals += 1
                        else:
                            self.connections += 1
                            async for sse in source.aiter_sse():
                                if sse.retry is not None:
                                    self.retry_ms = sse.retry
                                if sse.data:
                                    self.events.append(Received(sse.id, sse.event, sse.data))
                                    self.last_event_id = sse.id
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(self.retry_ms / 1000)

    @property
    def data(self) -> list[str]:
        return [event.data for event in self.events if event.event == "message"]

    def __str__(self) -> str:
        return f"reconnecting client of {list(self.topics)} at {self.base_url}"

    async def wait_for(self, count: int, within: float = 30.0) -> None:
        await wait_until_async(
            lambda: len(self.data) >= count,
            within,
            f"{count} events at the {self}",
            observe=lambda: (
                f"{len(self.data)} events over {self.connections} connections, "
                f"the last: {_recent(self.events)}"
            ),
            interval=0.02,
        )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def connected(
    clients: list[ReconnectingListener], within: float = 20.0
) -> list[ReconnectingListener]:
    """`clients`, once every one of them has its stream open."""
    await wait_until_async(
        lambda: all(client.connections for client in clients),
        within,
        f"all {len(clients)} clients to open their stream",
        observe=lambda: (
            f"{sum(1 for c in clients if not c.connections)} have none, e.g. "
            + ", ".join(str(c) for c in clients if not c.connections)[:300]
        ),
    )
    return clients


# -- counting what arrived against what was published -----------------------------------


@dataclass(frozen=True)
class Tally:
    """What clients received against what was acknowledged, summed over clients and topics."""

    expected: int = 0
    received: int = 0
    """Distinct acknowledged events that arrived."""
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    """Streams (one client, one topic) whose events arrived in another order."""
    unacknowledged: int = 0
    """Events delivered although their publish failed (the write happened, its answer did not)."""
    first_missing: str | None = None

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.out_of_order == 0

    def __add__(self, other: Tally) -> Tally:
        sums = {
            f.name: getattr(self, f.name) + getattr(other, f.name)
            for f in fields(self)
            if f.name != "first_missing"
        }
        return Tally(**sums, first_missing=self.first_missing or other.first_missing)

    def __str__(self) -> str:
        missing = f" (first missing: {self.first_missing!r})" if self.first_missing else ""
        return (
            f"received {self.received} of {self.expected}{missing}, lost={self.lost} "
            f"duplicated={self.duplicated} out_of_order={self.out_of_order} "
            f"delivered_unacknowledged={self.unacknowledged}"
        )


def count_events(expected: Sequence[str], received: Sequence[str]) -> Tally:
    """One stream's count: what it `received`, in order, against what was `expected` in order.

    Received events that were not expected (their publish failed) are counted as
    unacknowledged, not as errors; a repeat of any event is a duplicate.
    """
    seen = set(received)
    wanted = set(expected)
    missing = [item for item in expected if item not in seen]
    distinct = list(dict.fromkeys(received))
    in_order = [item for item in distinct if item in wanted] == [
        item for item in expected if item in seen
    ]
    return Tally(
        expected=len(expected),
        received=len(expected) - len(missing),
        lost=len(missing),
        duplicated=len(received) - len(seen),
        out_of_order=0 if in_order else 1,
        unacknowledged=sum(1 for item in distinct if item not in wanted),
        first_missing=missing[0] if missing else None,
    )


SETTLED = "settled"


def topic_of(data: str) -> str:
    """The topic of an event these tests publish: its data is `<topic>#<n>`."""
    return data.rpartition("#")[0]


def tally(client: ReconnectingListener, acknowledged: Mapping[str, Sequence[str]]) -> Tally:
    """What one client (of one or several topics) got against what was acknowledged per topic."""
    total = Tally()
    for topic in client.topics:
        received = [d for d in client.data if topic_of(d) == topic and d != settled_marker(topic)]
        total += count_events(acknowledged[topic], received)
    return total


async def settle_and_count(
    clients: Sequence[ReconnectingListener],
    acknowledged: Mapping[str, Sequence[str]],
    label: str,
    capsys: pytest.CaptureFixture[str],
    *,
    redis_url: str,
    key_prefix: str,
    refused: int = 0,
    errors: Sequence[str] = (),
    within: float = 60.0,
) -> Tally:
    """Wait until every client has everything, then report the counts and check them.

    Once publishing is over, a last event (`<topic>#settled`) is published on each topic;
    a client that has it for all its topics has been sent everything before it, in
    order, so anything repeated or missing shows by then: no grace period is needed.
    The clients are closed; fails unless nothing was lost, repeated or reordered.
    """
    async with publisher(redis_url, key_prefix) as pub:
        for topic in acknowledged:
            await pub.publish(topic, settled_marker(topic))
    return await count_settled(
        clients, acknowledged, label, capsys, refused=refused, errors=errors, within=within
    )


def settled_marker(topic: str) -> str:
    """The last event published on `topic` once its run is over (see settle_and_count)."""
    return f"{topic}#{SETTLED}"


async def count_settled(
    clients: Sequence[ReconnectingListener],
    acknowledged: Mapping[str, Sequence[str]],
    label: str,
    capsys: pytest.CaptureFixture[str],
    *,
    refused: int = 0,
    errors: Sequence[str] = (),
    within: float = 60.0,
) -> Tally:
    """settle_and_count, once each topic's settled_marker was published by other means."""

    def settled(client: ReconnectingListener) -> bool:
        return all(settled_marker(topic) in client.data for topic in client.topics)

    with contextlib.suppress(WaitTimeout):  # what is missing is counted below
        await wait_until_async(
            lambda: all(settled(c) for c in clients), within, "every client settled"
        )
    tallies = [tally(client, acknowledged) for client in clients]
    reconnects = sum(client.connections - 1 for client in clients)
    refusals = sum(client.refusals for client in clients)
    for client in clients:
        await client.close()
    total = sum(tallies, Tally())
    with capsys.disabled():
        print(
            f"\n[{label}] {len(clients)} clients, {sum(len(e) for e in acknowledged.values())} "
            f"acknowledged events over {len(acknowledged)} topics, {refused} publishes refused "
            f"({', '.join(sorted(errors)) or 'none'}): {total}, reconnects={reconnects}, "
            f"responses_not_200={refusals}"
        )
    failing = [f"{client}: {t}" for client, t in zip(clients, tallies, strict=True) if not t.ok]
    assert total.ok, (
        f"[{label}] {len(failing)} clients missed, repeated or reordered events: "
        + "; ".join(failing[:5])
    )
    return total


def metric(text: str, name: str) -> float:
    """One sample's value from a Prometheus text page (`/metrics`)."""
    return float(
        next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " "))
    )


def stream_entries(redis_url: str, key_prefix: str, topic: str) -> list[tuple[str, str, str]]:
    """(id, type, data) of each entry of `topic`'s stream, oldest first: what Redis holds."""
    with redis.Redis.from_url(redis_url) as client:
        entries = client.xrange(Keys(key_prefix).stream(topic))
    return [(i.decode(), f[b"t"].decode(), f[b"d"].decode()) for i, f in entries]


def ids_increase(ids: Sequence[str]) -> bool:
    return all(parse_id(a) < parse_id(b) for a, b in itertools.pairwise(ids))
