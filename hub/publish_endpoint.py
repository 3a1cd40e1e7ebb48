"""`POST /publish`: an event published over HTTP, on the gateway's own Redis clients.

The bearer token is checked before a byte of the body is read: the fixed
`HUB_PUBLISH_TOKEN` may publish anywhere, a JWT where its `publish` claims
allow. The body is read and measured by `hub/publish_request.py`, and the
event written by the same write path as the publisher library's
(`hub/publish.py`).
"""

from __future__ import annotations

import secrets

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from hub.auth import Authority, Forbidden, Unauthorized
from hub.config import Settings
from hub.events import EventTooLarge, InvalidEvent
from hub.publish import EventWriter
from hub.publish_request import BadRequest, read_publish_request
from hub.request_limits import ClientSlots, OverLimit
from hub.topics import InvalidTopic


class PublishEndpoint:
    def __init__(
        self, settings: Settings, authority: Authority, slots: ClientSlots, writer: EventWriter
    ) -> None:
        self.settings = settings
        self.authority = authority
        self.slots = slots
        self.writer = writer

    @property
    def enabled(self) -> bool:
        return bool(self.settings.publish_token) or self.authority.enabled

    def _fixed_token(self, token: str) -> bool:
        expected = self.settings.publish_token.encode()
        return bool(expected) and secrets.compare_digest(token.encode(), expected)

    async def handle(self, request: Request) -> Response:
        if not self.enabled:
            return PlainTextResponse(
                "publishing over HTTP is disabled: set HUB_PUBLISH_TOKEN or HUB_JWT_KEY\n", 404
            )
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return _unauthorized("send Authorization: Bearer <token>")
        try:
            return JSONResponse({"id": await self._publish(request, token)})
        except BadRequest as exc:  # a body refused unread, or read in part: no keep-alive
            return _refusal(exc.reason, exc.status)
        except OverLimit as exc:
            return _refusal(str(exc), 429)
        except Unauthorized as exc:
            return _unauthorized(str(exc))
        except Forbidden as exc:
            return _refusal(str(exc), 403)
        except EventTooLarge as exc:
            return PlainTextResponse(f"{exc}\n", 413)
        except (InvalidTopic, InvalidEvent) as exc:
            return PlainTextResponse(f"{exc}\n", 400)
        except (RedisError, OSError) as exc:
            return PlainTextResponse(f"redis unavailable: {exc}\n", 503, {"retry-after": "1"})

    async def _publish(self, request: Request, token: str) -> str:
        fixed = self._fixed_token(token)
        if not fixed and not self.authority.enabled:
            raise Unauthorized("the token is not valid")
        grant = None if fixed else self.authority.verify(token)
        if grant is not None and not grant.publish:
            raise Forbidden("the token does not allow publishing")
        with self.slots.hold(request.scope):
            event = await read_publish_request(request, self.settings)
        if grant is not None:
            self.authority.check_publish(event.topic, grant)
        return await self.writer.publish(event.topic, event.data, event.event_type)


def _refusal(reason: str, status: int) -> Response:
    # The body, if any, is left unread: the connection closes rather than wait for it.
    return PlainTextResponse(f"{reason}\n", status, {"connection": "close"})


def _unauthorized(reason: str) -> Response:
    return PlainTextResponse(
        f"{reason}\n", 401, {"www-authenticate": "Bearer", "connection": "close"}
    )
