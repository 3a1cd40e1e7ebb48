"""`POST /publish`: events published over HTTP, on the gateway's own Redis clients.

The bearer token is checked before a byte of the body is read: the fixed
`HUB_PUBLISH_TOKEN` may publish anywhere, a JWT where its `publish` claims
allow. The body is read and measured by `hub/publish_request.py`: one event,
answered with its ID, or a batch, answered with each event's ID or error in
order. The events are written by the same write path as the publisher
library's (`hub/publish.py`), which shares Redis round trips between the
requests in flight.
"""

from __future__ import annotations

import json
import secrets

from redis.exceptions import RedisError, ResponseError
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from hub.auth import Authority, Forbidden, Grant, Unauthorized
from hub.config import Settings
from hub.events import EventTooLarge, InvalidEvent
from hub.publish import Call, EventWriter, NotReplicated, NotSent, Outcome
from hub.publish_request import BadRequest, Batch, Limits, PublishRequest, read_publish_request
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
        self.limits = Limits(settings)
        self._fixed_token = settings.publish_token.encode()

    @property
    def enabled(self) -> bool:
        return bool(self._fixed_token) or self.authority.enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "POST":
            response = await self.handle(Request(scope, receive))
        else:
            response = PlainTextResponse("use POST for /publish\n", 405, {"allow": "POST"})
        await response(scope, receive, send)

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
            grant = self._grant(token)
            with self.slots.hold(request.scope):
                body = await read_publish_request(request, self.limits)
            if isinstance(body, PublishRequest):
                return _json(b'{"id":"%s"}' % (await self._publish(body, grant)).encode())
            return _json(await self._publish_batch(body, grant))
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

    def _grant(self, token: str) -> Grant | None:
        """What the token may publish to: None for the fixed token, which may publish anywhere."""
        if self._fixed_token and secrets.compare_digest(token.encode(), self._fixed_token):
            return None
        if not self.authority.enabled:
            raise Unauthorized("the token is not valid")
        grant = self.authority.verify(token)
        if not grant.publish:
            raise Forbidden("the token does not allow publishing")
        return grant

    async def _publish(self, event: PublishRequest, grant: Grant | None) -> str:
        if grant is not None:
            self.authority.check_publish(event.topic, grant)
        return await self.writer.publish(event.topic, event.data, event.event_type)

    async def _publish_batch(self, batch: Batch, grant: Grant | None) -> bytes:
        """The answer to a batch: each event's ID, or its error, in order."""
        results: list[bytes] = [b""] * len(batch)
        calls: list[Call] = []
        positions: list[int] = []
        for n, event in enumerate(batch):
            if isinstance(event, BadRequest):
                results[n] = _error(event.reason, event.status)
                continue
            try:
                if grant is not None:
                    self.authority.check_publish(event.topic, grant)
                calls.append(self.writer.prepare(event.topic, event.data, event.event_type))
            except Forbidden as exc:
                results[n] = _error(str(exc), 403)
            except EventTooLarge as exc:
                results[n] = _error(str(exc), 413)
            except (InvalidTopic, InvalidEvent) as exc:
                results[n] = _error(str(exc), 400)
            else:
                positions.append(n)
        published = 0
        for n, outcome in zip(positions, await self.writer.write(calls), strict=True):
            if isinstance(outcome, str):
                results[n] = b'{"id":"%s"}' % outcome.encode()
                published += 1
            else:
                results[n] = _error(_redis_failure(outcome), 503)
        return b'{"published":%d,"failed":%d,"results":[%s]}' % (
            published,
            len(batch) - published,
            b",".join(results),
        )


def _redis_failure(outcome: Outcome) -> str:
    if isinstance(outcome, (NotSent, NotReplicated)):
        return str(outcome)
    if isinstance(outcome, ResponseError):
        return f"redis refused the event: {outcome}"
    return f"redis unavailable: {outcome}"


def _error(reason: str, status: int) -> bytes:
    one_line = " ".join(reason.split())
    return json.dumps({"error": one_line, "status": status}, separators=(",", ":")).encode()


def _json(body: bytes) -> Response:
    return Response(body, media_type="application/json")


def _refusal(reason: str, status: int) -> Response:
    # The body, if any, is left unread: the connection closes rather than wait for it.
    return PlainTextResponse(f"{reason}\n", status, {"connection": "close"})


def _unauthorized(reason: str) -> Response:
    return PlainTextResponse(
        f"{reason}\n", 401, {"www-authenticate": "Bearer", "connection": "close"}
    )
