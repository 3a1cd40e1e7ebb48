"""The gateway's HTTP surface (Starlette): the routes, CORS, and the limits in front of them.

`/events` (`hub/events_endpoint.py`) and `/publish` (`hub/publish_endpoint.py`)
do the work; health, metrics and the page are answered here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from hub.auth import Authority
from hub.config import Settings
from hub.events_endpoint import UNAVAILABLE_HEADER, EventsEndpoint
from hub.gateway import TRUNCATED_HEADER, Gateway
from hub.mercure.discovery import MERCURE_PATH, metadata_route
from hub.mercure.endpoint import MercureEndpoint
from hub.mercure.gateway import MercureGateway
from hub.mercure.presence import SUBSCRIPTIONS_PATH, Presence
from hub.mercure.publish import PublishEndpoint as MercurePublishEndpoint
from hub.mercure.subscribe import SubscribeEndpoint
from hub.mercure.subscriptions_api import SubscriptionsEndpoint
from hub.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from hub.publish import EventWriter
from hub.publish_endpoint import PublishEndpoint
from hub.request_limits import ClientSlots, RequestLimits

log = logging.getLogger("hub.app")
WEB_DIR = Path(__file__).resolve().parent.parent / "web"


def create_app(gateway: Gateway) -> ASGIApp:
    settings = gateway.settings
    authority = Authority(settings)
    if authority.unusable:
        log.warning(
            "HUB_JWT_KEY cannot verify %s; tokens signed so are refused",
            ", ".join(authority.unusable),
        )
    slots = ClientSlots(settings.max_streams_per_client)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        problem = await gateway.ready()
        if problem is None:
            return PlainTextResponse("ready\n")
        return PlainTextResponse(f"not ready: {problem}\n", 503)

    async def metrics(request: Request) -> Response:
        return Response(gateway.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    writer = EventWriter(settings, gateway.primaries)
    mercure = MercureGateway(gateway, writer)
    # Off, the API still answers: 404, saying why.
    presence = Presence(mercure, authority) if settings.mercure_subscriptions == "on" else None
    subscriptions = SubscriptionsEndpoint(presence, authority, settings.public_url)
    app: ASGIApp = Starlette(
        routes=[
            Route("/metrics", metrics),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            # The collection and everything under it; the endpoint reads the raw path,
            # as a match holds `/` (sent as `%2F`).
            Route(SUBSCRIPTIONS_PATH + "{rest:path}", subscriptions),
            metadata_route(settings),
            Mount("/", StaticFiles(directory=WEB_DIR, html=True, check_dir=False)),
        ]
    )
    direct: dict[str, ASGIApp] = {
        "/events": EventsEndpoint(gateway, authority, slots),
        "/publish": PublishEndpoint(settings, authority, slots, writer),
        MERCURE_PATH: MercureEndpoint(
            SubscribeEndpoint(mercure, authority, slots),
            MercurePublishEndpoint(mercure, authority, slots),
        ),
    }
    cors = _cors_options(settings)
    if cors:
        app = CORSMiddleware(app, **cors)
        direct = {path: CORSMiddleware(endpoint, **cors) for path, endpoint in direct.items()}
    return RequestLimits(
        DirectRoutes(direct, app), settings.max_url_bytes, settings.max_header_bytes
    )


def _cors_options(settings: Settings) -> dict[str, Any]:
    if not settings.cors_origins:
        return {}
    any_origin = "*" in settings.cors_origins
    return dict(
        allow_origins=list(settings.cors_origins),
        # Credentials are never combined with `*`: that would let any site read them.
        allow_credentials=not any_origin,
        allow_methods=["GET", "POST"],
        allow_headers=["authorization", "content-type", "last-event-id", "cache-control"],
        expose_headers=[TRUNCATED_HEADER, UNAVAILABLE_HEADER, "Last-Event-ID", "WWW-Authenticate"],
        max_age=600,
    )


class DirectRoutes:
    """Send `/events` and `/publish` straight to their endpoints, the rest to the Starlette app.

    A stream's every write would otherwise pass through the app's error and
    exception middleware, a few microseconds each, per client, per write; and a
    publish through its router too, tens of microseconds per request.
    """

    def __init__(self, direct: dict[str, ASGIApp], app: ASGIApp) -> None:
        self.direct = direct
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine itself: a frame held for each open stream's life costs memory.
        if scope["type"] == "http":
            endpoint = self.direct.get(scope["path"])
            if endpoint is not None:
                return endpoint(scope, receive, send)
        return self.app(scope, receive, send)
