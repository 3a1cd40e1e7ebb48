"""`/.well-known/mercure/subscriptions`: the active subscriptions of every gateway, in JSON-LD.

A client that keeps a list of who is watching reads it here once, then follows
the subscription events from the `lastEventID` the answer gives.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, unquote_to_bytes

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from hub.auth import Authority, Forbidden, Unauthorized, challenge
from hub.mercure.presence import CONTEXT, REDIS_ERRORS, SUBSCRIPTIONS_PATH, Presence, encoded

MEDIA_TYPE: Final = "application/ld+json"


@dataclass(frozen=True, slots=True)
class _Asked:
    """What a request names: all subscriptions, those of one matcher, or one."""

    path: str
    """The path in its canonical encoding: the topic to authorize, and the `id`."""
    match_type: str | None = None
    match: str | None = None
    subscriber: str | None = None


def _asked(raw_path: bytes) -> _Asked | None:
    """The request's target, from its path as sent (a match holds `/`, encoded as `%2F`)."""
    prefix = SUBSCRIPTIONS_PATH.encode()
    if not raw_path.startswith(prefix):
        return None
    rest = raw_path[len(prefix) :]
    if not rest:
        return _Asked(SUBSCRIPTIONS_PATH)
    parts = rest.split(b"/")
    if parts[0] != b"" or len(parts) not in (3, 4):
        return None
    try:
        values = [unquote_to_bytes(part).decode() for part in parts[1:]]
    except UnicodeDecodeError:
        return None
    if any(not value for value in values):
        return None
    path = SUBSCRIPTIONS_PATH + "".join("/" + encoded(value) for value in values)
    if len(values) == 2:
        return _Asked(path, values[0], values[1])
    return _Asked(path, values[0], values[1], values[2])


class SubscriptionsEndpoint:
    """`GET /.well-known/mercure/subscriptions[/{matchType}/{match}[/{subscriber}]]`.

    `presence` is None when `HUB_MERCURE_SUBSCRIPTIONS=off`: the API is not there.
    """

    def __init__(self, presence: Presence | None, authority: Authority, public_url: str) -> None:
        self.presence = presence
        self.authority = authority
        self.link = f'<{public_url}.well-known/mercure>; rel="mercure"'

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self._respond(scope)
        await response(scope, receive, send)

    async def _respond(self, scope: Scope) -> Response:
        if self.presence is None:
            return _text("the subscriptions API is off (HUB_MERCURE_SUBSCRIPTIONS=off)", 404)
        if scope["method"] not in ("GET", "HEAD"):
            return _text(f"use GET for {SUBSCRIPTIONS_PATH}", 405, {"allow": "GET, HEAD"})
        raw_path = scope.get("raw_path") or quote(scope["path"]).encode()
        asked = _asked(raw_path.partition(b"?")[0])
        if asked is None:
            return _text(
                f"not a subscriptions resource: use {SUBSCRIPTIONS_PATH}, "
                f"{SUBSCRIPTIONS_PATH}/{{matchType}}/{{match}} or "
                f"{SUBSCRIPTIONS_PATH}/{{matchType}}/{{match}}/{{subscriber}}",
                404,
            )
        refusal = self._refusal(Request(scope), asked)
        if refusal is not None:
            return refusal
        try:
            # The position first: an update after it may be in the list already
            # (applying it again changes nothing), none before it can be missing.
            last_event_id = await self.presence.last_event_id()
            documents = await self.presence.subscriptions()
        except REDIS_ERRORS as exc:
            return _text(
                f"redis unavailable: {exc or type(exc).__name__}", 503, {"retry-after": "1"}
            )
        if asked.subscriber is not None:
            for document in documents:
                if (
                    document.get("matchType"),
                    document.get("match"),
                    document.get("subscriber"),
                ) == (
                    asked.match_type,
                    asked.match,
                    asked.subscriber,
                ):
                    return self._document({**document, "lastEventID": last_event_id})
            return _text("no such subscription", 404)
        if asked.match_type is not None:
            documents = [
                document
                for document in documents
                if document.get("matchType") == asked.match_type
                and document.get("match") == asked.match
            ]
        return self._document(
            {
                "@context": CONTEXT,
                "id": asked.path,
                "type": "Subscriptions",
                "lastEventID": last_event_id,
                "subscriptions": [_without_context(document) for document in documents],
            }
        )

    def _refusal(self, request: Request, asked: _Asked) -> Response | None:
        """401 or 403 unless the token lets its bearer subscribe to the requested path."""
        token = self.authority.token_of(request.headers, request.cookies, request.query_params)
        try:
            if token is None:
                raise Unauthorized("a token is required for the subscriptions API")
            grant = self.authority.grant_of(token)
            if grant is None:
                raise Unauthorized("a token is required for the subscriptions API")
            if not grant.can_subscribe(asked.path):
                raise Forbidden(f"the token does not allow subscribing to {asked.path}")
        except (Unauthorized, Forbidden) as exc:
            status = 401 if isinstance(exc, Unauthorized) else 403
            return _text(str(exc), status, {"www-authenticate": challenge(exc)})
        return None

    def _document(self, body: dict[str, Any]) -> Response:
        return Response(
            json.dumps(body, ensure_ascii=False).encode(),
            headers={"link": self.link, "cache-control": "must-revalidate"},
            media_type=MEDIA_TYPE,
        )


def _without_context(document: dict[str, Any]) -> dict[str, Any]:
    # The collection's own `@context` covers its members.
    return {key: value for key, value in document.items() if key != "@context"}


def _text(reason: str, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(reason + "\n", status, headers=headers, media_type="text/plain; charset=utf-8")
