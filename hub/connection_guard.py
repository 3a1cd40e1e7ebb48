"""Limits on every connection that a gateway reached directly must enforce itself.

The HTTP server buffers a request's whole header block before the app sees it,
and waits without limit for a request that never ends: a client that sends
headers forever, or nothing at all, holds memory and a socket for as long as
it likes. `guarded` wraps the server's HTTP protocol (an `asyncio.Protocol`,
handed to uvicorn as its `http` class, so nothing of the server is patched)
and, with a parser of its own that sees the same bytes first:

- caps the request line and headers *while they arrive* (431, then close);
- gives the request line and headers a deadline from the first byte (or from
  the connection's start), and the body another once the headers are in (408);
- closes for real: a transport closed while its peer reads nothing would wait
  for a drain that never comes, so it is aborted, with a zero `SO_LINGER` so
  that the kernel resets the connection and frees its buffers at once instead
  of keeping the orphaned socket to go on sending. A close with data still
  queued is aborted so after `linger` seconds.

The inner protocol only ever sees a `_Transport` proxy, whose `close` does that.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass
from typing import Any, cast

import httptools


@dataclass(frozen=True)
class Limits:
    max_header_bytes: int
    header_seconds: float
    body_seconds: float
    linger_seconds: float


@dataclass
class Connections:
    """How many connections the guarded server was handed, and how many of them closed."""

    made: int = 0
    lost: int = 0

    @property
    def open(self) -> int:
        return self.made - self.lost


def guarded(
    inner: type[asyncio.Protocol], limits: Limits, connections: Connections | None = None
) -> type[asyncio.Protocol]:
    """A protocol class that builds `inner` with the server's arguments and guards it."""
    counted = connections if connections is not None else Connections()

    class Guarded(GuardedProtocol):
        __slots__ = ()

        def __init__(self, **server_arguments: Any) -> None:
            super().__init__(inner(**server_arguments), limits, counted)

    return Guarded


_LINGER_OFF = struct.pack("ii", 1, 0)  # on, 0 s: close() resets the connection
_STATUS = {
    408: b"408 Request Timeout",
    431: b"431 Request Header Fields Too Large",
}


class _Transport:
    """The transport as the inner protocol sees it: every call passes through but `close`."""

    def __init__(self, transport: asyncio.Transport, guard: GuardedProtocol) -> None:
        self._transport = transport
        self._guard = guard
        self.wrote = False
        self.is_closing = transport.is_closing
        self.get_extra_info = transport.get_extra_info

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def write(self, data: bytes) -> None:
        # The first write is noted, then the transport's own method takes over:
        # a stream's every frame goes through here.
        self.wrote = True
        self.write = self._transport.write  # type: ignore[method-assign]
        self._transport.write(data)

    def close(self) -> None:
        self._guard.close()


class GuardedProtocol(asyncio.Protocol):
    __slots__ = (  # one per connection: slots keep idle streams small
        "_between_requests",
        "_closed",
        "_connections",
        "_deadline",
        "_header_bytes",
        "_in_headers",
        "_inner",
        "_limits",
        "_linger",
        "_parser",
        "_seen",
        "_transport",
        "_writing_paused",
    )

    def __init__(self, inner: asyncio.Protocol, limits: Limits, connections: Connections) -> None:
        self._inner = inner
        self._limits = limits
        self._connections = connections
        # Only while a request is in flight: an open stream keeps none (idle memory).
        self._parser: httptools.HttpRequestParser | None = None
        self._transport: asyncio.Transport | None = None
        self._seen: _Transport | None = None
        self._in_headers = True  # until the first request's headers are complete
        self._header_bytes = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._writing_paused = False
        self._closed = False
        self._between_requests = False

    # -- the connection, from the event loop ------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is one, not a subclass
        self._connections.made += 1
        self._transport = transport
        self._start_deadline(self._limits.header_seconds)
        self._seen = _Transport(transport, self)
        self._inner.connection_made(self._seen)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        if self._in_headers:
            self._header_bytes += len(data)
        if self._parser is None:  # a request starts: a completed one leaves no bytes behind
            self._parser = httptools.HttpRequestParser(self)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # the inner protocol answers upgrades (or refuses them)
        except httptools.HttpParserError:
            pass  # the inner protocol, seeing the same bytes, answers 400
        else:
            if self._in_headers and self._header_bytes > self._limits.max_header_bytes:
                self._refuse(
                    431,
                    f"the request headers are over the limit of "
                    f"{self._limits.max_header_bytes} bytes",
                )
                return
        if self._between_requests:
            self._parser = None
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.lost += 1
        self._closed = True
        self._cancel_timers()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._inner.resume_writing()

    # -- the parser's callbacks -------------------------------------------------

    def on_message_begin(self) -> None:
        self._between_requests = False
        if not self._in_headers:  # a further request on a kept-alive connection
            self._in_headers = True
            self._header_bytes = 0
            self._start_deadline(self._limits.header_seconds)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._start_deadline(self._limits.body_seconds)

    def on_message_complete(self) -> None:
        self._between_requests = True
        self._stop_deadline()

    # -- closing ----------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; abort it if its peer is not reading what is queued."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._writing_paused:
            self._reset()
            return
        transport.close()
        if transport.get_write_buffer_size():
            loop = asyncio.get_running_loop()
            self._linger = loop.call_later(self._limits.linger_seconds, self._reset)

    def _reset(self) -> None:
        """Abort the connection with a TCP reset, dropping what the kernel still holds."""
        assert self._transport is not None
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_OFF)
        self._transport.abort()

    def _refuse(self, status: int, reason: str) -> None:
        """Answer `status` unless something was written on this connection, then close it."""
        self._closed = True
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._seen is not None and not self._seen.wrote:
            body = reason.encode() + b"\n"
            transport.write(
                b"HTTP/1.1 " + _STATUS[status] + b"\r\n"
                b"content-type: text/plain; charset=utf-8\r\n"
                b"content-length: " + str(len(body)).encode() + b"\r\n"
                b"connection: close\r\n\r\n" + body
            )
        self.close()

    def _on_deadline(self) -> None:
        self._deadline = None
        if self._in_headers:
            self._refuse(
                408, f"the request headers did not arrive within {self._limits.header_seconds:g} s"
            )
        else:
            self._refuse(
                408, f"the request body did not arrive within {self._limits.body_seconds:g} s"
            )

    def _start_deadline(self, seconds: float) -> None:
        self._stop_deadline()
        self._deadline = asyncio.get_running_loop().call_later(seconds, self._on_deadline)

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _cancel_timers(self) -> None:
        self._stop_deadline()
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
