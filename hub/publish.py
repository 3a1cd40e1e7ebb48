"""The write path: an event appended to its topic's stream and announced, as one step.

`PUBLISH_SCRIPT`, a Lua script, does both on the primary that owns the topic
(one server, the Sentinel-named primary, or the Cluster node of the topic's
slot), so the ID it returns is the stream entry ID that subscribers see as the
event's `id`.
`EventWriter` checks an event, builds the script's arguments (`script_call`),
and runs it with EVALSHA through `Primaries`, followed on the same connection
by `WAIT` when `HUB_PUBLISH_WAIT_REPLICAS` asks for replicas. The publisher
library runs it on Redis clients of its own; the gateway's `POST /publish` on
the gateway's.
"""

from __future__ import annotations

import hashlib
from typing import Any

from redis.exceptions import NoScriptError, RedisError

from hub.config import Settings
from hub.events import check_data, check_event_type
from hub.primaries import Command, Primaries
from hub.topics import Keys, check_topic
from hub.topology import Node

PUBLISH_SCRIPT = """\
-- Append one event to a topic's stream and announce it, as one atomic step.
--
-- KEYS[1]  the topic's stream
-- ARGV[1]  data                      ARGV[2]  event type ('' for the default)
-- ARGV[3]  MAXLEN bound (0: none)    ARGV[4]  age bound in ms (0: none)
-- ARGV[5]  the topic's pub/sub channel (a channel, not a key: ACLs check it as one)
-- ARGV[6]  'PUBLISH', or 'SPUBLISH' in a Redis Cluster: sharded pub/sub announces the
--          event only on the primary that owns the topic's slot (its hash tag), where
--          the gateways subscribe with SSUBSCRIBE
--
-- Each entry records the ID of the entry before it ('p'). A gateway or a
-- replay that sees an entry whose 'p' is not the last ID it holds knows, for
-- certain, that events are missing between the two: trimmed history, a
-- subscription that was down, or a Redis that lost its data.
--
-- The message published is "<id>\\n<prev>\\n<type>\\n<data>": IDs and types hold
-- no newline, so the data, last, may contain anything.
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local prev = '0-0'
if last[1] then prev = last[1][1] end

local id
local maxlen = tonumber(ARGV[3])
if maxlen > 0 then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*',
                  'p', prev, 't', ARGV[2], 'd', ARGV[1])
else
  id = redis.call('XADD', KEYS[1], '*', 'p', prev, 't', ARGV[2], 'd', ARGV[1])
end

local max_age = tonumber(ARGV[4])
if max_age > 0 then
  local now = redis.call('TIME')
  local oldest = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - max_age
  redis.call('XTRIM', KEYS[1], 'MINID', '~', oldest)
end

local announce = ARGV[6]
if announce ~= 'PUBLISH' and announce ~= 'SPUBLISH' then
  return redis.error_reply('ERR ARGV[6] must be PUBLISH or SPUBLISH')
end
redis.call(announce, ARGV[5], id .. '\\n' .. prev .. '\\n' .. ARGV[2] .. '\\n' .. ARGV[1])
return id
"""
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
    """Check one event; the publish script's key and arguments for it (see `PUBLISH_SCRIPT`)."""
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
