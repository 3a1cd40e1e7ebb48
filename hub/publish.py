"""The write path: an event appended to its topic's stream and announced, as one step.

`hub/publish.lua` does both on the primary that owns the topic (one server,
the Sentinel-named primary, or the Cluster node of the topic's slot), so the
ID it returns is the stream entry ID that subscribers see as the event's `id`.
`EventWriter` checks an event, builds the script's arguments (`script_call`),
and runs it with EVALSHA through `Primaries`, followed on the same connection
by `WAIT` when `HUB_PUBLISH_WAIT_REPLICAS` asks for replicas. The publisher
library runs it on Redis clients of its own; the gateway's `POST /publish` on
the gateway's.
"""

from __future__ import annotations

import hashlib
from importlib.resources import files
from typing import Any

from redis.exceptions import NoScriptError, RedisError

from hub.config import Settings
from hub.events import check_data, check_event_type
from hub.primaries import Command, Primaries
from hub.topics import Keys, check_topic
from hub.topology import Node

PUBLISH_SCRIPT = files("hub").joinpath("publish.lua").read_text()
PUBLISH_SHA = hashlib.sha1(PUBLISH_SCRIPT.encode()).hexdigest()


class NotReplicated(RedisError):
    """The event was written, but fewer replicas than asked for hold it yet."""

    def __init__(self, event_id: str, replicas: int, wanted: int, waited_ms: int) -> None:
        super().__init__(
            f"event {event_id} reached {replicas} of {wanted} replicas in {waited_ms} ms;"
            " it is not acknowledged and may be lost if its primary fails"
        )
        self.event_id = event_id


def script_call(
    settings: Settings, topic: str, data: str, event_type: str, announce: str = "PUBLISH"
) -> tuple[str, list[str | int]]:
    """Check one event; the publish script's key and arguments for it (see hub/publish.lua)."""
    check_topic(topic)
    check_event_type(event_type)
    check_data(data, settings.max_event_bytes)
    keys = Keys(settings.key_prefix)
    return keys.stream(topic), [
        data,
        event_type,
        settings.retention_maxlen,
        settings.retention_seconds * 1000,
        keys.channel(topic),
        announce,
    ]


class EventWriter:
    """Publishes events through `primaries`, which its owner opens and closes."""

    def __init__(self, settings: Settings, primaries: Primaries) -> None:
        self.settings = settings
        self._primaries = primaries
        self._announce = "SPUBLISH" if primaries.topology.sharded else "PUBLISH"
        # Primaries the script is known to be loaded on. It is loaded before the first
        # EVALSHA, not on NOSCRIPT: the embedded development server (fakeredis) answers
        # an unknown SHA with an error redis-py does not recognise.
        self._loaded: set[str] = set()

    async def publish(self, topic: str, data: str, event_type: str = "") -> str:
        """Append and announce one event; return its ID."""
        key, args = script_call(self.settings, topic, data, event_type, self._announce)
        wait = self.settings.publish_wait_replicas

        used: list[Node] = []

        def commands(node: Node) -> list[Command]:
            used.append(node)
            batch: list[Command] = [("EVALSHA", PUBLISH_SHA, 1, key, *args)]
            if node.name not in self._loaded:
                batch.insert(0, ("SCRIPT", "LOAD", PUBLISH_SCRIPT))
            if wait:
                batch.append(("WAIT", wait, self.settings.publish_wait_ms))
            return batch

        try:
            results = await self._primaries.run(key, commands, idempotent=False)
        except NoScriptError:  # a restarted or promoted primary lost its script cache
            self._loaded.clear()
            results = await self._primaries.run(key, commands, idempotent=False)
        self._loaded.add(used[-1].name)
        if wait:
            *results, replicas = results
        event_id = _text(results[-1])  # after SCRIPT LOAD's answer, if it was sent
        if wait and int(replicas) < wait:
            raise NotReplicated(event_id, int(replicas), wait, self.settings.publish_wait_ms)
        return event_id


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
