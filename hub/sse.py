"""The Server-Sent Events wire format (WHATWG HTML, "Server-sent events").

Frames are built once per event per process, as bytes, and the same bytes go
to every client of the event's topic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hub.events import Event, StreamId, format_id

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
HEARTBEAT = b":\n\n"
RESET_EVENT_TYPE = "stream-reset"
"""The event sent when a client's cursor is older than the history that is left."""


def event_body(event_type: str, data: str) -> bytes:
    """The `event:` and `data:` lines of a frame and its closing blank line.

    Every line break in the data (`\\r\\n`, `\\r` or `\\n`) starts a new `data:`
    line, which the browser joins back with `\\n`.
    """
    head = f"event: {event_type}\n" if event_type else ""
    if "\n" not in data and "\r" not in data:  # most events: one line, no splitting
        return f"{head}data: {data}\n\n".encode()
    lines = _LINE_BREAK.split(data)
    return (head + "".join(f"data: {line}\n" for line in lines) + "\n").encode()


@dataclass(slots=True)  # not frozen: see `Event`
class Framed:
    """An event with its wire bytes, built once and shared by every client.

    `frame` is the whole frame with the stream ID as `id` (what a one-topic
    connection sends); `body` is the frame without its `id:` line, for
    connections whose cursor is a composite. A malformed event has neither: it
    holds its place in the topic's order and sends nothing.
    """

    event: Event
    body: bytes
    frame: bytes

    @classmethod
    def of(cls, event: Event) -> Framed:
        if event.malformed:
            return cls(event, b"", b"")
        body = event_body(event.type, event.data)
        return cls(event, body, b"id: %d-%d\n%b" % (*event.id, body))


def frame_of(event: Event) -> bytes:
    """The frame of an event on a one-topic connection."""
    return Framed.of(event).frame


def retry(ms: int) -> bytes:
    return f"retry: {ms}\n\n".encode("ascii")


def comment(text: str) -> bytes:
    return "".join(f": {line}\n" for line in _LINE_BREAK.split(text)).encode("utf-8") + b"\n"


def reset_notice(topic: str, first_kept: StreamId | None) -> bytes:
    """The in-band notice that events after a client's cursor are gone.

    It carries no `id`, so the browser's cursor stays where it was until the
    next real event.
    """
    kept = format_id(first_kept) if first_kept else ""
    data = f'{{"topic":"{topic}","reason":"history-truncated","first_kept":"{kept}"}}'
    return event_body(RESET_EVENT_TYPE, data)
