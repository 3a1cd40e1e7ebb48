"""How Mercure updates are kept: partitions, positions, IDs and the entries' envelope."""

from __future__ import annotations

import random
from urllib.parse import parse_qsl, urlencode

import pytest
import redis.asyncio

from hub.config import Settings
from hub.events import ID_PART_MAX, parse_id
from hub.mercure.publish import form_fields
from hub.mercure.record import (
    BEFORE_ALL,
    InvalidUpdate,
    Stored,
    Update,
    after_in_partition,
    hub_id,
    mark,
    parse_hub_id,
    partition_of,
    partition_topic,
    position,
)
from hub.primaries import Primaries
from hub.publish import EventWriter
from hub.topology import from_url

pytestmark = pytest.mark.anyio


def test_a_topic_has_one_partition_in_every_process() -> None:
    # CRC-32, not Python's salted hash(): every gateway and publisher agrees.
    assert partition_of("https://example.com/books/1", 16) == 11
    assert {partition_of(f"t{n}", 16) for n in range(200)} == set(range(16))


def test_hub_ids_name_positions_and_never_look_like_a_publishers_id() -> None:
    pos = position(3, (1_700_000_000_000, 5000))
    assert hub_id(pos) == "#3:1700000000000-5000"
    assert parse_hub_id(hub_id(pos), 16) == pos
    assert parse_hub_id(hub_id(mark(17, 16)), 16) == mark(17, 16), "marks between updates too"
    for text in ("urn:uuid:1", "#", "#x:1-1", "#3:1", "#99:1-1", "#3:1-1-1", "#-1:1-1"):
        assert parse_hub_id(text, 16) is None, text


def test_a_cursor_splits_into_exact_per_partition_starts() -> None:
    """Whatever the cursor, the updates after it are exactly those each partition holds
    after its own start: the property every resume rests on."""
    rng = random.Random(7)
    partitions = 4
    entries = {
        p: sorted({(rng.randint(0, 6), rng.randint(0, 3)) for _ in range(12)})
        for p in range(partitions)
    }
    everything = sorted(position(p, sid) for p, sids in entries.items() for sid in sids)
    cursors = [BEFORE_ALL, mark(3, partitions), *everything]
    for cursor in cursors:
        expected = [pos for pos in everything if pos > cursor]
        found = []
        for p, sids in entries.items():
            start = after_in_partition(cursor, p)
            found += [position(p, sid) for sid in sids if start is None or sid > start]
        assert sorted(found) == expected, cursor
    assert after_in_partition(position(0, (5, 0)), 1) == (4, ID_PART_MAX)
    assert after_in_partition(position(0, (0, 0)), 1) is None


def test_an_update_survives_its_envelope() -> None:
    update = Update(("https://a/1", "https://a/1.json"), "x\ny", True, "urn:1", "t e", 10)
    stored = Stored.read(position(1, (5, 0)), update.envelope())
    assert stored.update == update and stored.id == "urn:1"
    assert stored.frame == b"id: urn:1\nretry: 10\nevent: t e\ndata: x\ndata: y\n\n"
    plain = Stored.read(position(2, (5, 7)), Update(("t",), "d").envelope())
    assert plain.id == "#2:5-7" and plain.frame == b"id: #2:5-7\ndata: d\n\n"


@pytest.mark.parametrize(
    "envelope",
    ["no header", '{"t": []}\nx', '{"t": ["a"], "i": "a\\nb"}\nx', '{"t": ["a"], "r": -1}\nx',
     '[1]\nx', '{"t": ["a"], "e": "x\\ry"}\nd'],
)  # fmt: skip
def test_entries_no_publish_wrote_are_refused(envelope: str) -> None:
    with pytest.raises(InvalidUpdate):
        Stored.read(position(0, (1, 0)), envelope)


async def test_partition_ids_follow_the_order_updates_are_written_in(
    redis_url: str, key_prefix: str
) -> None:
    """On one server, the IDs of updates written one after the other, to any partitions,
    sort in that order: a publisher's updates reach every subscriber as it sent them."""
    settings = Settings(redis_url=redis_url, key_prefix=key_prefix)
    async with Primaries(from_url(redis_url, 5.0), 2, 5.0) as primaries:
        writer = EventWriter(settings, primaries)
        written = []
        for n in range(200):
            partition = n % 5
            call = writer.prepare_internal(partition_topic(partition), f"{n}", "", 0)
            [outcome] = await writer.write([call])
            assert isinstance(outcome, str)
            written.append(position(partition, parse_id(outcome)))
        assert written == sorted(written)
        alias = writer.prepare_internal(partition_topic(0), "aliased", "urn:mine", 60_000)
        [outcome] = await writer.write([alias])
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        stream_key = f"{key_prefix}stream:{{{partition_topic(0)}}}"
        assert await client.get(f"{stream_key}:id:urn:mine") == str(outcome).encode()
        assert 0 < await client.pttl(f"{stream_key}:id:urn:mine") <= 60_000
    finally:
        await client.aclose()


def test_a_publish_form_reads_as_parse_qsl_reads_it() -> None:
    rng = random.Random(3)
    alphabet = "ab=&%+ é☕\n/:?#"

    def text(longest: int) -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, longest)))

    for _ in range(5000):
        pairs = [(text(5), text(8)) for _ in range(rng.randint(0, 4))]
        body = urlencode(pairs).encode()
        assert form_fields(body) == parse_qsl(body.decode(), keep_blank_values=True)
        raw = text(12)  # not encoded at all: stray `%` and `=` too
        try:
            expected: object = parse_qsl(raw, keep_blank_values=True, errors="strict")
        except UnicodeDecodeError:
            expected = UnicodeDecodeError
        try:
            found: object = form_fields(raw.encode())
        except UnicodeDecodeError:
            found = UnicodeDecodeError
        assert found == expected, raw
    with pytest.raises(UnicodeDecodeError):
        form_fields(b"topic=%FF")
