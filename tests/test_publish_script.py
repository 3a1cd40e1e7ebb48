"""The publish script's record, checked fast on fakeredis (the real server is covered end to end)."""

from __future__ import annotations

import fakeredis
import pytest

from hub.config import Settings
from hub.events import Event, InvalidEvent, decode_binary
from hub.topics import InvalidTopic, Keys
from publisher import Publisher


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Publisher:
    publisher = Publisher(Settings(key_prefix="unit:", retention_maxlen=0))
    publisher._redis = fakeredis.FakeRedis()  # the unit under test is the script, not the connection
    publisher._script = publisher._redis.register_script(publisher._script.script)
    return publisher


def test_each_entry_points_at_the_one_before(hub: Publisher) -> None:
    ids = [hub.publish("news", f"n{n}") for n in range(3)]
    entries = hub._redis.xrange(Keys("unit:").stream("news"))
    events = [Event.from_entry("news", sid, fields) for sid, fields in entries]
    assert [e.data for e in events] == ["n0", "n1", "n2"]
    assert [f"{e.prev[0]}-{e.prev[1]}" for e in events] == ["0-0", ids[0], ids[1]]


def test_the_announcement_carries_the_whole_event(hub: Publisher) -> None:
    pubsub = hub._redis.pubsub()
    pubsub.subscribe(Keys("unit:").channel("news"))
    pubsub.get_message(timeout=1)
    event_id = hub.publish("news", "two\nlines", "greet")
    message = pubsub.get_message(timeout=1)
    event = Event.from_message("news", message["data"])
    assert (f"{event.id[0]}-{event.id[1]}", event.type, event.data) == (event_id, "greet", "two\nlines")


def test_binary_payloads_round_trip_byte_exact(hub: Publisher) -> None:
    payload = bytes(range(256)) * 4
    hub.publish_bytes("files", payload, "image/png", name="a b.png")
    [(_, fields)] = hub._redis.xrange(Keys("unit:").stream("files"))
    data = fields[b"d"].decode()
    assert data.startswith("data:image/png;name=a%20b.png;base64,")
    assert decode_binary(data) == payload
    assert decode_binary("just text") is None


def test_bad_events_are_refused_before_redis(hub: Publisher) -> None:
    with pytest.raises(InvalidTopic):
        hub.publish("no spaces", "x")
    with pytest.raises(InvalidEvent):
        hub.publish("news", "x", "bad type")
    with pytest.raises(InvalidEvent):
        hub.publish("news", "x" * 2_000_000)
    assert hub._redis.keys("*") == []
