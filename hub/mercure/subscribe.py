"""`GET /.well-known/mercure`: a Mercure subscriber's stream, from its request to its end.

The request names topic matchers (`match`, `matchURLPattern`, or the older
`topic=`), and, to resume, the last update it saw (`Last-Event-ID`, which
wins, or `lastEventID` / `last_event_id` for a first connection; `earliest`
for everything the hub still has). A token (header, query or cookie) lets it
read private updates; without one it gets public updates only, unless
`HUB_MERCURE_ANONYMOUS=off`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from hub.auth import Authority, Forbidden, Grant, Unauthorized, challenge
from hub.events_endpoint import answer_unavailable, start_stream
from hub.fanout import Unavailable
from hub.mercure.discovery import metadata_url
from hub.mercure.gateway import MercureGateway, Opening
from hub.mercure.matchers import InvalidMatcher, TopicFilter, subscription_matchers
from hub.request_limits import ClientSlots, OverLimit, reply

LAST_EVENT_ID_PARAMETERS = ("lastEventID", "last_event_id", "Last-Event-ID")
"""Where a first connection gives its cursor: the current spec's name, then older ones."""


class BadSubscription(Exception):
    """A request the hub refuses with 400."""


class SubscribeEndpoint:
    def __init__(self, mercure: MercureGateway, authority: Authority, slots: ClientSlots) -> None:
        self.mercure = mercure
        self.settings = mercure.settings
        self.authority = authority
        self.slots = slots
        self._metadata = metadata_url(self.settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            with self.slots.hold(scope):
                started = await self._start(scope, receive, send)
                if started is None:
                    return
                opening, grant = started
                # The spec: the connection closes no later than the token's `exp`.
                with opening.stream.client.ends_at(grant.expires if grant else None):
                    await self.mercure.serve(opening, send, receive)
        except OverLimit as exc:
            await reply(scope, receive, send, str(exc), 429)

    async def _start(
        self, scope: Scope, receive: Receive, send: Send
    ) -> tuple[Opening, Grant | None] | None:
        request = Request(scope)
        try:
            matchers = subscription_matchers(
                request.query_params.multi_items(),
                self.settings.public_url,
                self.settings.mercure_max_matchers,
                self.settings.mercure_max_topic_bytes,
            )
            last_event_id = self._last_event_id(request)
            token = self.authority.token_of(request.headers, request.cookies, request.query_params)
            grant = self.authority.grant_of(token) if self.authority.enabled or token else None
            if grant is None and self.settings.mercure_anonymous == "off":
                raise Unauthorized("a token is required to subscribe")
            if scope["method"] == "HEAD":
                await start_stream(send, end=True)
                return None
            opening = await self.mercure.open(TopicFilter(matchers), grant, last_event_id)
        except (InvalidMatcher, BadSubscription) as exc:
            await reply(scope, receive, send, str(exc), 400)
            return None
        except (Unauthorized, Forbidden) as exc:
            status = 401 if isinstance(exc, Unauthorized) else 403
            await _refuse(scope, send, str(exc), status, challenge(exc, self._metadata))
            return None
        except Unavailable as exc:
            await answer_unavailable(send, str(exc), self.mercure.gateway.retry_hint())
            return None
        echoed = opening.echoed
        await start_stream(send, [(b"last-event-id", echoed.encode())] if echoed else None)
        return opening, grant

    def _last_event_id(self, request: Request) -> str | None:
        text = request.headers.get("last-event-id")
        if text is None:
            text = next(
                (request.query_params[name] for name in LAST_EVENT_ID_PARAMETERS
                 if name in request.query_params),
                None,
            )  # fmt: skip
        if text is None or text == "":
            return None
        if len(text.encode()) > self.settings.mercure_max_topic_bytes:
            raise BadSubscription("the last event ID is too long")
        if any(ch in text for ch in "\r\n\0"):
            raise BadSubscription("the last event ID holds a line break or NUL")
        return text


async def _refuse(scope: Scope, send: Send, reason: str, status: int, challenge: str) -> None:
    body = f"{reason}\n".encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", challenge.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
