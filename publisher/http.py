"""Publishing through a gateway's `POST /publish`, for publishers that cannot reach Redis.

    with HttpPublisher("https://hub.example.com", token) as hub:
        event_id = hub.publish("user/42/inbox", "hello")
        ids = hub.publish_many([("user/42/inbox", "one"), ("user/42/inbox", "two", "note")])

The token is a JWT whose `mercure.publish` patterns cover the topic (or the
gateway's fixed `HUB_PUBLISH_TOKEN`). `publish_many` sends batch requests (a
JSON array of events), each of at most `BATCH_EVENTS` events and about
`BATCH_BYTES` of body, one after the other.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any

from hub.events import BINARY_MEDIA_TYPE, binary_data

BATCH_EVENTS = 500
BATCH_BYTES = 1_048_576
"""A batch request's body is kept under this, unless one event alone is larger (the
gateway's default limit, `HUB_MAX_BATCH_BYTES`, is 16 MiB)."""


class PublishRefused(Exception):
    """The gateway refused a publish; the message is its reason.

    After `publish_many`, `ids` holds the ID of each event sent, in order, or None
    for one the gateway refused; it stops where sending stopped.
    """

    def __init__(self, message: str, ids: list[str | None] | None = None) -> None:
        super().__init__(message)
        self.ids: list[str | None] = ids or []


class HubUnreachable(OSError):
    """No answer from the gateway. After `publish_many`, `ids` holds the IDs of the events
    published by the requests before."""

    def __init__(self, message: str, ids: list[str | None] | None = None) -> None:
        super().__init__(message)
        self.ids: list[str | None] = ids or []


class HttpPublisher:
    def __init__(self, hub_url: str, token: str, timeout: float = 10.0) -> None:
        self.endpoint = hub_url.rstrip("/") + "/publish"
        self.token = token
        self.timeout = timeout

    def publish(self, topic: str, data: str, event_type: str = "") -> str:
        body = json.dumps({"topic": topic, "data": data, "type": event_type}).encode()
        return str(self._post(body)["id"])

    def publish_many(self, events: Iterable[tuple[str, str] | tuple[str, str, str]]) -> list[str]:
        """Publish `(topic, data[, type])` events in order, in batch requests; their IDs.

        The gateway publishes every event it accepts, even when it refuses others
        (a topic the token does not cover, data over its limit): once every batch
        is sent, `PublishRefused` names the first refused event, and its `ids` says
        which were published. A request refused whole raises at once.
        """
        ids: list[str | None] = []
        first_refusal = ""
        for body in _batches(events):
            try:
                answer = self._post(body)
            except PublishRefused as exc:
                raise PublishRefused(str(exc), ids) from None
            except HubUnreachable as exc:
                raise HubUnreachable(str(exc), ids) from None
            for result in answer["results"]:
                if "id" in result:
                    ids.append(str(result["id"]))
                    continue
                if not first_refusal:
                    first_refusal = f"event {len(ids)}: {result['status']} {result['error']}"
                ids.append(None)
        if first_refusal:
            refused = ids.count(None)
            raise PublishRefused(
                f"the hub refused {refused} of {len(ids)} events; the first, {first_refusal}", ids
            )
        return [event_id for event_id in ids if event_id is not None]

    def publish_bytes(
        self, topic: str, payload: bytes, media_type: str = BINARY_MEDIA_TYPE, name: str = ""
    ) -> str:
        return self.publish(topic, binary_data(payload, media_type, name))

    def _post(self, body: bytes) -> Any:
        request = urllib.request.Request(
            self.endpoint,
            data=body,
            method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            reason = exc.read().decode(errors="replace").strip()
            raise PublishRefused(f"the hub answered {exc.code}: {reason}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            cause = getattr(exc, "reason", exc)
            raise HubUnreachable(f"cannot reach the hub at {self.endpoint}: {cause}") from None

    def close(self) -> None:
        """Nothing is held between requests."""

    def __enter__(self) -> HttpPublisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _batches(events: Iterable[tuple[str, str] | tuple[str, str, str]]) -> Iterator[bytes]:
    """Bodies of batch requests (JSON arrays) holding `events`, in order."""
    batch: list[bytes] = []
    size = 0
    for event in events:
        topic, data, *rest = event
        item = json.dumps({"topic": topic, "data": data, "type": rest[0] if rest else ""}).encode()
        if batch and (len(batch) == BATCH_EVENTS or size + len(item) > BATCH_BYTES):
            yield b"[" + b",".join(batch) + b"]"
            batch, size = [], 0
        batch.append(item)
        size += len(item) + 1
    if batch:
        yield b"[" + b",".join(batch) + b"]"
