"""Discovery: how clients find the hub and learn how to talk to it.

Applications point browsers to the hub with a `Link: <https://hub.example/.well-known/mercure>;
rel="mercure"` header on their own responses (the README shows it); the hub serves its
OAuth 2.0 protected resource metadata (RFC 9728) at the path the spec derives from its URL,
and names that document in its `WWW-Authenticate` challenges.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hub.config import Settings

MERCURE_PATH = "/.well-known/mercure"
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


def metadata_url(settings: Settings) -> str:
    return settings.public_url.rstrip("/") + METADATA_PATH
