"""The gateway's HTTP surface (Starlette): `/events`, `/publish`, health, and the page."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.datastructures import Headers, QueryParams
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from hub import cursor, sse
from hub.auth import Authority, Forbidden, Unauthorized
from hub.config import Settings
from hub.events import EventTooLarge, InvalidEvent
from hub.fanout import Unavailable
from hub.gateway import TRUNCATED_HEADER, Gateway
from hub.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from hub.publish_request import BadRequest, read_publish_request
from hub.client_connection import Ending
from hub.topics import InvalidTopic, check_topic
from publisher.client import AsyncPublisher

log = logging.getLogger("hub.app")
UNAVAILABLE_HEADER = "Hub-Unavailable"
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
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


class OverLimit(Exception):
    """A client address already holds as many requests as it may."""


class ClientSlots:
    """Open streams and publish requests per client address, against one limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: Counter[str] = Counter()

    @contextmanager
    def hold(self, scope: Scope) -> Iterator[None]:
        client = scope.get("client")
        address = client[0] if client else ""
        if self.limit and self._held[address] >= self.limit:
            raise OverLimit(f"over the limit of {self.limit} streams per client")
        self._held[address] += 1
        try:
            yield
        finally:
            self._held[address] -= 1
            if not self._held[address]:
                del self._held[address]


