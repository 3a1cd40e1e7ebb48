"""An event as Redis holds it: a stream entry, and the message announcing it.

An event has a topic, an ID (its stream entry ID, `<ms>-<seq>`), the ID of the
entry before it in the same stream, an optional type, and text data. Binary
data travels as an RFC 2397 `data:` URL with base64 (see `binary_data`).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Final

StreamId = tuple[int, int]
"""A stream entry ID as the pair of integers it stands for: IDs compare as pairs."""

ORIGIN: Final[StreamId] = (0, 0)
ID_PART_MAX: Final = 2**64 - 1
"""Redis stores both parts of a stream ID as unsigned 64-bit integers."""
EVENT_TYPE_MAX_LENGTH = 64
_EVENT_TYPE = re.compile(r"[A-Za-z0-9_\-.:/]{1,%d}" % EVENT_TYPE_MAX_LENGTH)
RESERVED_EVENT_TYPES: Final = frozenset({"stream-reset"})
"""Types the hub itself sends; a publisher may not use them (nor any `hub-` type)."""
RESERVED_EVENT_TYPE_PREFIX: Final = "hub-"


class InvalidEvent(ValueError):
    """An event the hub refuses: bad type, data too large, or undecodable."""


class EventTooLarge(InvalidEvent):
    """An event whose data is over the size limit."""


def parse_id(text: str | bytes) -> StreamId:
    """`'1700000000000-3'` -> `(1700000000000, 3)`; ValueError if it is not an ID.

    It takes the bytes of a Redis reply as they are: every event's ID is parsed.
    """
    raw = text.encode() if isinstance(text, str) else text
    ms, dash, seq = raw.partition(b"-")
    # bytes.isdigit() is ASCII only; int() alone would take spaces, signs and underscores.
    if dash and 0 < len(ms) <= 20 and 0 < len(seq) <= 20 and ms.isdigit() and seq.isdigit():
        sid = int(ms), int(seq)
        if sid[0] <= ID_PART_MAX and sid[1] <= ID_PART_MAX:
            return sid
        raise ValueError(f"stream ID {text[:45]!r} is out of range (each part below 2^64)")
    raise ValueError(f"not a stream ID: {text[:40]!r}")


def format_id(sid: StreamId) -> str:
    return f"{sid[0]}-{sid[1]}"


def check_event_type(event_type: str) -> str:
    """Return the type ('' is the default, `message`), or raise `InvalidEvent`."""
    if not event_type:
        return event_type
    if event_type in RESERVED_EVENT_TYPES or event_type.startswith(RESERVED_EVENT_TYPE_PREFIX):
        raise InvalidEvent(
            f"event type {event_type!r} is reserved for the hub's own notices"
            f" (reserved: {', '.join(sorted(RESERVED_EVENT_TYPES))}, {RESERVED_EVENT_TYPE_PREFIX}*)"
        )
    if _EVENT_TYPE.fullmatch(event_type):
        return event_type
    raise InvalidEvent(
        f"event type {event_type[:40]!r} must be 1-{EVENT_TYPE_MAX_LENGTH} characters "
        "from A-Z a-z 0-9 _ - . / :"
    )


def check_data(data: str, max_bytes: int) -> str:
    size = len(data.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise EventTooLarge(f"event data is {size} bytes, over the limit of {max_bytes}")
    try:
        data.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEvent("event data is not valid Unicode text") from None
    return data


@dataclass(slots=True)  # not frozen: a frozen dataclass costs a call per field to make
class Event:
    topic: str
    id: StreamId
    prev: StreamId
    type: str
    data: str

    malformed: str = ""
    """Why the hub cannot deliver this entry ('' for a good event): it keeps its
    place in the topic's order but is never framed."""

    @classmethod
    def from_message(cls, topic: str, message: bytes) -> Event:
        """Parse what the publish script announced; ValueError if it is not such a message."""
        sid, prev, etype, data = message.split(b"\n", 3)
        return cls.checked(topic, parse_id(sid), prev, etype, data)

    @classmethod
    def from_entry(cls, topic: str, sid: bytes, entry: dict[bytes, bytes]) -> Event:
        """Parse one stream entry as `XRANGE` returns it (Redis vouches for its ID)."""
        return cls.checked(
            topic,
            parse_id(sid),
            entry.get(b"p", b"0-0"),
            entry.get(b"t", b""),
            entry.get(b"d", b""),
        )

    @classmethod
    def checked(cls, topic: str, sid: StreamId, prev: bytes, etype: bytes, data: bytes) -> Event:
        """An event from raw fields, validated as a publish would; a bad one is `malformed`.

        Anyone with write access to Redis can put anything in a stream: an
        entry must never break the framing (a type with a newline would forge
        `id:` lines) nor stop the topic's delivery.
        """
        try:
            prev_id = parse_id(prev)
        except ValueError:
            return cls(topic, sid, ORIGIN, "", "", "its previous-entry field is not a stream ID")
        try:
            event_type = check_event_type(etype.decode("utf-8"))
            text = data.decode("utf-8")
        except (UnicodeDecodeError, InvalidEvent) as exc:
            reason = "its fields are not UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc)
            return cls(topic, sid, prev_id, "", "", reason)
        return cls(topic, sid, prev_id, event_type, text)


BINARY_MEDIA_TYPE = "application/octet-stream"
_DATA_URL = re.compile(r"data:([^,;]*)((?:;[^,;=]+=[^,;]*)*);base64,([A-Za-z0-9+/=]*)", re.S)


def binary_data(payload: bytes, media_type: str = BINARY_MEDIA_TYPE, name: str = "") -> str:
    """Binary payload as event data: `data:<type>[;name=<name>];base64,<payload>`.

    A `data:` URL is something a browser can download or show as it is, and
    `decode_binary` gives the exact bytes back.
    """
    params = f";name={_quote_param(name)}" if name else ""
    return f"data:{media_type or BINARY_MEDIA_TYPE}{params};base64," + base64.b64encode(
        payload
    ).decode("ascii")


def decode_binary(data: str) -> bytes | None:
    """The bytes of a binary event's data, or None when the data is plain text."""
    match = _DATA_URL.fullmatch(data)
    if match is None:
        return None
    return base64.b64decode(match[3], validate=True)


def _quote_param(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")
