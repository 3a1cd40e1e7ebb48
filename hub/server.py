"""Everything the hub relies on in uvicorn, in one place, each reliance checked by a test.

The gateway runs on uvicorn without patching it, but leans on a few of its
behaviours that are not promised by the ASGI spec; tests/test_library_adapters.py
checks each against the installed version, so an upgrade that breaks one fails
a fast test rather than the hub in production (pyproject.toml pins the versions
known to work):

- `HTTP_PROTOCOL`: the httptools protocol class, built by the server with
  keyword arguments (`config`, `server_state`, `app_state`, `_loop`), which the
  connection guard (`hub/connection_guard.py`) wraps;
- `run_eagerly`: a response `send` finishes without waiting while the socket
  drains, so a client's write runs on the spot instead of in a task of its own
  (if it ever waits, the rest runs in a task: slower, never wrong);
- `listening` and `exit_requested`: the server's `started` and `should_exit`
  flags, which the gateway watches to announce itself and to end its streams on
  SIGTERM (uvicorn waits for open responses before the app's shutdown runs);
- `UNFINISHED_RESPONSE`: the line uvicorn logs when an app returns from a
  response it did not finish, which is how a slow client is dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HTTP_PROTOCOL = HttpToolsProtocol
UNFINISHED_RESPONSE = "ASGI callable returned without completing response."
_POLL_SECONDS = 0.05


async def listening(server: uvicorn.Server) -> None:
    """Return once `server` has bound its sockets."""
    while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
        await asyncio.sleep(_POLL_SECONDS)


async def exit_requested(server: uvicorn.Server) -> None:
    """Return once `server` has been told to exit (SIGTERM, Ctrl-C)."""
    while not server.should_exit:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
        await asyncio.sleep(_POLL_SECONDS)


def run_eagerly(step: Awaitable[None]) -> Awaitable[None] | None:
    """Run `step` now, up to where it first waits; None if it finished, else the rest of it."""
    if not isinstance(step, Coroutine):
        return step
    try:
        waiting_on = step.send(None)
    except StopIteration:
        return None
    return _resume(step, waiting_on)


async def _resume(coroutine: Coroutine[Any, Any, None], waiting_on: Any) -> None:
    """Go on running a coroutine that `run_eagerly` left waiting, as a task would.

    (Python 3.12's eager tasks do the same; this runs on 3.11 too.)
    """
    try:
        while True:
            if waiting_on is None:  # a bare yield: it only asked to let others run
                await asyncio.sleep(0)
            else:
                await _until_done(waiting_on)
            waiting_on = coroutine.send(None)  # the future's result or error reaches it here
    except StopIteration:
        return
    finally:
        coroutine.close()


async def _until_done(future: asyncio.Future[Any]) -> None:
    """Wait for `future` without awaiting it.

    The coroutine's own `await` has already marked the future as waited on (for
    the task that would have run it), and asyncio's C futures refuse to be
    awaited a second time ("await wasn't used with future").
    """
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake(_: object) -> None:
        if not done.done():
            done.set_result(None)

    future.add_done_callback(wake)
    try:
        await done
    except asyncio.CancelledError:
        future.cancel()
        raise
