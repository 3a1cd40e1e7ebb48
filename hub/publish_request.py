"""The body of a `POST /publish`: read within its limits, then parsed within others.

Nothing here runs before the caller has checked the request's token. A body
holds one event (a JSON object, or a form) or a batch: a JSON array of event
objects, or NDJSON (`application/x-ndjson`, one object per line). A JSON body
is one or the other by its first character, which sets the size limit it is
held to as it arrives. The body is refused unread when it declares more than
the limit, and read no further once it passes it.

A JSON body is measured before it is parsed: how many arrays, objects and
members it holds, and how deep they nest, are counted with a pass over its
bytes outside strings (regular-expression and `bytes` methods, all in C), so
no body can make the parser recurse or allocate without bound, nor hold the
event loop for long. A batch may hold `BATCH_VALUES_PER_EVENT` more for each
event it may hold (an event's own object and members take four), so a full
batch of plain events fits, and its events' data shares `HUB_MAX_JSON_VALUES`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import NamedTuple

from starlette.datastructures import QueryParams
from starlette.requests import Request

from hub.config import Settings

BATCH_VALUES_PER_EVENT = 16
_NOT_A_BRACKET = bytes(byte for byte in range(256) if byte not in b"[]{}")
_NOT_SPACE = re.compile(rb"[^ \t\r\n]")
_NON_BLANK_LINE = re.compile(rb"[^ \t\r\n][^\n]*")
_ONE_EVENT = '{"topic": ..., "data": ...}'
NEWLINE = b"\n"


class BadRequest(Exception):
    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class PublishRequest(NamedTuple):
    topic: str
    data: str
    event_type: str


Batch = list[PublishRequest | BadRequest]
"""A batch's events in order; one that lacks a field, or has one of the wrong kind, is
the `BadRequest` saying so (the others are still published)."""


def body_limit(settings: Settings) -> int:
    """The largest body of a one-event request."""
    # JSON may escape every byte of the data six-fold (\u0000).
    return settings.max_event_bytes * 6 + 65_536


class Limits:
    """The limits a `POST /publish` body is read and parsed within, from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.event_body = body_limit(settings)
        self.batch_body = settings.max_batch_bytes
        self.batch_events = settings.max_batch_events
        self.depth = settings.max_json_depth
        self.values = settings.max_json_values


async def read_publish_request(request: Request, limits: Limits) -> PublishRequest | Batch:
    """One event, or a batch; `BadRequest` for a body that is neither."""
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type == "application/json":
        body = await read_body(request, limits.event_body, limits.batch_body)
        match = _NOT_SPACE.search(body)
        if match is not None and body[match.start()] == ord("["):
            items = parse_json(body, limits.depth + 1, limits.values, limits.batch_events)
            assert isinstance(items, list)  # a valid JSON text that starts with [
            return _batch(items, limits, lambda n: f"event {n} of the batch")
        fields = parse_json(body, limits.depth, limits.values)
        if not isinstance(fields, dict):
            raise BadRequest(f"send a JSON object: {_ONE_EVENT}, or an array of them")
        return _event(fields)
    if content_type == "application/x-ndjson":
        return _ndjson_batch(await read_body(request, limits.batch_body), limits)
    if content_type in ("application/x-www-form-urlencoded", ""):
        body = await read_body(request, limits.event_body)
        try:
            return _event(dict(QueryParams(body.decode("utf-8"))))
        except UnicodeDecodeError:
            raise BadRequest("the form is not valid UTF-8") from None
    raise BadRequest("send application/json, application/x-ndjson or a form", 415)


def _event(fields: dict[str, object]) -> PublishRequest:
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


def _batch(items: list[object], limits: Limits, name: Callable[[int], str]) -> Batch:
    """The events of a batch; `name(n)` names item n in a reason."""
    if not items:
        raise BadRequest("the batch is empty: send at least one event")
    if len(items) > limits.batch_events:
        raise BadRequest(
            f"the batch holds {len(items)} events, over the limit of {limits.batch_events}", 413
        )
    events: Batch = []
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequest(f"{name(n)} is not a JSON object: send {_ONE_EVENT}")
        try:
            events.append(_event(item))
        except BadRequest as exc:
            events.append(exc)
    return events


def _ndjson_batch(body: bytes, limits: Limits) -> Batch:
    lines: list[re.Match[bytes]] = []
    for match in _NON_BLANK_LINE.finditer(body):  # blank lines are skipped in C
        if len(lines) == limits.batch_events:
            raise BadRequest(f"the batch holds over {limits.batch_events} events, the limit", 413)
        lines.append(match)
    measure_json(body, limits.depth, limits.values, limits.batch_events)

    def name(n: int) -> str:
        return f"line {body.count(NEWLINE, 0, lines[n].start()) + 1}"

    items: list[object] = []
    for match in lines:
        try:
            items.append(json.loads(match[0]))
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise BadRequest(f"{name(len(items))} is not valid JSON") from None
    return _batch(items, limits, name)


async def read_body(request: Request, limit: int, array_limit: int | None = None) -> bytes:
    """The body, within `limit`; within `array_limit` instead if it is a JSON array."""
    most = limit if array_limit is None else max(limit, array_limit)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > most:
        raise BadRequest(f"request body is over the limit of {most} bytes", 413)
    body = bytearray()
    chosen = limit if array_limit is None else None  # known once the first character is in
    receive = request.receive
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise BadRequest("the request body did not arrive")
        scanned = len(body)
        body += message.get("body", b"")
        if chosen is None and (first := _NOT_SPACE.search(body, scanned)) is not None:
            chosen = array_limit if body[first.start()] == ord("[") else limit
        if len(body) > (most if chosen is None else chosen):
            raise BadRequest(f"request body is over the limit of {chosen or most} bytes", 413)
        if not message.get("more_body", False):
            return bytes(body)


def measure_json(body: bytes, max_depth: int, max_values: int, events: int = 0) -> None:
    """`BadRequest` unless `body` holds at most `max_values` arrays, objects and members
    (and `BATCH_VALUES_PER_EVENT` more for each of the `events` a batch may hold), nested
    at most `max_depth` deep (each line of NDJSON counts from the top)."""
    besides = f", besides {BATCH_VALUES_PER_EVENT} for each of up to {events} events"
    too_large = BadRequest(
        f"the JSON holds over {max_values} arrays, objects and members"
        f"{besides if events else ''}; send large structures as a string",
        413,
    )
    max_values += BATCH_VALUES_PER_EVENT * events
    openings = body.count(b"[") + body.count(b"{")
    if openings <= max_depth and openings + body.count(b",") <= max_values:
        return  # too few brackets and commas, even counting those in strings
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
        # Never below the top: a stray closing bracket must not hide the nesting after it.
        depth = depth + 1 if byte in b"[{" else max(depth - 1, 0)
        deepest = max(deepest, depth)
    if deepest > max_depth:
        raise BadRequest(f"the JSON nests deeper than {max_depth} levels")


def parse_json(body: bytes, max_depth: int, max_values: int, events: int = 0) -> object:
    """The JSON value of `body`, or `BadRequest` if it is not JSON or is too large a structure
    (see `measure_json`)."""
    measure_json(body, max_depth, max_values, events)
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequest("the body is not valid JSON") from None
