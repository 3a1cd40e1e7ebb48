"""What the hub relies on in its libraries, checked against the installed versions.

`hub/server.py` (uvicorn) and `hub/redis_wire.py` (redis-py) hold every such
reliance; each test here fails on the first library version that breaks one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio
import uvicorn
from processes import free_port
from starlette.types import Receive, Scope, Send

from hub import server as server_glue
from hub.connection_guard import Limits, guarded
from hub.redis_wire import WireFactory, pack

pytestmark = pytest.mark.anyio
LIMITS = Limits(max_header_bytes=65_536, header_seconds=5, body_seconds=5, linger_seconds=5)


async def test_a_wire_hands_over_replies_without_a_deadline_past_the_socket_timeout(
    redis_url: str, key_prefix: str
) -> None:
    host, port = redis_url.removeprefix("redis://").split(":")
    wires = WireFactory({"host": host, "port": int(port), "socket_timeout": 0.2})
    channel = f"{key_prefix}wire"
    replies: asyncio.Queue[Any] = asyncio.Queue()

    def hand_over(batch: list[Any]) -> None:
        for reply in batch:
            replies.put_nowait(reply)

    wire = await wires.connect(hand_over)
    try:
        wire.send([("SUBSCRIBE", channel)])
        assert await asyncio.wait_for(replies.get(), 10) == [b"subscribe", channel.encode(), 1], (
            "RESP2 replies are plain lists"
        )

        async def publish_later() -> None:
            await asyncio.sleep(0.6)  # three socket timeouts: the wire must not give up
            async with redis.asyncio.Redis.from_url(redis_url) as client:
                await client.publish(channel, b"late")

        publishing = asyncio.create_task(publish_later())
        reply = await asyncio.wait_for(replies.get(), 10)
        await publishing
        assert reply == [b"message", channel.encode(), b"late"]
        assert not wire.closed.done()
    finally:
        await wire.close()
        await wires.aclose()


async def test_a_wire_reports_its_connection_lost_and_error_replies_as_exceptions(
    redis_url: str, key_prefix: str
) -> None:
    host, port = redis_url.removeprefix("redis://").split(":")
    wires = WireFactory({"host": host, "port": int(port)})
    replies: list[Any] = []
    wire = await wires.connect(replies.extend)
    try:
        wire.send([("NO-SUCH-COMMAND",), ("CLIENT", "ID")])
        for _ in range(100):
            if len(replies) == 2:
                break
            await asyncio.sleep(0.05)
        assert isinstance(replies[0], redis.exceptions.ResponseError)
        assert isinstance(replies[1], int)
        async with redis.asyncio.Redis.from_url(redis_url) as client:
            await client.execute_command("CLIENT", "KILL", "ID", replies[1])  # type: ignore[no-untyped-call]
        with pytest.raises(redis.exceptions.ConnectionError):
            await asyncio.wait_for(wire.closed, 10)
    finally:
        await wire.close()
        await wires.aclose()


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[tuple[uvicorn.Server, int]]:
    """`app` on an in-process uvicorn, as the gateway runs it (httptools, guarded)."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http=guarded(server_glue.HTTP_PROTOCOL, LIMITS),
        lifespan="off", log_config=None, access_log=False,
    )  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await asyncio.wait_for(server_glue.listening(server), 10)
        yield server, port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def get(port: int, path: str = "/") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_a_response_write_finishes_without_waiting_while_the_socket_drains() -> None:
    finished_eagerly: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        rest = server_glue.run_eagerly(
            send({"type": "http.response.body", "body": b"a", "more_body": True})
        )
        finished_eagerly.append(rest is None)
        if rest is not None:
            await rest
        await send({"type": "http.response.body", "body": b"b"})

    async with serving(app) as (_, port):
        answer = await get(port)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(
        b"1\r\na\r\n1\r\nb\r\n0\r\n\r\n"
    ), answer
    assert finished_eagerly == [True], "uvicorn's send no longer finishes on the spot"


async def test_the_server_flags_the_gateway_watches_turn_on_with_a_real_sigterm() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("no request is made")

    # As `sse-hub` does: uvicorn raises the signal again once it has stopped.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        async with serving(app) as (server, _):
            assert server.started
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(server_glue.exit_requested(server), 5)
    finally:
        signal.signal(signal.SIGTERM, previous)


async def test_the_line_logged_for_an_unfinished_response_is_the_one_the_logs_hide(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})

    with caplog.at_level(logging.ERROR, logger="uvicorn.error"):
        async with serving(app) as (_, port):
            await get(port)
    assert server_glue.UNFINISHED_RESPONSE in [record.getMessage() for record in caplog.records]


@pytest.mark.parametrize(
    "command",
    [("PING",), ("SUBSCRIBE", "a", "b/ü"), ("XADD", "k", "*", "d", b"\x00\r\n\xff", 7, -1)],
)
def test_the_wire_packs_commands_as_redis_py_does(command: tuple[str | bytes | int, ...]) -> None:
    connection = redis.asyncio.Connection()
    assert pack(command) == b"".join(connection.pack_command(*command))
