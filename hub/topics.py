"""Topic names and the Redis keys that hold each topic.

A topic is 1 to 128 characters from `A-Z a-z 0-9 _ - . / :`. Each topic has one
stream (its history; entry IDs are event IDs) and one pub/sub channel (the
doorbell that carries each new event to the gateways). Both names carry the
topic as a hash tag, `{topic}`, so in a Redis Cluster a topic's stream and
channel live in one slot and the publish script may touch both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TOPIC_MAX_LENGTH = 128
TOPIC_GRAMMAR = f"1-{TOPIC_MAX_LENGTH} characters from A-Z a-z 0-9 _ - . / :"
_TOPIC = re.compile(r"[A-Za-z0-9_\-./:]{1,%d}" % TOPIC_MAX_LENGTH)


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
        return f"{self.prefix}stream:{{{topic}}}"

    def channel(self, topic: str) -> str:
        return f"{self.prefix}channel:{{{topic}}}"

    def topic_of_channel(self, channel: str) -> str:
        """The topic a channel name belongs to (the inverse of `channel`)."""
        return channel[len(self.prefix) + len("channel:{") : -1]
