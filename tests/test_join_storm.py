"""A storm of clients joining at once, each on a topic of its own (a gateway restart, a
morning login wave): every one streams, and none loses or repeats an event.

The clients are raw sockets opened all at once, so the gateway sees them arrive
together, as it would behind a load balancer that just lost a gateway.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from processes import Gateways
from sse_client import publisher

pytestmark = pytest.mark.anyio

CLIENTS = 600
MISSED = 3


@dataclass
class RawStream:
    """One `GET /events` on its own socket; the events' data as they arrive."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    status: int = 0
    data: list[str] = field(default_factory=list)
    _text: str = ""

    @classmethod
    async def open(cls, port: int, topic: str, cursor: str = "") -> RawStream:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        resume = f"Last-Event-ID: {cursor}\r\n" if cursor else ""
        writer.write(f"GET /events?topic={topic} HTTP/1.1\r\nHost: hub\r\n{resume}\r\n".encode())
        return cls(reader, writer)

    async def read_headers(self) -> None:
        head = await self.reader.readuntil(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1])
        assert b"transfer-encoding: chunked" in head.lower()

    async def read_events(self, count: int) -> None:
        while len(self.data) < count:
            size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await self.reader.readexactly(size + 2)
            self._text += chunk[:-2].decode()
            *frames, self._text = self._text.split("\n\n")
            self.data += [
                line.removeprefix("data: ")
                for frame in frames
                for line in frame.split("\n")
                if line.startswith("data: ")
            ]

    def close(self) -> None:
        self.writer.close()


async def test_a_storm_of_clients_on_distinct_topics_streams_every_event_once(
    gateway: Gateways, redis_url: str, key_prefix: str
) -> None:
    hub = gateway()
    topics = [f"user/{n}/inbox" for n in range(CLIENTS)]
    async with publisher(redis_url, key_prefix) as pub:
        # Every other client resumes: it saw its topic's first event, then missed some.
        cursors = {topic: await pub.publish(topic, "seen") for topic in topics[1::2]}
        for n in range(MISSED):
            await asyncio.gather(*(pub.publish(topic, f"missed {n}") for topic in cursors))

        streams = await asyncio.gather(
            *(RawStream.open(hub.port, topic, cursors.get(topic, "")) for topic in topics)
        )
        try:
            await asyncio.wait_for(
                asyncio.gather(*(stream.read_headers() for stream in streams)), 60
            )
            assert {stream.status for stream in streams} == {200}
            await asyncio.gather(*(pub.publish(topic, f"live on {topic}") for topic in topics))
            expected = {
                topic: ([f"missed {n}" for n in range(MISSED)] if topic in cursors else [])
                + [f"live on {topic}"]
                for topic in topics
            }
            await asyncio.wait_for(
                asyncio.gather(
                    *(
                        stream.read_events(len(expected[topic]))
                        for topic, stream in zip(topics, streams, strict=True)
                    )
                ),
                60,
            )
            # Anything repeated would come before the end.
            await asyncio.gather(*(pub.publish(topic, "end") for topic in topics))
            await asyncio.wait_for(
                asyncio.gather(
                    *(
                        stream.read_events(len(expected[topic]) + 1)
                        for topic, stream in zip(topics, streams, strict=True)
                    )
                ),
                60,
            )
        finally:
            for stream in streams:
                stream.close()
    wrong = [
        (topic, stream.data)
        for topic, stream in zip(topics, streams, strict=True)
        if stream.data != [*expected[topic], "end"]
    ]
    assert not wrong, f"{len(wrong)} of {CLIENTS} streams got something else, e.g. {wrong[:2]}"
