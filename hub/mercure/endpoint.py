"""`/.well-known/mercure`: subscribe with GET, publish with POST; and the hub's metadata."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from hub.config import Settings
from hub.mercure.publish import PublishEndpoint
from hub.mercure.subscribe import SubscribeEndpoint
from hub.request_limits import reply

MERCURE_PATH = "/.well-known/mercure"


class MercureEndpoint:
    def __init__(self, subscribe: SubscribeEndpoint, publish: PublishEndpoint) -> None:
        self.subscribe = subscribe
        self.publish = publish

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method in ("GET", "HEAD"):
            await self.subscribe(scope, receive, send)
        elif method == "POST":
            response = await self.publish.handle(Request(scope, receive))
            await response(scope, receive, send)
        else:
            await reply(scope, receive, send, f"use GET or POST for {MERCURE_PATH}", 405)


METADATA_PATH = "/.well-known/oauth-protected-resource" + MERCURE_PATH
MERCURE_VERSION = 8
"""The revision of the protocol served (draft-dunglas-mercure-08); the older dialect too."""


def resource_metadata(settings: Settings) -> dict[str, object]:
    """The hub's OAuth 2.0 protected resource metadata (RFC 9728), as the spec asks."""
    return {
        "resource": settings.jwt_audience or settings.public_url.rstrip("/") + MERCURE_PATH,
        "bearer_methods_supported": ["header", "query"],
        "mercure_cookie": True,
        "mercure_version": MERCURE_VERSION,
    }


def metadata_route(settings: Settings) -> Route:
    document = resource_metadata(settings)

    async def metadata(request: Request) -> Response:
        return JSONResponse(document)

    return Route(METADATA_PATH, metadata)
