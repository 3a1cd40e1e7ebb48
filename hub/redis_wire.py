"""A Redis connection whose replies arrive as callbacks: the hub's one use of redis-py below its client API.

The gateway's pub/sub reader must own its reconnect loop, and it must cost as
little per message as the system calls do: redis-py's `PubSub` offers neither
(redis/redis-py#2089, #3979), and reading reply by reply through its
connection costs a coroutine wake-up per message. So redis-py makes the
connection (address, TLS, `AUTH`/`HELLO`, with the node's options) and the
wire then takes its transport over: every chunk of bytes the socket delivers
is parsed at once with hiredis, and all the complete replies in it go to the
listener in one call, from the event loop's own I/O callback.
The write path's pipelines (`exchange`) take one of redis-py's pooled
connections and go below its `Pipeline` in the same way.
Everything that relies on how redis-py does that lives here, and
tests/test_library_adapters.py checks it against the installed version (the
connection's transport is reachable once connected, and replies come as RESP2
lists).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
import redis.asyncio
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, ResponseError

Command = Sequence[str | bytes | int]


def pack(command: Command) -> bytes:
    """One command in the Redis protocol (RESP): a few byte operations per word, where
    redis-py's packer costs microseconds (a join storm subscribes thousands of channels)."""
    parts = [b"*%d\r\n" % len(command)]
    for word in command:
        data = (
            word.encode()
            if isinstance(word, str)
            else b"%d" % word
            if isinstance(word, int)
            else word
        )
        parts += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(parts)


Replies = Callable[[list[Any]], None]
"""Receives every reply that a chunk of bytes completed, oldest first; an error reply is
the exception redis-py would raise for it (`MovedError`, `ResponseError`...), not raised."""


GATHER_SECONDS = 0.002
"""While replies come closer together than this, the wire reads at most once per this
long: each read then brings many, and its costs (the poll, the system call, the
clients' writes being gathered per read) are shared by all of them. A lone reply
is read at once."""


class _Feed(asyncio.Protocol):
    def __init__(
        self, transport: asyncio.ReadTransport, on_replies: Replies, closed: asyncio.Future[None]
    ) -> None:
        self._reader = hiredis.Reader(
            protocolError=InvalidResponse, replyError=BaseParser.parse_error
        )
        self._transport = transport
        self._on_replies = on_replies
        self._closed = closed
        self._loop = asyncio.get_running_loop()
        self._last_read = -GATHER_SECONDS
        self._paused = False

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        replies = []
        try:
            reply = reader.gets()
            while reply is not False:
                replies.append(reply)
                reply = reader.gets()
        except InvalidResponse as exc:
            self._close(exc)
        if replies:
            self._on_replies(replies)
        now = self._loop.time()
        if now - self._last_read < GATHER_SECONDS and not self._paused:
            self._paused = True
            self._transport.pause_reading()
            self._loop.call_at(self._last_read + GATHER_SECONDS, self._resume)
        self._last_read = now

    def _resume(self) -> None:
        self._paused = False
        if not self._closed.done():
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._close(RedisConnectionError(f"connection lost: {exc or 'closed'}"))

    def _close(self, exc: Exception) -> None:
        if not self._closed.done():
            self._closed.set_exception(exc)


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


class Wire:
    """One connection: `send` writes commands, its replies go to the callback it was made
    with, and `closed` fails with the reason once the connection is lost."""

    def __init__(self, connection: redis.asyncio.Connection) -> None:
        self._connection = connection
        self._transport: asyncio.WriteTransport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Retrieved at once: nobody need wait for a wire that is closed on purpose.
        self.closed.add_done_callback(_retrieve)

    def send(self, commands: Sequence[Command]) -> None:
        """Queue `commands` for sending; a lost connection shows in `closed`."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(b"".join(map(pack, commands)))

    async def close(self) -> None:
        # Once the wire has the transport, redis-py's protocol never hears it close:
        # waiting for that would time out.
        await self._connection.disconnect(nowait=self._transport is not None)
        if not self.closed.done():
            self.closed.set_exception(RedisConnectionError("closed"))


class WireFactory:
    """Connections to one server, with the options of its `Node` (address, TLS, user)."""

    def __init__(self, options: dict[str, Any]) -> None:
        # RESP2 keeps pub/sub messages plain replies, whatever the client's default.
        self._pool = redis.asyncio.ConnectionPool(**options, protocol=2)

    async def connect(self, on_replies: Replies) -> Wire:
        """A connected wire whose replies go to `on_replies`."""
        connection: redis.asyncio.Connection = self._pool.make_connection()  # type: ignore[no-untyped-call]
        wire = Wire(connection)
        try:
            await connection.connect()  # type: ignore[no-untyped-call]
            transport: asyncio.Transport = connection._writer.transport  # type: ignore[union-attr,assignment]
            # The handshake's replies have all been read: nothing is left buffered.
            transport.set_protocol(_Feed(transport, on_replies, wire.closed))
            wire._transport = transport
        except BaseException:
            await wire.close()
            raise
        return wire

    async def aclose(self) -> None:
        await self._pool.disconnect()


async def exchange(client: redis.asyncio.Redis, commands: list[bytes]) -> list[Any]:
    """Send packed `commands` on one connection, pipelined; each reply, an error reply as its
    exception (not raised).

    Below redis-py's `Pipeline`, whose packing and bookkeeping cost more than the system
    calls they go with.
    """
    pool = client.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await connection.send_packed_command(commands, False)
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(await connection.read_response(disable_decoding=True))
            except ResponseError as exc:
                replies.append(exc)
    except BaseException:
        # Replies may be left unread: the next user of the connection would get them.
        await connection.disconnect(nowait=True)
        raise
    finally:
        await pool.release(connection)
    return replies
