"""The body of a `POST /publish`: read within its limits, then parsed within others.

Nothing here runs before the caller has checked the request's token. The body
is refused unread when it declares more than the limit, and read no further
once it passes it. A JSON body is measured before it is parsed: how many
arrays, objects and members it holds, and how deep they nest, are counted
with a pass over its bytes outside strings (regular-expression and `bytes`
methods, all in C), so no body can make the parser recurse or allocate
without bound, nor hold the event loop for long.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from starlette.datastructures import QueryParams
from starlette.requests import ClientDisconnect, Request

from hub.config import Settings

_NOT_A_BRACKET = bytes(byte for byte in range(256) if byte not in b"[]{}")


class BadRequest(Exception):
    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class PublishRequest:
    topic: str
    data: str
    event_type: str


def body_limit(settings: Settings) -> int:
    # JSON may escape every byte of the data six-fold (\u0000).
    return settings.max_event_bytes * 6 + 65_536


async def read_publish_request(request: Request, settings: Settings) -> PublishRequest:
    body = await _read_body(request, body_limit(settings))
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        fields = parse_json(body, settings.max_json_depth, settings.max_json_values)
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
    return PublishRequest(topic, data, event_type)


async def _read_body(request: Request, limit: int) -> bytes:
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
    return bytes(body)


def parse_json(body: bytes, max_depth: int, max_values: int) -> object:
    """The JSON value of `body`, or `BadRequest` if it is not JSON or is too large a structure."""
    too_large = BadRequest(
        f"the JSON holds over {max_values} arrays, objects and members; "
        "send large structures as a string",
        413,
    )
    # Escaped backslashes go first, then escaped quotes (as a parser pairs them); what
    # is left between quotes is strings, and what is outside them the structure.
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    if unescaped.count(b'"') > 4 * max_values:  # a string is a member's key or value
        raise too_large
    structure = b"".join(unescaped.split(b'"')[0::2])
    brackets = structure.translate(None, _NOT_A_BRACKET)
    if len(brackets) // 2 + structure.count(b",") > max_values:
        raise too_large
    depth = deepest = 0
    for byte in brackets:
        depth += 1 if byte in b"[{" else -1
        deepest = max(deepest, depth)
    if deepest > max_depth:
        raise BadRequest(f"the JSON nests deeper than {max_depth} levels")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequest("the body is not valid JSON") from None
