"""`GET /events`: a client's SSE stream, from its request to its end.

The request names its topics and, to resume, a cursor (`Last-Event-ID`, or
`last_event_id` for a first connection); a token when a topic is private.
The gateway registers the stream before the response starts, so nothing
published meanwhile is lost, then writes it until it ends.
"""

from __future__ import annotations

from starlette.datastructures import Headers, QueryParams
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from hub import cursor, sse
from hub.auth import Authority, Forbidden, Grant, Unauthorized
from hub.fanout import Unavailable
from hub.gateway import TRUNCATED_HEADER, Gateway, Opened
from hub.publish_request import BadRequest
from hub.request_limits import ClientSlots, OverLimit, reply
from hub.topics import InvalidTopic, check_topic

UNAVAILABLE_HEADER = "Hub-Unavailable"
UNAVAILABLE = (UNAVAILABLE_HEADER.lower().encode(), b"redis")
STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def parse_stream_request(
    query: QueryParams, headers: Headers, max_topics: int
) -> tuple[tuple[str, ...], list[tuple[int, int]] | None]:
    """Topics and resume positions of a `GET /events`, or `BadRequest` saying why."""
    raw_topics = query.getlist("topic")
    if not raw_topics:
        raise BadRequest("name at least one topic: /events?topic=NAME")
    try:
        topics = cursor.canonical_topics(check_topic(topic) for topic in raw_topics)
    except InvalidTopic as exc:
        raise BadRequest(str(exc)) from None
    if len(topics) > max_topics:
        raise BadRequest(f"{len(topics)} topics is over the limit of {max_topics} per connection")
    # The header wins: it is what the browser sends when it reconnects by itself.
    last_id = headers.get("last-event-id") or query.get("last_event_id") or ""
    if not last_id:
        return topics, None
    try:
        return topics, cursor.decode(last_id.strip(), len(topics))
    except cursor.InvalidCursor as exc:
        raise BadRequest(str(exc)) from None


class EventsEndpoint:
    """`GET /events`: a raw ASGI app, because a stream outlives any Response object."""

    def __init__(self, gateway: Gateway, authority: Authority, slots: ClientSlots) -> None:
        self.gateway = gateway
        self.authority = authority
        self.slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await reply(scope, receive, send, "use GET for /events", 405)
            return
        try:
            with self.slots.hold(scope):
                started = await self._start(scope, receive, send)
                if started is None:
                    return
                opened, grant = started
                # The stream ends when its token does; a reconnect with it is refused.
                with opened.client.ends_at(grant.expires if grant else None):
                    await self.gateway.serve(opened, send, receive)
        except OverLimit as exc:
            await reply(scope, receive, send, str(exc), 429)

    async def _start(
        self, scope: Scope, receive: Receive, send: Send
    ) -> tuple[Opened, Grant | None] | None:
        """Register the stream and start its response; None when it was answered otherwise.

        The request's parsed parts stay here: an open stream holds only what its
        caller keeps.
        """
        request = Request(scope)
        try:
            topics, after = parse_stream_request(
                request.query_params, request.headers, self.gateway.settings.max_topics
            )
            token = self.authority.token_of(request.headers, request.cookies, request.query_params)
            grant = self.authority.check_subscribe(topics, token)
            if request.method == "HEAD":
                # The headers a GET would get, without a stream: a client may ask whether
                # the hub's Redis is there before it opens one (the subscription's state,
                # not a Redis round trip, so the answer never waits on a dead Redis).
                away = [] if self.gateway.subscribed else [UNAVAILABLE]
                await start_stream(send, away, end=True)
                return None
            opened = await self.gateway.open(topics, after)
        except BadRequest as exc:
            await reply(scope, receive, send, exc.reason, exc.status)
            return None
        except Unauthorized as exc:
            await reply(scope, receive, send, str(exc), 401)
            return None
        except Forbidden as exc:
            await reply(scope, receive, send, str(exc), 403)
            return None
        except Unavailable as exc:
            await answer_unavailable(send, str(exc), self.gateway.retry_hint())
            return None
        extra = []
        if opened.truncated:
            extra.append((TRUNCATED_HEADER.lower().encode(), ",".join(opened.truncated).encode()))
        await start_stream(send, extra)
        return opened, grant


async def start_stream(
    send: Send, headers: list[tuple[bytes, bytes]] | None = None, end: bool = False
) -> None:
    """Start an SSE response with `headers` besides the stream's own; `end` it at once (HEAD)."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [*STREAM_HEADERS, *headers] if headers else STREAM_HEADERS,
        }
    )
    if end:
        await send({"type": "http.response.body", "body": b""})


async def answer_unavailable(send: Send, reason: str, retry_ms: int) -> None:
    """The answer to a stream request while Redis is away.

    A browser never retries an EventSource answered with an error status; an
    empty stream with a `retry:` hint makes it come back by itself.
    """
    await start_stream(send, [UNAVAILABLE])
    body = sse.comment(f"redis unavailable: {reason}") + sse.retry(retry_ms)
    await send({"type": "http.response.body", "body": body})
