"""Which Mercure streams get a released update (hub/mercure/dispatch.py), without a network."""

from __future__ import annotations

from typing import cast

from hub.client_connection import ClientConnection
from hub.fanout import Counters
from hub.mercure.dispatch import Dispatcher, MercureStream
from hub.mercure.matchers import TopicFilter, compile_matcher
from hub.mercure.record import Position, Stored, Update, position

BASE = "https://hub.example/"


class Socket:
    """What a stream's connection was handed."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def push(self, frame: bytes) -> None:
        self.frames.append(frame)


def stream(matchers: list[tuple[str, str]], last: Position, readable: str = "") -> MercureStream:
    selects = TopicFilter([compile_matcher(kind, pattern, BASE) for kind, pattern in matchers])
    reads = TopicFilter([compile_matcher("Exact", readable, BASE)]) if readable else None
    return MercureStream(cast(ClientConnection, Socket()), selects, reads, last)


def update(ms: int, topic: str, private: bool = False) -> Stored:
    pos = position(0, (ms, 0))
    return Stored.read(pos, Update((topic,), f"at {ms}", private).envelope())


def frames(target: MercureStream) -> list[bytes]:
    return cast(Socket, target.client).frames


def test_a_stream_that_resumed_past_this_gateway_is_not_sent_what_it_has() -> None:
    """A stream resumed here from an update another gateway released first: this gateway
    releases the updates up to it after the stream went live, and they are not sent again."""
    dispatcher = Dispatcher(Counters(), lambda ms: None)
    ahead = stream([("Exact", "a")], position(0, (5, 0)))
    pattern = stream([("URLPattern", "/:x")], position(0, (5, 0)))
    for target in (ahead, pattern):
        dispatcher.go_live(target)
    for ms in (3, 5, 7):
        dispatcher.release(update(ms, "a"))
        dispatcher.release(update(ms, BASE + "a"))
    assert frames(ahead) == [update(7, "a").frame]
    assert frames(pattern) == [update(7, BASE + "a").frame]


def test_private_updates_go_only_where_the_token_reads_them() -> None:
    dispatcher = Dispatcher(Counters(), lambda ms: None)
    anonymous = stream([("Exact", "a"), ("Exact", "b")], position(0, (0, 0)))
    reader = stream([("Exact", "a"), ("Exact", "b")], position(0, (0, 0)), readable="b")
    for target in (anonymous, reader):
        dispatcher.go_live(target)
    for ms, topic in ((1, "a"), (2, "b")):
        dispatcher.release(update(ms, topic, private=True))
    assert frames(anonymous) == []
    assert frames(reader) == [update(2, "b", private=True).frame]
