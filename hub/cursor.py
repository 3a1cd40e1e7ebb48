"""The cursor a client resumes from: the `id` of the last event it saw.

On a connection to one topic the cursor is the event's stream ID, unchanged.
On a connection to several topics it must hold a position in every topic,
so it is a composite, short and opaque: the largest millisecond part in base
36, then per topic (in the order of `canonical_topics`) how far its position is
behind that, and its sequence number when not 0:

    m3xk2a1c.0.4f-2.0      (three topics)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from hub.events import ID_PART_MAX, StreamId, format_id, parse_id

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
MAX_CURSOR_LENGTH = 4096


class InvalidCursor(ValueError):
    """A `Last-Event-ID` or `last_event_id` this hub did not issue."""


def canonical_topics(topics: Iterable[str]) -> tuple[str, ...]:
    """Topics in the order a cursor lists them: sorted, each once."""
    return tuple(sorted(set(topics)))


def encode(positions: Sequence[StreamId]) -> str:
    if len(positions) == 1:
        return format_id(positions[0])
    base = max(ms for ms, _ in positions)
    parts = [_b36(base)]
    for ms, seq in positions:
        parts.append(_b36(base - ms) + (f"-{_b36(seq)}" if seq else ""))
    return ".".join(parts)


def decode(cursor: str, topic_count: int) -> list[StreamId]:
    """Positions, one per topic, or `InvalidCursor` saying what is wrong."""
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidCursor("cursor is too long")
    if topic_count == 1:
        try:
            return [parse_id(cursor)]
        except ValueError as exc:
            raise InvalidCursor(
                f"bad cursor: {exc}; expected a stream ID like 1700000000000-0"
            ) from None
    parts = cursor.split(".")
    if len(parts) != topic_count + 1:
        raise InvalidCursor(
            f"cursor {cursor[:40]!r} does not hold a position for each of {topic_count} topics"
        )
    try:
        base = _int36(parts[0])
        positions = []
        for part in parts[1:]:
            delta, _, seq = part.partition("-")
            ms, sequence = base - _int36(delta), _int36(seq) if seq else 0
            if not (0 <= ms <= ID_PART_MAX and sequence <= ID_PART_MAX):
                raise ValueError
            positions.append((ms, sequence))
    except ValueError:
        raise InvalidCursor(f"cursor {cursor[:40]!r} is malformed") from None
    return positions


def _b36(number: int) -> str:
    if number == 0:
        return "0"
    digits = []
    while number:
        number, rest = divmod(number, 36)
        digits.append(_DIGITS[rest])
    return "".join(reversed(digits))


def _int36(text: str) -> int:
    if not text or len(text) > 14 or any(ch not in _DIGITS for ch in text):
        raise ValueError(text)
    return int(text, 36)
