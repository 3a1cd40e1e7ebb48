"""The tutorial baseline: one Redis pub/sub subscription per client, served with sse-starlette.

This is what a Python developer following the usual guides writes. It reads the same
channels the hub's publish script announces on (`Keys(prefix).channel(topic)`, message
"<id>\\n<prev>\\n<type>\\n<data>") and sends each as an SSE `id` + `data` frame. It has no
history: a client that reconnects misses whatever was published meanwhile.

Run: uvicorn --app-dir bench baseline_app:app  (HUB_REDIS_URL, HUB_KEY_PREFIX as for the hub)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from hub.config import Settings
from hub.topics import InvalidTopic, Keys, check_topic


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    settings = Settings.from_env()
    # every client holds a connection of its own: the default pool stops at 100
    client = aioredis.Redis.from_url(
        settings.redis_url or "redis://127.0.0.1:6379", max_connections=50_000
    )
    try:
        yield {"redis": client, "keys": Keys(settings.key_prefix)}
    finally:
        await client.aclose()


async def events(request: Request) -> Response:
    try:
        topic = check_topic(request.query_params.get("topic", ""))
    except InvalidTopic as exc:
        return PlainTextResponse(str(exc), status_code=400)
    client: aioredis.Redis = request.state.redis
    channel = request.state.keys.channel(topic)

    async def stream() -> AsyncIterator[dict[str, str]]:
        pubsub = client.pubsub()
        await pubsub.subscribe(channel)
        try:
            async for message in pubsub.listen():
                if message["type"] != "message":
                    continue
                sid, _prev, _type, data = message["data"].split(b"\n", 3)
                yield {"id": sid.decode(), "data": data.decode()}
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    return EventSourceResponse(stream(), ping=15)


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


app = Starlette(
    routes=[Route("/events", events), Route("/healthz", healthz)],
    lifespan=lifespan,
)