class EventsEndpoint:
    """`GET /events`: a raw ASGI app, because a stream outlives any Response object."""

    def __init__(self, gateway: Gateway, authority: Authority, slots: ClientSlots) -> None:
        self.gateway = gateway
        self.authority = authority
        self.slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        if request.method not in ("GET", "HEAD"):
            await _reply(scope, receive, send, "use GET for /events", 405)
            return
        try:
            with self.slots.hold(scope):
                await self._stream(request, scope, receive, send)
        except OverLimit as exc:
            await _reply(scope, receive, send, str(exc), 429)

    async def _stream(self, request: Request, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            topics, after = parse_stream_request(
                request.query_params, request.headers, self.gateway.settings.max_topics
            )
            token = self.authority.token_of(request.headers, request.cookies, request.query_params)
            grant = self.authority.check_subscribe(topics, token)
            if request.method == "HEAD":
                await send({"type": "http.response.start", "status": 200, "headers": STREAM_HEADERS})
                await send({"type": "http.response.body", "body": b""})
                return
            opened = await self.gateway.open(topics, after)
        except BadRequest as exc:
            await _reply(scope, receive, send, exc.reason, exc.status)
            return
        except Unauthorized as exc:
            await _reply(scope, receive, send, str(exc), 401)
            return
        except Forbidden as exc:
            await _reply(scope, receive, send, str(exc), 403)
            return
        except Unavailable as exc:
            # A browser never retries an EventSource answered with an error status;
            # an empty stream with a `retry:` hint makes it come back by itself.
            headers = [*STREAM_HEADERS, (UNAVAILABLE_HEADER.lower().encode(), b"redis")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            body = sse.comment(f"redis unavailable: {exc}") + sse.retry(self.gateway.retry_hint())
            await send({"type": "http.response.body", "body": body})
            return
        headers = list(STREAM_HEADERS)
        if opened.truncated:
            headers.append((TRUNCATED_HEADER.lower().encode(), ",".join(opened.truncated).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        expiry = None
        if grant is not None and grant.expires is not None:
            # The stream ends when its token does; a reconnect with it is refused.
            expiry = asyncio.get_running_loop().call_later(
                max(0.0, grant.expires - time.time()), opened.client.end, Ending.EXPIRED
            )
        try:
            await self.gateway.serve(opened, send, receive)
        finally:
            if expiry is not None:
                expiry.cancel()


def _unauthorized(reason: str) -> Response:
    # The body, if any, is left unread: the connection closes rather than wait for it.
    return PlainTextResponse(
        f"{reason}\n", 401, {"www-authenticate": "Bearer", "connection": "close"}
    )


async def _reply(scope: Scope, receive: Receive, send: Send, reason: str, status: int) -> None:
    response = PlainTextResponse(reason + "\n", status_code=status)
    if status == 503:
        response.headers["retry-after"] = "1"
    if status == 401:
        response.headers["www-authenticate"] = "Bearer"
    await response(scope, receive, send)


def create_app(gateway: Gateway) -> ASGIApp:
    settings = gateway.settings
    authority = Authority(settings)
    if authority.unusable:
        log.warning(
            "HUB_JWT_KEY cannot verify %s; tokens signed so are refused",
            ", ".join(authority.unusable),
        )
    slots = ClientSlots(settings.max_streams_per_client)
    enabled = bool(settings.publish_token) or authority.enabled
    publisher = AsyncPublisher(settings) if enabled else None

    def fixed_token(token: str) -> bool:
        expected = settings.publish_token.encode()
        return bool(expected) and secrets.compare_digest(token.encode(), expected)

    async def publish(request: Request) -> Response:
        if publisher is None:
            return PlainTextResponse(
                "publishing over HTTP is disabled: set HUB_PUBLISH_TOKEN or HUB_JWT_KEY\n", 404
            )
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return _unauthorized("send Authorization: Bearer <token>")
        try:
            # The token is checked before a byte of the body is read.
            if not fixed_token(token) and not authority.enabled:
                raise Unauthorized("the token is not valid")
            grant = None if fixed_token(token) else authority.verify(token)
            if grant is not None and not grant.publish:
                raise Forbidden("the token does not allow publishing")
            with slots.hold(request.scope):
                event = await read_publish_request(request, settings)
            if grant is not None:
                authority.check_publish(event.topic, grant)
            event_id = await publisher.publish(event.topic, event.data, event.event_type)
        except BadRequest as exc:  # a body refused unread, or read in part: no keep-alive
            return PlainTextResponse(exc.reason + "\n", exc.status, {"connection": "close"})
        except OverLimit as exc:
            return PlainTextResponse(f"{exc}\n", 429, {"connection": "close"})
        except Unauthorized as exc:
            return _unauthorized(str(exc))
        except Forbidden as exc:
            return PlainTextResponse(f"{exc}\n", 403, {"connection": "close"})
        except EventTooLarge as exc:
            return PlainTextResponse(f"{exc}\n", 413)
        except (InvalidTopic, InvalidEvent) as exc:
            return PlainTextResponse(f"{exc}\n", 400)
        except (RedisError, OSError) as exc:
            return PlainTextResponse(f"redis unavailable: {exc}\n", 503, {"retry-after": "1"})
        return JSONResponse({"id": event_id})

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        problem = await gateway.ready()
        if problem is None:
            return PlainTextResponse("ready\n")
        return PlainTextResponse(f"not ready: {problem}\n", 503)

    async def metrics(request: Request) -> Response:
        return Response(gateway.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    routes = [
        Route("/metrics", metrics),
        Route("/publish", publish, methods=["POST"]),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Mount("/", StaticFiles(directory=WEB_DIR, html=True, check_dir=False)),
    ]
    middleware = []
    cors: dict[str, Any] = {}
    if settings.cors_origins:
        any_origin = "*" in settings.cors_origins
        cors = dict(
            allow_origins=list(settings.cors_origins),
            # Credentials are never combined with `*`: that would let any site read them.
            allow_credentials=not any_origin,
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type", "last-event-id"],
            expose_headers=[TRUNCATED_HEADER, UNAVAILABLE_HEADER],
            max_age=600,
        )
        middleware.append(Middleware(CORSMiddleware, **cors))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if publisher is not None:
            await publisher.aclose()

    events: ASGIApp = EventsEndpoint(gateway, authority, slots)
    if cors:
        events = CORSMiddleware(events, **cors)
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    return StreamsFirst(events, app, settings.max_url_bytes, settings.max_header_bytes)


class StreamsFirst:
    """Send `/events` straight to its endpoint, everything else to the Starlette app.

    A stream's every write would otherwise pass through the app's error and
    exception middleware, a few microseconds each, per client, per write.

    It also refuses, before anything else runs, requests over the size limits.
    """

    def __init__(self, events: ASGIApp, app: ASGIApp, max_url: int, max_headers: int) -> None:
        self.events = events
        self.app = app
        self.max_url = max_url
        self.max_headers = max_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            url = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
            if url > self.max_url:
                reason = f"the request target is over the limit of {self.max_url} bytes"
                await _reply(scope, receive, send, reason, 414)
                return
            headers = sum(len(name) + len(value) for name, value in scope["headers"])
            if headers > self.max_headers:
                reason = f"the request headers are over the limit of {self.max_headers} bytes"
                await _reply(scope, receive, send, reason, 431)
                return
        if scope["type"] == "http" and scope["path"] == "/events":
            await self.events(scope, receive, send)
        else:
            await self.app(scope, receive, send)
