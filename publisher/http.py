"""Publishing through a gateway's `POST /publish`, for publishers that cannot reach Redis.

    with HttpPublisher("https://hub.example.com", token) as hub:
        event_id = hub.publish("user/42/inbox", "hello")

The token is a JWT whose `mercure.publish` patterns cover the topic (or the
gateway's fixed `HUB_PUBLISH_TOKEN`).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from types import TracebackType

from hub.events import BINARY_MEDIA_TYPE, binary_data


class PublishRefused(Exception):
    """The gateway answered with an error status; the message is its reason."""


class HubUnreachable(OSError):
    """No answer from the gateway."""


class HttpPublisher:
    def __init__(self, hub_url: str, token: str, timeout: float = 10.0) -> None:
        self.endpoint = hub_url.rstrip("/") + "/publish"
        self.token = token
        self.timeout = timeout

    def publish(self, topic: str, data: str, event_type: str = "") -> str:
        body = json.dumps({"topic": topic, "data": data, "type": event_type}).encode()
        request = urllib.request.Request(
            self.endpoint,
            data=body,
            method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return str(json.load(response)["id"])
        except urllib.error.HTTPError as exc:
            reason = exc.read().decode(errors="replace").strip()
            raise PublishRefused(f"the hub answered {exc.code}: {reason}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            cause = getattr(exc, "reason", exc)
            raise HubUnreachable(f"cannot reach the hub at {self.endpoint}: {cause}") from None

    def publish_bytes(
        self, topic: str, payload: bytes, media_type: str = BINARY_MEDIA_TYPE, name: str = ""
    ) -> str:
        return self.publish(topic, binary_data(payload, media_type, name))

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
