"""Publish events to the hub: append to a topic's stream and announce, atomically."""

from hub.publish import NotAllPublished
from publisher.client import AsyncPublisher, Publisher

__all__ = ["AsyncPublisher", "NotAllPublished", "Publisher"]
