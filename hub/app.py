"""The gateway's HTTP surface (Starlette): `/events`, `/publish`, health, and the page."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.datastructures import Headers, QueryParams
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from hub import cursor, sse
from hub.auth import Authority, Forbidden, Unauthorized
from hub.config import Settings
from hub.events import InvalidEvent
from hub.fanout import Unavailable
from hub.gateway import TRUNCATED_HEADER, Gateway
from hub.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from hub.stream import Ending
from hub.topics import InvalidTopic, check_topic
from publisher.client import AsyncPublisher

UNAVAILABLE_HEADER = "Hub-Unavailable"
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class BadRequest(Exception):
    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


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

    def __init__(self, gateway: Gateway, authority: Authority) -> None:
        self.gateway = gateway
        self.authority = authority
        self.streams_by_address: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        if request.method not in ("GET", "HEAD"):
            await _reply(scope, receive, send, "use GET for /events", 405)
            return
        address = request.client.host if request.client else ""
        limit = self.gateway.settings.max_streams_per_client
        if limit and self.streams_by_address[address] >= limit:
            await _reply(scope, receive, send, f"over the limit of {limit} streams per client", 429)
            return
        self.streams_by_address[address] += 1
        try:
            await self._stream(request, scope, receive, send)
        finally:
            self.streams_by_address[address] -= 1
            if not self.streams_by_address[address]:
                del self.streams_by_address[address]

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
            return PlainTextResponse(
                "send Authorization: Bearer <token>\n", 401, {"www-authenticate": "Bearer"}
            )
        if not fixed_token(token) and not authority.enabled:
            return PlainTextResponse("the token is not valid\n", 403)
        try:
            topic, data, event_type = await _read_publish_body(request, settings)
            if not fixed_token(token):
                authority.check_publish(topic, token)
            event_id = await publisher.publish(topic, data, event_type)
        except BadRequest as exc:
            return PlainTextResponse(exc.reason + "\n", exc.status)
        except Unauthorized as exc:
            return PlainTextResponse(f"{exc}\n", 401, {"www-authenticate": "Bearer"})
        except Forbidden as exc:
            return PlainTextResponse(f"{exc}\n", 403)
        except (InvalidTopic, InvalidEvent) as exc:
            status = 413 if "over the limit" in str(exc) else 400
            return PlainTextResponse(f"{exc}\n", status)
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

    events: ASGIApp = EventsEndpoint(gateway, authority)
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


async def _read_publish_body(request: Request, settings: Settings) -> tuple[str, str, str]:
    # JSON may escape every character six-fold; anything larger is refused unread.
    limit = settings.max_event_bytes * 6 + 65_536
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadRequest(f"request body is over the limit of {limit} bytes", 413)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise BadRequest(f"request body is over the limit of {limit} bytes", 413)
    except ClientDisconnect:
        raise BadRequest("the request body did not arrive") from None
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:
            fields = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("the body is not valid JSON") from None
        if not isinstance(fields, dict):
            raise BadRequest('send a JSON object: {"topic": ..., "data": ...}')
    elif content_type in ("application/x-www-form-urlencoded", ""):
        try:
            fields = dict(QueryParams(body.decode("utf-8")))
        except UnicodeDecodeError:
            raise BadRequest("the form is not valid UTF-8") from None
    else:
        raise BadRequest("send application/json or a form", 415)
    topic, data, event_type = fields.get("topic"), fields.get("data"), fields.get("type", "")
    if not isinstance(topic, str) or not topic:
        raise BadRequest("the field 'topic' is missing")
    if data is None:
        raise BadRequest("the field 'data' is missing")
    if not isinstance(data, str):  # a JSON value is sent as its JSON text
        data = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    if not isinstance(event_type, str):
        raise BadRequest("the field 'type' must be a string")
    return topic, data, event_type
