"""Topic names and the Redis keys that hold each topic.

A topic is 1 to 1024 characters with no space and no control character, so
an IRI such as `https://example.com/books/1?lang=fr` is a topic. Each topic has
one stream (its history; entry IDs are event IDs) and one pub/sub channel (the
doorbell that carries each new event to the gateways). Both names carry the
topic as a hash tag, `{topic}`, so in a Redis Cluster a topic's stream and
channel live in one slot and the publish script may touch both. Braces and `%`
in a topic are percent-encoded in its keys: a `}` would end the hash tag early
and could put the stream and the channel in different slots.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

TOPIC_MAX_LENGTH = 1024
TOPIC_GRAMMAR = f"1-{TOPIC_MAX_LENGTH} characters, no spaces or control characters"
# Spaces (and so every name the hub keeps for itself, such as Mercure's partitions) and
# the C0 and C1 control characters are out; a lone surrogate is not text.
_TOPIC = re.compile(r"[^\x00-\x20\x7f-\xa0\ud800-\udfff]{1,%d}" % TOPIC_MAX_LENGTH)
_KEY_ESCAPES = str.maketrans({"%": "%25", "{": "%7B", "}": "%7D"})


class InvalidTopic(ValueError):
    """A topic name outside the grammar."""


def check_topic(topic: str) -> str:
    """Return `topic` unchanged, or raise `InvalidTopic` saying why."""
    if _TOPIC.fullmatch(topic):
        return topic
    if not topic:
        raise InvalidTopic("topic is empty")
    if len(topic) > TOPIC_MAX_LENGTH:
        raise InvalidTopic(f"topic is longer than {TOPIC_MAX_LENGTH} characters")
    bad = next(ch for ch in topic if not _TOPIC.fullmatch(ch))
    raise InvalidTopic(f"topic {topic[:40]!r} contains {bad!r}; allowed: {TOPIC_GRAMMAR}")


@dataclass(frozen=True)
class Keys:
    """Names of a topic's Redis stream and channel under one key prefix."""

    prefix: str

    def stream(self, topic: str) -> str:
        return f"{self.prefix}stream:{{{_key_part(topic)}}}"

    def channel(self, topic: str) -> str:
        return f"{self.prefix}channel:{{{_key_part(topic)}}}"

    def topic_of_channel(self, channel: str) -> str:
        """The topic a channel name belongs to (the inverse of `channel`)."""
        part = channel[len(self.prefix) + len("channel:{") : -1]
        return unquote(part) if "%" in part else part


def _key_part(topic: str) -> str:
    return topic.translate(_KEY_ESCAPES) if "{" in topic or "}" in topic or "%" in topic else topic
