"""A Redis connection driven reply by reply: the hub's one use of redis-py below its client API.

The gateway's pub/sub reader must own its reconnect loop and read without a
deadline per reply (a deadline per read costs more than the parsing at high
rates; a watchdog finds a silent connection instead). redis-py's `PubSub`
offers neither (redis/redis-py#2089, #3979), so the subscription drives a raw
`Connection`: connect, send packed commands, read one reply, disconnect.
Everything that relies on how redis-py does that lives here, and
tests/test_library_adapters.py checks it against the installed version
(`read_response(timeout=math.inf)` blocks past the socket timeout, and replies
come as RESP2 lists).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import redis.asyncio

Command = Sequence[str | bytes | int]


class Wire:
    """One connection; `read` waits for the next reply for as long as it takes."""

    def __init__(self, connection: redis.asyncio.Connection) -> None:
        self._connection = connection

    async def send(self, commands: Sequence[Command]) -> None:
        await self._connection.send_packed_command(self._connection.pack_commands(commands))

    async def read(self) -> Any:
        return await self._connection.read_response(timeout=math.inf)

    async def close(self) -> None:
        await self._connection.disconnect()


class WireFactory:
    """Connections to one server, with the options of its `Node` (address, TLS, user)."""

    def __init__(self, options: dict[str, Any]) -> None:
        # RESP2 keeps pub/sub messages plain replies, whatever the client's default.
        self._pool = redis.asyncio.ConnectionPool(**options, protocol=2)

    async def connect(self) -> Wire:
        connection: redis.asyncio.Connection = self._pool.make_connection()  # type: ignore[no-untyped-call]
        wire = Wire(connection)
        try:
            await connection.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            await wire.close()
            raise
        return wire

    async def aclose(self) -> None:
        await self._pool.disconnect()
