"""`/.well-known/mercure`: subscribe with GET, publish with POST."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from hub.mercure.discovery import MERCURE_PATH
from hub.mercure.publish import PublishEndpoint
from hub.mercure.subscribe import SubscribeEndpoint
from hub.request_limits import reply


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
