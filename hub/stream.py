"""One client's SSE connection: a bounded buffer of frames and the task that writes it.

The fan-out never waits on a client: it appends bytes to the client's buffer
(`push`) and wakes its writer, which sends everything buffered in one write.
When events arrive faster than a socket drains, frames pile up and go out
together, so the cost per event falls as the load rises. A client whose buffer
passes its limit is dropped; it resumes from the stream when it reconnects.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable

from starlette.types import Receive, Send

from hub import cursor
from hub.events import StreamId


class Ending(enum.Enum):
    DISCONNECTED = "disconnected"
    SLOW = "slow"
    SHUTDOWN = "shutdown"
    EXPIRED = "expired"


class ClientStream:
    __slots__ = (
        "topics",
        "positions",
        "_limit",
        "_chunks",
        "_pending",
        "_wake",
        "_drained",
        "_ending",
        "_sending",
        "_task",
        "_on_end",
        "bytes_sent",
    )

    def __init__(
        self,
        topics: tuple[str, ...],
        positions: list[StreamId],
        limit: int,
        on_end: Callable[[ClientStream, Ending], None],
    ) -> None:
        self.topics = topics
        self.positions = positions
        self._limit = limit
        self._chunks: list[bytes] = []
        self._pending = 0
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._ending: Ending | None = None
        self._sending = False
        self._task: asyncio.Task[object] | None = None
        self._on_end = on_end
        self.bytes_sent = 0

    @property
    def ended(self) -> bool:
        return self._ending is not None

    def cursor(self) -> str:
        return cursor.encode(self.positions)

    def push(self, data: bytes) -> None:
        """Queue bytes for this client; drop it if it has fallen too far behind."""
        if self._ending is not None:
            return
        self._chunks.append(data)
        self._pending += len(data)
        if self._pending > self._limit:
            self.end(Ending.SLOW)
            return
        self._wake.set()

    def push_unbounded(self, data: bytes) -> None:
        """Queue bytes that the caller paces itself with `drained` (history replay)."""
        if self._ending is None:
            self._chunks.append(data)
            self._drained.clear()
            self._wake.set()

    def push_at(self, index: int, sid: StreamId, body: bytes, paced: bool = False) -> None:
        """Queue an event of topic `index` on a connection with a composite cursor."""
        self.positions[index] = sid
        frame = b"id: " + cursor.encode(self.positions).encode() + b"\n" + body
        if paced:
            self.push_unbounded(frame)
        else:
            self.push(frame)

    async def drained(self) -> None:
        """Wait until everything queued so far has been handed to the server."""
        await self._drained.wait()

    def end(self, ending: Ending, last_words: bytes = b"") -> None:
        """End the stream: cleanly (with `last_words`) unless the client is slow or gone."""
        if self._ending is not None:
            return
        self._ending = ending
        if ending is Ending.SLOW or ending is Ending.DISCONNECTED:
            self._chunks.clear()
            self._pending = 0
            if ending is Ending.SLOW and self._sending and self._task is not None:
                # The writer waits on a socket that does not drain; only cancelling
                # it frees the connection (the server closes it when we return).
                self._task.cancel()
        elif last_words:
            self._chunks.append(last_words)
        self._drained.set()
        self._wake.set()
        # Later, not now: the fan-out may be iterating over the set this client leaves.
        asyncio.get_running_loop().call_soon(self._on_end, self, ending)

    async def run(self, send: Send, receive: Receive) -> None:
        """Write queued bytes until the stream ends; the response has started."""
        self._task = asyncio.current_task()
        watcher = asyncio.create_task(self._watch(receive))
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._chunks:
                    body = b"".join(self._chunks)
                    self._chunks.clear()
                    self._pending = 0
                    self._sending = True
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                    self._sending = False
                    self.bytes_sent += len(body)
                if not self._chunks:
                    self._drained.set()
                if self._ending is not None and not self._chunks:
                    break
            if self._ending is not Ending.SLOW and self._ending is not Ending.DISCONNECTED:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if self._ending is not Ending.SLOW:
                raise
            if self._task is not None:
                self._task.uncancel()
        finally:
            watcher.cancel()
            self.end(Ending.DISCONNECTED)

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.end(Ending.DISCONNECTED)
