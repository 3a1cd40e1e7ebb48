"""One client's SSE connection: a bounded buffer of frames, written without a task switch.

The fan-out never waits on a client: it appends bytes to the client's buffer
(`push`) and marks it dirty. Once per turn of the event loop, after the
fan-out has handled every message Redis sent in that turn, the `Flusher`
writes each dirty client's buffer in one write. When events arrive faster
than a socket drains, frames pile up and go out together, so the cost per
event falls as the load rises.

The write calls the server's `send` directly and finishes it on the spot,
which it does unless the socket's buffer is full (uvicorn then waits for it to
drain): only then does the rest of the write move to a task of its own. This
saves a task switch per client per write, the largest cost of fan-out after
the system call itself. A client whose buffer passes its limit is dropped; it
resumes from the stream when it reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from starlette.types import Receive, Send

from hub import cursor, sse
from hub.events import StreamId
from hub.server import run_eagerly

log = logging.getLogger("hub.client_connection")

REPLAY_WINDOW = 65_536
"""Bytes of history handed to a client's socket per write: large enough for few writes."""


class Ending(enum.Enum):
    DISCONNECTED = "disconnected"
    SLOW = "slow"
    SHUTDOWN = "shutdown"
    EXPIRED = "expired"


class Flusher:
    """Writes every client that has something to send, once per event-loop turn.

    It also knows which clients' writes wait on a socket that does not drain
    (`stalled`), so the gateway can drop the ones that stay stuck.
    """

    def __init__(self) -> None:
        self._dirty: list[ClientConnection] = []
        self._scheduled = False
        self.stalled: set[ClientConnection] = set()

    def mark(self, client: ClientConnection) -> None:
        self._dirty.append(client)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for client in dirty:
            try:
                client.write()
            except Exception:  # one broken connection must not cost the others their writes
                log.exception("writing to a client failed")
                client.end(Ending.DISCONNECTED)

    def drop_stalled(self, longer_than: float) -> int:
        """End, as slow, every client whose write has waited over `longer_than` seconds."""
        cutoff = asyncio.get_running_loop().time() - longer_than
        stuck = [client for client in self.stalled if client.stalled_since <= cutoff]
        for client in stuck:
            client.end(Ending.SLOW)
        return len(stuck)


