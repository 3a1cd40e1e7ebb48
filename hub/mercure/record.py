"""How a Mercure update is kept: partitions of streams, and IDs that are cursors.

Mercure treats update IDs as cursors into one hub-wide sequence, yet a
subscriber with a URL pattern has no fixed list of topics, and one stream for
every update would put the whole hub's writes on one Redis server. So updates
are spread over `HUB_MERCURE_PARTITIONS` streams by their canonical topic (one
topic's updates stay in order in one partition), each an internal topic of the
native hub (`mercure <n>`: the space keeps it out of any client's reach), and
the hub-wide order is defined over them:

    position = (ms, seq, partition)      for the entry <ms>-<seq> of partition n

A partition's entry IDs are the clock of the Redis server that wrote them, in
microseconds (`<ms>-<µs within the ms × 1000>`, see the publish script), so on
one server this order is the order the updates were written in, and across
servers it follows time; `hub/mercure/sequencer.py` delivers updates in it and
nowhere else, which is what makes any update's ID an exact resume point.

An update the hub names gets the ID `#<partition>:<ms>-<seq>`, a relative IRI
made of a fragment, as the spec allows; a publisher's own IDs may not start with
`#`, so the two never collide. A publisher's own ID is also written, by the same
script call, as a key beside its partition's stream that holds the entry's
stream ID, so it resumes exactly too.

Each entry's data is one line of JSON (topics, privacy, ID, type, retry) and
then the update's data.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any, Final

from hub import sse
from hub.events import ID_PART_MAX, StreamId, parse_id

Position = tuple[int, int, int]
"""An update's place in the hub-wide order: (ms, seq, partition)."""
BEFORE_ALL: Final[Position] = (0, 0, -1)
EARLIEST: Final = "earliest"
"""The reserved `Last-Event-ID` that asks for every update the hub still has."""
PARTITION_PREFIX: Final = "mercure "


class InvalidUpdate(ValueError):
    """A published update the hub refuses (400), or an entry it cannot read."""


def partition_topic(partition: int) -> str:
    return f"{PARTITION_PREFIX}{partition}"


def partition_of(topic: str, partitions: int) -> int:
    """The partition of a canonical topic: the same in every process (CRC-32, not `hash`)."""
    return zlib.crc32(topic.encode("utf-8", "surrogatepass")) % partitions


def position(partition: int, sid: StreamId) -> Position:
    return (sid[0], sid[1], partition)


def mark(ms: int, partitions: int) -> Position:
    """The place after every update up to millisecond `ms`, before any later one."""
    return (ms, ID_PART_MAX, partitions)


def hub_id(pos: Position) -> str:
    return f"#{pos[2]}:{pos[0]}-{pos[1]}"


def parse_hub_id(text: str, partitions: int) -> Position | None:
    """The position a hub-made ID names; None if `text` is not one (a publisher's ID).

    Partition number `partitions` (one past the last) names a mark between updates,
    not an update: the place the sequencer had reached (the subscriptions API's
    `lastEventID`, a fresh stream's start).
    """
    if not text.startswith("#"):
        return None
    part, colon, sid = text[1:].partition(":")
    if not (colon and part.isascii() and part.isdigit() and len(part) <= 6):
        return None
    try:
        ms, seq = parse_id(sid)
    except ValueError:
        return None
    partition = int(part)
    return (ms, seq, partition) if partition <= partitions else None


def after_in_partition(cursor: Position, partition: int) -> StreamId | None:
    """The stream ID after which `partition` holds the updates that follow `cursor`.

    None means from the start of the stream.
    """
    ms, seq, cursor_partition = cursor
    if partition <= cursor_partition:
        return (ms, seq)
    # A partition numbered higher may hold an entry of the very same ID: it comes after.
    if seq:
        return (ms, seq - 1)
    return (ms - 1, ID_PART_MAX) if ms else None


@dataclass(slots=True)
class Update:
    """A Mercure update: what a publisher sends, and what subscribers receive."""

    topics: tuple[str, ...]
    """The canonical topic first, then its alternates (the older dialect)."""
    data: str
    private: bool = False
    id: str = ""
    """The publisher's own ID, or '' for one the hub makes from the update's position."""
    type: str = ""
    retry: int | None = None

    def envelope(self) -> str:
        """The data of the update's stream entry."""
        head: dict[str, Any] = {"t": list(self.topics)}
        if self.private:
            head["p"] = 1
        if self.id:
            head["i"] = self.id
        if self.type:
            head["e"] = self.type
        if self.retry is not None:
            head["r"] = self.retry
        return json.dumps(head, ensure_ascii=False, separators=(",", ":")) + "\n" + self.data


@dataclass(slots=True)
class Stored:
    """An update as read back from its partition: its place in the order, and its frame."""

    position: Position
    update: Update
    frame: bytes

    @property
    def id(self) -> str:
        return self.update.id or hub_id(self.position)

    @classmethod
    def read(cls, pos: Position, envelope: str) -> Stored:
        """The update an entry holds; `InvalidUpdate` for an entry no publish wrote."""
        head_text, newline, data = envelope.partition("\n")
        try:
            head = json.loads(head_text) if newline else None
        except ValueError:
            head = None
        if not isinstance(head, dict):
            raise InvalidUpdate("not a Mercure update")
        topics, update_id, event_type, retry = (
            head.get("t"),
            head.get("i", ""),
            head.get("e", ""),
            head.get("r"),
        )
        if (
            not isinstance(topics, list)
            or not topics
            or not all(isinstance(topic, str) for topic in topics)
            or not isinstance(update_id, str)
            or not isinstance(event_type, str)
            or not (retry is None or (isinstance(retry, int) and retry >= 0))
            or _breaks_a_line(update_id)
            or _breaks_a_line(event_type)
        ):
            raise InvalidUpdate("a Mercure entry with malformed fields")
        update = Update(tuple(topics), data, bool(head.get("p")), update_id, event_type, retry)
        stored = cls(pos, update, b"")
        stored.frame = _frame(stored.id, update)
        return stored


def _breaks_a_line(text: str) -> bool:
    return "\n" in text or "\r" in text or "\0" in text


def _frame(update_id: str, update: Update) -> bytes:
    head = b"id: " + update_id.encode() + b"\n"
    if update.retry is not None:
        head += b"retry: %d\n" % update.retry
    return head + sse.event_body(update.type, update.data)
