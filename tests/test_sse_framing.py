"""SSE frames, checked against the WHATWG parsing rules by a parser written from the spec."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub import sse
from hub.events import Event


def parse_stream(raw: bytes) -> list[dict[str, str]]:
    """The event-stream interpretation algorithm, as a browser runs it."""
    text = raw.decode("utf-8")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    events: list[dict[str, str]] = []
    data: list[str] = []
    event_type, last_id = "", ""
    for line in lines:
        if line == "":
            if data:
                events.append(
                    {"id": last_id, "event": event_type or "message", "data": "\n".join(data)}
                )
            data, event_type = [], ""
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "event":
            event_type = value
        elif name == "id" and "\0" not in value:
            last_id = value
    return events


def event(data: str, event_type: str = "") -> Event:
    return Event("news", (1700000000000, 7), (1700000000000, 6), event_type, data)


@pytest.mark.parametrize(
    ("data", "seen"),
    [
        ("plain", "plain"),
        ("two\nlines", "two\nlines"),
        ("windows\r\nbreaks", "windows\nbreaks"),
        ("old mac\rbreak", "old mac\nbreak"),
        ("trailing newline\n", "trailing newline\n"),
        ("  leading spaces kept", "  leading spaces kept"),
        (": not a comment", ": not a comment"),
        ("Grüße, 世界, 🎉", "Grüße, 世界, 🎉"),
    ],
)
def test_data_reaches_the_browser_as_sent_with_line_breaks_normalised(data: str, seen: str) -> None:
    [parsed] = parse_stream(sse.frame_of(event(data)))
    assert parsed == {"id": "1700000000000-7", "event": "message", "data": seen}


def test_empty_data_is_still_an_event() -> None:
    frame = sse.frame_of(event(""))
    assert frame == b"id: 1700000000000-7\ndata: \n\n"
    assert parse_stream(frame) == [{"id": "1700000000000-7", "event": "message", "data": ""}]


def test_event_type_is_sent_only_when_not_the_default() -> None:
    assert b"event:" not in sse.frame_of(event("x"))
    [parsed] = parse_stream(sse.frame_of(event("x", "build.log")))
    assert parsed["event"] == "build.log"


def test_heartbeat_and_comments_are_ignored_by_the_parser() -> None:
    stream = sse.HEARTBEAT + sse.comment("two\nlines") + sse.frame_of(event("x"))
    assert [e["data"] for e in parse_stream(stream)] == ["x"]


def test_retry_hint_is_a_field_without_data() -> None:
    assert sse.retry(2500) == b"retry: 2500\n\n"
    assert parse_stream(sse.retry(2500)) == []


def test_reset_notice_keeps_the_cursor_where_it_was() -> None:
    stream = sse.frame_of(event("x")) + sse.reset_notice("news", (1700000000001, 0))
    first, notice = parse_stream(stream)
    assert notice["event"] == sse.RESET_EVENT_TYPE
    assert notice["id"] == first["id"]
    assert '"first_kept":"1700000000001-0"' in notice["data"]


@given(st.text())
def test_any_text_round_trips(data: str) -> None:
    expected = data.replace("\r\n", "\n").replace("\r", "\n")
    try:
        frame = sse.frame_of(event(data))
    except UnicodeEncodeError:  # lone surrogates are not text; the publisher refuses them
        return
    [parsed] = parse_stream(frame)
    assert parsed["data"] == expected