class ClientConnection:
    __slots__ = (
        "_blocked",
        "_chunks",
        "_dirty",
        "_drain_waiter",
        "_ending",
        "_flusher",
        "_heartbeat_mark",
        "_limit",
        "_listening",
        "_on_end",
        "_pending",
        "_send",
        "_undrained",
        "bytes_sent",
        "positions",
        "stalled_since",
        "topics",
    )

    def __init__(
        self,
        topics: tuple[str, ...],
        positions: list[StreamId],
        limit: int,
        flusher: Flusher,
        on_end: Callable[[ClientConnection, Ending], None],
    ) -> None:
        self.topics = topics
        self.positions = positions
        self.bytes_sent = 0
        self.stalled_since = 0.0
        self._limit = limit
        self._flusher = flusher
        self._chunks: list[bytes] = []
        self._pending = 0
        self._heartbeat_mark = 0
        self._dirty = False
        self._send: Send | None = None
        self._blocked: asyncio.Task[None] | None = None
        # A flag and a future made only when a replay waits: an `asyncio.Event` would
        # cost every idle stream the best part of a kilobyte.
        self._undrained = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._ending: Ending | None = None
        self._listening: asyncio.Task[Any] | None = None
        self._on_end = on_end

    @property
    def ended(self) -> bool:
        return self._ending is not None

    def cursor(self) -> str:
        return cursor.encode(self.positions)

    def push(self, data: bytes) -> None:
        """Queue bytes for this client; drop it if it has fallen too far behind.

        One frame always fits, however large: only a client with more than one
        frame waiting, over the limit in all, is slow.
        """
        if self._ending is not None:
            return
        self._chunks.append(data)
        self._pending += len(data)
        if self._pending > self._limit and len(self._chunks) > 1:
            self.end(Ending.SLOW)
        elif not self._dirty:
            self._dirty = True
            self._flusher.mark(self)

    async def push_paced(self, data: bytes) -> None:
        """Queue bytes once the buffer has room for them (history replay).

        The replay waits for the socket instead of dropping the client, and
        hands it `REPLAY_WINDOW` bytes at a time (or one larger frame): what a
        write leaves queued in the server's transport when the client is not
        reading is never more. A client that stops reading is dropped when its
        write stalls.
        """
        if self._pending and self._pending + len(data) > self.replay_window:
            await self.drained()
        self._queue_paced(data)

    @property
    def replay_window(self) -> int:
        """Most bytes a replay hands over at once (one larger frame still goes alone)."""
        return min(self._limit, REPLAY_WINDOW)

    def _queue_paced(self, data: bytes) -> None:
        if self._ending is None:
            self._chunks.append(data)
            self._pending += len(data)
            self._undrained = True
            if not self._dirty:
                self._dirty = True
                self._flusher.mark(self)

    async def push_at_paced(self, index: int, sid: StreamId, body: bytes) -> None:
        """`push_at` for history replay (see `push_paced`)."""
        self.positions[index] = sid
        await self.push_paced(b"id: " + cursor.encode(self.positions).encode() + b"\n" + body)

    def push_at(self, index: int, sid: StreamId, body: bytes) -> None:
        """Queue an event of topic `index` on a connection with a composite cursor."""
        self.positions[index] = sid
        self.push(b"id: " + cursor.encode(self.positions).encode() + b"\n" + body)

    @contextlib.contextmanager
    def ends_at(self, deadline: float | None) -> Iterator[None]:
        """While inside, the stream ends (`EXPIRED`) at `deadline`, in seconds since the
        epoch (a token's `exp`; None: never): a reconnect with that token is refused."""
        if deadline is None:
            yield
            return
        loop = asyncio.get_running_loop()
        expiry = loop.call_later(max(0.0, deadline - time.time()), self.end, Ending.EXPIRED)
        try:
            yield
        finally:
            expiry.cancel()

    def heartbeat_if_quiet(self) -> None:
        """Queue a heartbeat unless bytes were sent or queued since the last call."""
        if self.bytes_sent + self._pending == self._heartbeat_mark:
            self.push(sse.HEARTBEAT)
        self._heartbeat_mark = self.bytes_sent + self._pending

    async def drained(self) -> None:
        """Wait until everything queued so far has been handed to the server."""
        if self._undrained:
            if self._drain_waiter is None or self._drain_waiter.done():
                self._drain_waiter = asyncio.get_running_loop().create_future()
            await self._drain_waiter

    def _set_drained(self) -> None:
        self._undrained = False
        if self._drain_waiter is not None:
            if not self._drain_waiter.done():
                self._drain_waiter.set_result(None)
            self._drain_waiter = None

    def write(self) -> None:
        """Hand everything queued to the server in one write (the `Flusher` calls this)."""
        self._dirty = False
        if self._send is None or self._blocked is not None or not self._chunks:
            return
        body = b"".join(self._chunks)
        self._chunks.clear()
        self._pending = 0
        self.bytes_sent += len(body)
        rest = run_eagerly(
            self._send({"type": "http.response.body", "body": body, "more_body": True})
        )
        if rest is None:
            self._set_drained()
        else:
            self._blocked = asyncio.create_task(self._finish_write(rest))
            self.stalled_since = asyncio.get_running_loop().time()
            self._flusher.stalled.add(self)

    async def _finish_write(self, rest: Awaitable[None]) -> None:
        await rest
        self._blocked = None
        self._flusher.stalled.discard(self)
        if self._chunks:
            self.write()
        else:
            self._set_drained()

    def end(self, ending: Ending, last_words: bytes = b"") -> None:
        """End the stream: cleanly (with `last_words`) unless the client is slow or gone."""
        if self._ending is not None:
            return
        self._ending = ending
        self._flusher.stalled.discard(self)
        if ending is Ending.SLOW or ending is Ending.DISCONNECTED:
            self._chunks.clear()
            self._pending = 0
            if self._blocked is not None:
                # The write waits on a socket that does not drain; only cancelling it
                # frees the connection (the server closes it when the stream returns).
                self._blocked.cancel()
        elif last_words:
            self._chunks.append(last_words)
        self._set_drained()
        listening, self._listening = self._listening, None
        if listening is not None:
            listening.cancel()
        # Later, not now: the fan-out may be iterating over the set this client leaves.
        asyncio.get_running_loop().call_soon(self._on_end, self, ending)

    async def run(self, send: Send, receive: Receive) -> None:
        """Stream until the stream ends; the response has started.

        The stream's own task waits on the server to hear of the client leaving,
        and an end that comes from elsewhere (a slow client, a shutdown, a token
        that expired) wakes it by cancelling that wait: a second task per stream
        to watch the server would cost every idle stream over a kilobyte.
        """
        self._send = send
        try:
            self.write()
            try:
                while self._ending is None:
                    self._listening = asyncio.current_task()
                    message = await receive()
                    self._listening = None
                    if message["type"] == "http.disconnect":
                        self.end(Ending.DISCONNECTED)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._ending is None or (task is not None and task.uncancel() > 0):
                    raise  # not this stream's end: the server cancels it
            if self._ending is Ending.SLOW or self._ending is Ending.DISCONNECTED:
                return  # the server closes a response left unfinished
            if self._blocked is not None:
                await self._blocked
            body = b"".join(self._chunks)
            self._chunks.clear()
            await send({"type": "http.response.body", "body": body, "more_body": False})
        finally:
            self._listening = None
            self.end(Ending.DISCONNECTED)
