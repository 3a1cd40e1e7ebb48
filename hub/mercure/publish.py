"""`POST /.well-known/mercure`: an update, form-encoded, answered with its ID.

Fields: `topic` (the first is the canonical topic; more are the older
dialect's alternates, and the update goes to subscribers of any of them),
`data`, `private` (its presence makes the update private), `id` (the
publisher's own ID), `type` and `retry`. The publisher's token must allow
publishing to every topic it names; the fixed `HUB_PUBLISH_TOKEN` may publish
anywhere. A token that came in a cookie is only taken from the hub's own origin
or one of `HUB_CORS_ORIGINS`: a cookie goes with any site's form.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from urllib.parse import unquote_to_bytes, urlsplit

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from hub.auth import QUERY_NAMES, Authority, Forbidden, Grant, Unauthorized, challenge
from hub.mercure.discovery import metadata_url
from hub.mercure.gateway import MercureGateway
from hub.mercure.matchers import WILDCARD, InvalidTopic, check_topic, in_reserved_namespace
from hub.mercure.record import Update
from hub.publish_request import BadRequest, body_limit, read_body
from hub.request_limits import ClientSlots, OverLimit

RESERVED_TYPE = "mercure"
RETRY_MAX = 2**31 - 1


class PublishEndpoint:
    def __init__(self, mercure: MercureGateway, authority: Authority, slots: ClientSlots) -> None:
        self.mercure = mercure
        self.settings = mercure.settings
        self.authority = authority
        self.slots = slots
        self._metadata = metadata_url(self.settings)
        self._fixed_token = self.settings.publish_token.encode()
        self._body_limit = body_limit(self.settings)
        origins = {_origin(self.settings.public_url), *self.settings.cors_origins}
        self._origins = frozenset(origin for origin in origins if origin)

    async def handle(self, request: Request) -> Response:
        try:
            grant = self._grant(request)
            with self.slots.hold(request.scope):
                body = await read_body(request, self._body_limit)
            update = self._update(body)
            if grant is not None:
                refused = [topic for topic in update.topics if not grant.can_publish(topic)]
                if refused:
                    raise Forbidden(f"the token does not allow publishing to {refused[0]}")
            update_id = await self.mercure.publish(update)
        except BadRequest as exc:
            return _text(exc.reason, exc.status, {"connection": "close"})
        except OverLimit as exc:
            return _text(str(exc), 429)
        except (Unauthorized, Forbidden) as exc:
            status = 401 if isinstance(exc, Unauthorized) else 403
            return _text(str(exc), status, {"www-authenticate": challenge(exc, self._metadata)})
        except (RedisError, OSError) as exc:
            return _text(f"redis unavailable: {exc}", 503, {"retry-after": "1"})
        return PlainTextResponse(update_id, media_type="text/plain; charset=utf-8")

    def _grant(self, request: Request) -> Grant | None:
        """What the request may publish to: None for the fixed token, which may publish anywhere."""
        headers = request.headers
        # Most publishers send the header: then neither the query nor the cookies are parsed.
        query: Mapping[str, str] = {}
        cookies: Mapping[str, str] = {}
        if not headers.get("authorization"):
            query = request.query_params
            if not any(name in query for name in QUERY_NAMES):
                cookies = request.cookies
        token = self.authority.token_of(headers, cookies, query)
        from_cookie = bool(cookies) and token is not None
        if token is None:
            raise Unauthorized("a token is required to publish")
        if self._fixed_token and secrets.compare_digest(token.encode(), self._fixed_token):
            return None
        if not self.authority.enabled:
            off = (
                ""
                if self._fixed_token
                else " (publishing is off: set HUB_JWT_KEY or HUB_PUBLISH_TOKEN)"
            )
            raise Unauthorized(f"the token is not valid{off}", "invalid_token")
        if from_cookie:
            source = headers.get("origin") or _origin(headers.get("referer", ""))
            if source not in self._origins:
                raise Forbidden(
                    "a token in a cookie is only taken from the hub's own origin or "
                    "HUB_CORS_ORIGINS (send Origin or Referer)"
                )
        grant = self.authority.grant_of(token)
        assert grant is not None
        return grant

    def _update(self, body: bytes) -> Update:
        try:
            fields = form_fields(body)
        except UnicodeDecodeError:
            raise BadRequest("the body is not UTF-8 form data") from None
        topics: list[str] = []
        given: dict[str, str] = {}
        for name, value in fields:
            if name == "topic":
                topics.append(self._topic(value))
            elif name in ("data", "private", "id", "type", "retry"):
                if name in given:
                    raise BadRequest(f"the {name} field is given more than once")
                given[name] = value
        if not topics:
            raise BadRequest("name the update's topic: topic=IRI")
        data = given.get("data", "")
        size = len(data.encode())
        if size > self.settings.max_event_bytes:
            raise BadRequest(
                f"data is {size} bytes, over the limit of {self.settings.max_event_bytes}", 413
            )
        return Update(
            tuple(dict.fromkeys(topics)),
            data,
            private="private" in given,
            id=self._id(given.get("id", "")),
            type=self._type(given.get("type", "")),
            retry=self._retry(given.get("retry")),
        )

    def _topic(self, text: str) -> str:
        try:
            topic = check_topic(text, self.settings.mercure_max_topic_bytes)
        except InvalidTopic as exc:
            status = 413 if len(text.encode("utf-8", "replace")) > self._longest else 400
            raise BadRequest(str(exc), status) from None
        if topic == WILDCARD:
            raise BadRequest("* matches every topic: it cannot be an update's topic")
        if in_reserved_namespace(topic, self.settings.public_url):
            raise Forbidden(
                "topics under /.well-known/mercure are the hub's own (subscription events)"
            )
        return topic

    @property
    def _longest(self) -> int:
        return self.settings.mercure_max_topic_bytes

    def _id(self, text: str) -> str:
        if not text:
            return ""
        if len(text.encode()) > self._longest:
            raise BadRequest(f"the id is over the limit of {self._longest} bytes", 413)
        if text.startswith("#"):
            raise BadRequest("an id may not start with #: those are the hub's own")
        if any(ch in text for ch in "\r\n\0"):
            raise BadRequest("an id may not hold a line break or NUL")
        return text

    def _type(self, text: str) -> str:
        if len(text.encode()) > self._longest:
            raise BadRequest(f"the type is over the limit of {self._longest} bytes", 413)
        if "\r" in text or "\n" in text:
            raise BadRequest("the type may not hold a line break")
        if text == RESERVED_TYPE:
            raise BadRequest("the type mercure is the hub's own")
        return text

    def _retry(self, text: str | None) -> int | None:
        if text is None:
            return None
        if not (text.isascii() and text.isdigit()) or int(text) > RETRY_MAX:
            raise BadRequest(f"retry must be a number of milliseconds, got {text[:20]!r}")
        return int(text)


def form_fields(body: bytes) -> list[tuple[str, str]]:
    """The (name, value) pairs of an `application/x-www-form-urlencoded` body, in order.

    `parse_qsl`'s answer, at a fraction of its cost: most fields need no decoding.
    `UnicodeDecodeError` when the body, or a percent-encoded field, is not UTF-8.
    """
    fields = []
    for pair in body.split(b"&"):
        if not pair:
            continue
        name, _, value = pair.partition(b"=")
        if b"%" in name or b"+" in name:
            name = unquote_to_bytes(name.replace(b"+", b" "))
        if b"%" in value or b"+" in value:
            value = unquote_to_bytes(value.replace(b"+", b" "))
        fields.append((name.decode("utf-8"), value.decode("utf-8")))
    return fields


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def _text(reason: str, status: int, headers: dict[str, str] | None = None) -> Response:
    return PlainTextResponse(f"{reason}\n", status, headers)
