"""The publish script's record, checked fast on fakeredis (the real server is covered end to end)."""

from __future__ import annotations

import fakeredis
import pytest
import redis

from hub.config import Settings
from hub.events import Event, InvalidEvent, binary_data, decode_binary
from hub.publish import PUBLISH_SCRIPT, script_call
from hub.topics import InvalidTopic, Keys
from publisher import Publisher

SETTINGS = Settings(key_prefix="unit:", retention_maxlen=0)


class ScriptOnFakeRedis:
    """The publish script with the publisher's own arguments, run on fakeredis."""

    def __init__(self) -> None:
        self.redis = fakeredis.FakeRedis()
        self._script = self.redis.register_script(PUBLISH_SCRIPT)

    def publish(self, topic: str, data: str, event_type: str = "") -> str:
        key, args = script_call(SETTINGS, topic, data, event_type)
        event_id: bytes = self._script(keys=[key], args=args)
        return event_id.decode()

    def publish_bytes(self, topic: str, payload: bytes, media_type: str, name: str) -> str:
        return self.publish(topic, binary_data(payload, media_type, name))


@pytest.fixture
def hub() -> ScriptOnFakeRedis:
    return ScriptOnFakeRedis()


def test_each_entry_points_at_the_one_before(hub: ScriptOnFakeRedis) -> None:
    ids = [hub.publish("news", f"n{n}") for n in range(3)]
    entries: list[tuple[bytes, dict[bytes, bytes]]] = hub.redis.xrange(Keys("unit:").stream("news"))  # type: ignore[assignment]
    events = [Event.from_entry("news", sid, fields) for sid, fields in entries]
    assert [e.data for e in events] == ["n0", "n1", "n2"]
    assert [f"{e.prev[0]}-{e.prev[1]}" for e in events] == ["0-0", ids[0], ids[1]]


def test_the_announcement_carries_the_whole_event(hub: ScriptOnFakeRedis) -> None:
    pubsub = hub.redis.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(Keys("unit:").channel("news"))
    pubsub.get_message(timeout=1)
    event_id = hub.publish("news", "two\nlines", "greet")
    message = pubsub.get_message(timeout=1)
    event = Event.from_message("news", message["data"])
    assert (f"{event.id[0]}-{event.id[1]}", event.type, event.data) == (
        event_id,
        "greet",
        "two\nlines",
    )


def test_binary_payloads_round_trip_byte_exact(hub: ScriptOnFakeRedis) -> None:
    payload = bytes(range(256)) * 4
    hub.publish_bytes("files", payload, "image/png", name="a b.png")
    entries: list[tuple[bytes, dict[bytes, bytes]]] = hub.redis.xrange(
        Keys("unit:").stream("files")
    )  # type: ignore[assignment]
    [(_, fields)] = entries
    data = fields[b"d"].decode()
    assert data.startswith("data:image/png;name=a%20b.png;base64,")
    assert decode_binary(data) == payload
    assert decode_binary("just text") is None


def test_bad_events_are_refused_before_redis() -> None:
    # Nothing listens at this address: a check that reached Redis would fail differently.
    with Publisher(Settings(redis_url="redis://127.0.0.1:9", key_prefix="unit:")) as hub:
        with pytest.raises(InvalidTopic):
            hub.publish("no spaces", "x")
        with pytest.raises(InvalidEvent):
            hub.publish("news", "x", "bad type")
        with pytest.raises(InvalidEvent):
            hub.publish("news", "x" * 2_000_000)
        with pytest.raises(InvalidTopic):
            hub.publish_many([("news", "fine"), ("no spaces", "x")])
        with pytest.raises(InvalidEvent):
            hub.publish_many([("news", "fine"), ("news", "x", "hub-private")])


def test_the_script_refuses_an_unknown_announcement(hub: ScriptOnFakeRedis) -> None:
    key, args = script_call(SETTINGS, "news", "x", "", announce="BROADCAST")
    with pytest.raises(redis.exceptions.ResponseError, match="must be PUBLISH or SPUBLISH"):
        hub.redis.register_script(PUBLISH_SCRIPT)(keys=[key], args=args)
