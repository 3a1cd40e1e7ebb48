"""Resume cursors: one topic's is its stream ID; several topics' a short composite."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub import cursor
from hub.events import parse_id

stream_ids = st.tuples(st.integers(0, 2**48), st.integers(0, 2**32))


def test_a_single_topic_cursor_is_the_stream_id() -> None:
    assert cursor.encode([(1700000000000, 3)]) == "1700000000000-3"
    assert cursor.decode("1700000000000-3", 1) == [(1700000000000, 3)]


def test_a_composite_cursor_is_short() -> None:
    positions = [(1732470000000 + i * 7, i % 3) for i in range(8)]
    encoded = cursor.encode(positions)
    assert len(encoded) < 16 * 2 + 8 * 4
    assert cursor.decode(encoded, 8) == positions


@given(st.lists(stream_ids, min_size=1, max_size=32))
def test_cursors_round_trip(positions: list[tuple[int, int]]) -> None:
    assert cursor.decode(cursor.encode(positions), len(positions)) == positions


@pytest.mark.parametrize(
    ("text", "topics", "reason"),
    [
        ("abc", 1, "not a stream ID"),
        ("1-2-3", 1, "not a stream ID"),
        ("mwv0an9p.0", 2, "does not hold a position for each of 2 topics"),
        ("mwv0an9p.0.zzzzzzzzzzzzzzz", 2, "malformed"),
        ("0.5.0", 2, "malformed"),
        ("MWV.0.0", 2, "malformed"),
        ("x" * 5000, 2, "too long"),
    ],
)
def test_malformed_cursors_are_refused_with_a_reason(text: str, topics: int, reason: str) -> None:
    with pytest.raises(cursor.InvalidCursor, match=reason):
        cursor.decode(text, topics)


@given(st.text(max_size=60), st.integers(1, 4))
def test_decoding_never_fails_other_than_by_refusing(text: str, topics: int) -> None:
    try:
        positions = cursor.decode(text, topics)
    except cursor.InvalidCursor:
        return
    assert len(positions) == topics


def test_stream_ids_compare_as_number_pairs_not_strings() -> None:
    assert parse_id("9-0") < parse_id("10-0")
    assert "9-0" > "10-0"


def test_topics_are_listed_sorted_and_once() -> None:
    assert cursor.canonical_topics(["b", "a", "b"]) == ("a", "b")
