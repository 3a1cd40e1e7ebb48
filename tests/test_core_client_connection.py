"""One client's connection in process: its bounded buffer, paced replay, stalls and endings.

A `ClientConnection` runs against a fake ASGI socket (`core_fakes.Socket`)
that records every body and can stop draining. Most tests hold a write with
bare yields of the loop ("yield"); one holds it on a Future, as uvicorn's
`send` does, and shows that the connection cannot resume such a write.
"""

from __future__ import annotations

import asyncio

import pytest
from core_fakes import Client, Socket, parse_frames, wait_until

from hub import cursor, sse
from hub.client_connection import REPLAY_WINDOW, ClientConnection, Ending, Flusher

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def frame(n: int, size: int = 100) -> bytes:
    """A frame of `size` bytes in all, numbered so the order can be checked."""
    head = f"id: {n}-0\ndata: "
    return (head + "x" * (size - len(head) - 2) + "\n\n").encode()


async def pump(socket: Socket, work: asyncio.Task[None]) -> list[int]:
    """Let a socket that does not drain by itself take one write at a time until `work` ends;
    the sizes of the writes it took."""
    while True:
        await wait_until(lambda: socket.waiting == 1 or work.done(), lambda: (socket.waiting, work))
        if work.done() and socket.waiting == 0:
            return [len(body) for body in socket.bodies]
        socket.draining.set()  # the write that waits goes on; the next one waits again
        await wait_until(lambda: socket.waiting == 0, lambda: socket.waiting)
        socket.draining.clear()


# -- the buffer's bound --------------------------------------------------------------------


async def test_one_frame_always_fits_however_large() -> None:
    client = Client(("t",), Flusher(), limit=10).start()
    big = frame(1, 1000)
    client.connection.push(big)
    await wait_until(lambda: client.socket.stream == big, lambda: client.socket.bodies)
    client.connection.push(frame(2, 500))  # the first one was written: the buffer is empty again
    await wait_until(lambda: len(client.socket.bodies) == 2, lambda: client.socket.bodies)
    assert client.endings == [] and not client.connection.ended
    await client.close()


async def test_a_client_with_more_than_one_frame_over_its_limit_is_dropped_as_slow() -> None:
    client = Client(("t",), Flusher(), limit=250, waits_on="yield").start()
    client.socket.draining.clear()
    client.connection.push(frame(1))
    await wait_until(lambda: client.socket.waiting == 1, lambda: client.socket.bodies)
    client.connection.push(frame(2))
    client.connection.push(frame(3))
    assert not client.connection.ended, "200 bytes queued: within the limit"
    client.connection.push(frame(4))
    assert client.connection.ended
    assert client.task is not None
    await asyncio.wait_for(client.task, 5.0)
    await wait_until(lambda: client.endings == [Ending.SLOW], lambda: client.endings)
    await wait_until(
        lambda: client.socket.waiting == 0, lambda: "the write that waited is still held"
    )
    assert not client.socket.finished, "a slow client's response is left unfinished, to be reset"
    assert client.socket.bodies == [frame(1)]
    client.connection.push(frame(5))
    assert client.socket.bodies == [frame(1)], "nothing more after the end"


async def test_frames_queued_behind_a_waiting_write_go_out_together_after_it() -> None:
    client = Client(("t",), Flusher(), waits_on="yield").start()
    client.socket.draining.clear()
    client.connection.push(frame(1))
    await wait_until(lambda: client.socket.waiting == 1, lambda: client.socket.bodies)
    for n in range(2, 6):
        client.connection.push(frame(n))
    client.socket.draining.set()
    await wait_until(lambda: len(client.socket.bodies) == 2, lambda: client.socket.bodies)
    assert client.socket.bodies == [frame(1), b"".join(frame(n) for n in range(2, 6))]
    assert not client.connection.ended
    await client.close()


async def test_a_write_that_waited_on_the_server_goes_on_once_the_socket_drains() -> None:
    flusher = Flusher()
    client = Client(("t",), flusher, waits_on="future").start()
    client.socket.draining.clear()
    client.connection.push(frame(1))
    await wait_until(lambda: client.connection in flusher.stalled, lambda: client.socket.bodies)
    await asyncio.sleep(0)  # a turn of the loop: the rest of the write runs in its task
    assert client.socket.waiting == 1, "the rest of the write no longer waits for the socket"
    client.connection.push(frame(2))
    client.socket.draining.set()
    await wait_until(lambda: len(client.socket.bodies) == 2, lambda: client.socket.bodies)
    assert client.connection not in flusher.stalled
    await client.close()


# -- paced replay -------------------------------------------------------------------------------


@pytest.mark.parametrize(("limit", "window"), [(1 << 20, REPLAY_WINDOW), (25_000, 25_000)])
async def test_paced_pushes_wait_for_the_socket_and_never_hand_it_more_than_the_window(
    limit: int, window: int
) -> None:
    client = Client(("t",), Flusher(), limit=limit, waits_on="yield").start()
    client.socket.draining.clear()
    frames = [frame(n, 10_000) for n in range(40)]

    async def replay() -> None:
        for data in frames:
            await client.connection.push_paced(data)
        await client.connection.drained()

    work = asyncio.create_task(replay())
    sizes = await pump(client.socket, work)
    assert max(sizes) <= window, f"writes of {sizes} bytes"
    assert len(sizes) >= 400_000 // window
    assert client.socket.stream == b"".join(frames), "every frame, once, in order"
    assert not client.connection.ended, "a paced replay waits; it never drops the client"
    await client.close()


async def test_a_paced_frame_larger_than_the_window_goes_out_whole() -> None:
    client = Client(("t",), Flusher(), limit=1000, waits_on="yield").start()
    client.socket.draining.clear()
    big = [frame(n, 3 * REPLAY_WINDOW) for n in range(3)]

    async def replay() -> None:
        for data in big:
            await client.connection.push_paced(data)
        await client.connection.drained()

    work = asyncio.create_task(replay())
    assert await pump(client.socket, work) == [len(data) for data in big]
    assert not client.connection.ended
    await client.close()


async def test_drained_waits_until_paced_bytes_are_handed_to_the_server() -> None:
    client = Client(("t",), Flusher(), waits_on="yield").start()
    await client.connection.drained()  # nothing queued: at once
    client.socket.draining.clear()
    await client.connection.push_paced(frame(1))
    waiter = asyncio.create_task(client.connection.drained())
    await wait_until(lambda: client.socket.waiting == 1, lambda: client.socket.bodies)
    assert not waiter.done()
    client.socket.draining.set()
    await asyncio.wait_for(waiter, 5.0)
    await client.close()


# -- stalls and endings ----------------------------------------------------------------------------


async def test_a_write_stalled_longer_than_allowed_is_dropped_as_slow() -> None:
    flusher = Flusher()
    stuck = Client(("t",), flusher, waits_on="yield").start()
    fine = Client(("t",), flusher).start()
    stuck.socket.draining.clear()
    stuck.connection.push(frame(1))
    fine.connection.push(frame(1))
    await wait_until(lambda: stuck.connection in flusher.stalled, lambda: flusher.stalled)
    assert flusher.stalled == {stuck.connection}
    assert flusher.drop_stalled(60.0) == 0, "not stalled that long yet"
    assert flusher.drop_stalled(0.0) == 1
    await wait_until(lambda: stuck.endings == [Ending.SLOW], lambda: stuck.endings)
    await wait_until(lambda: stuck.socket.waiting == 0, lambda: "the stalled write is still held")
    assert flusher.stalled == set()
    assert fine.endings == [] and fine.socket.bodies == [frame(1)]
    await fine.close()
    await stuck.close()


async def test_end_sends_the_last_words_and_finishes_the_response() -> None:
    client = Client(("t",), Flusher()).start()
    client.connection.push(frame(1))
    await wait_until(lambda: client.socket.bodies == [frame(1)], lambda: client.socket.bodies)
    client.connection.push(frame(2))
    client.connection.end(Ending.SHUTDOWN, b"retry: 500\n\n")
    client.connection.end(Ending.SLOW)  # a second ending changes nothing
    client.connection.push(frame(3))  # nor does anything pushed after it
    assert client.task is not None
    await asyncio.wait_for(client.task, 5.0)
    await wait_until(lambda: client.endings == [Ending.SHUTDOWN], lambda: client.endings)
    assert client.socket.finished
    assert client.socket.stream == frame(1) + frame(2) + b"retry: 500\n\n"


async def test_end_lets_a_waiting_write_finish_before_the_last_words() -> None:
    client = Client(("t",), Flusher(), waits_on="yield").start()
    client.socket.draining.clear()
    client.connection.push(frame(1))
    await wait_until(lambda: client.socket.waiting == 1, lambda: client.socket.bodies)
    client.connection.end(Ending.EXPIRED, b"bye")
    assert client.task is not None
    await asyncio.sleep(0)
    assert not client.task.done() and not client.socket.finished, "the write in progress goes first"
    client.socket.draining.set()
    await asyncio.wait_for(client.task, 5.0)
    assert client.socket.finished
    assert client.socket.stream == frame(1) + b"bye"
    assert client.endings == [Ending.EXPIRED]


async def test_a_disconnect_ends_the_stream_without_finishing_the_response() -> None:
    client = Client(("t",), Flusher()).start()
    client.connection.push(frame(1))
    client.socket.disconnected.set()
    assert client.task is not None
    await asyncio.wait_for(client.task, 5.0)
    await wait_until(lambda: client.endings == [Ending.DISCONNECTED], lambda: client.endings)
    assert not client.socket.finished
    assert client.connection.ended


async def test_a_write_that_fails_ends_that_client_only() -> None:
    flusher = Flusher()
    broken, fine = Client(("t",), flusher).start(), Client(("t",), flusher).start()
    await asyncio.sleep(0)  # one turn of the loop: both responses have started
    broken.socket.fail_with = OSError("connection reset")
    broken.connection.push(frame(1))
    fine.connection.push(frame(1))
    await wait_until(lambda: broken.endings == [Ending.DISCONNECTED], lambda: broken.endings)
    await wait_until(lambda: fine.socket.bodies == [frame(1)], lambda: fine.socket.bodies)
    assert fine.endings == []
    await fine.close()
    await broken.close()


async def test_nothing_is_written_before_the_response_starts() -> None:
    flusher = Flusher()
    ended: list[Ending] = []
    connection = ClientConnection(("t",), [(0, 0)], 1 << 20, flusher, lambda c, e: ended.append(e))
    connection.push(frame(1))
    connection.push(frame(2))
    flusher.flush()
    assert connection.bytes_sent == 0
    socket = Socket()
    run = asyncio.create_task(connection.run(socket.send, socket.receive))
    await wait_until(lambda: socket.bodies == [frame(1) + frame(2)], lambda: socket.bodies)
    assert connection.bytes_sent == len(frame(1) + frame(2))
    socket.disconnected.set()
    await asyncio.wait_for(run, 5.0)


async def test_composite_pushes_carry_the_cursor_of_every_topic() -> None:
    client = Client(("a", "b"), Flusher()).start()
    client.connection.positions[:] = [(5, 0), (7, 1)]
    client.connection.push_at(1, (9, 0), b"data: one\n\n")
    await client.connection.push_at_paced(0, (8, 2), b"data: two\n\n")
    await wait_until(lambda: len(client.frames) == 2, lambda: client.socket.bodies)
    assert [(f.id, f.data) for f in parse_frames(client.socket.stream)] == [
        (cursor.encode([(5, 0), (9, 0)]), "one"),
        (cursor.encode([(8, 2), (9, 0)]), "two"),
    ]
    assert client.connection.cursor() == cursor.encode([(8, 2), (9, 0)])
    await client.close()


# -- heartbeats --------------------------------------------------------------------------


async def test_a_heartbeat_goes_only_to_a_stream_that_sent_nothing_since_the_last_look() -> None:
    client = Client(("t",), Flusher()).start()

    def beats() -> int:
        return client.socket.stream.count(sse.HEARTBEAT)

    client.connection.heartbeat_if_quiet()
    await wait_until(lambda: beats() == 1, beats)
    client.connection.heartbeat_if_quiet()  # only its own heartbeat went out since
    await wait_until(lambda: beats() == 2, beats)

    client.connection.push(frame(1))
    client.connection.heartbeat_if_quiet()  # an event came since the last look: no heartbeat
    await wait_until(lambda: len(client.frames) == 1, lambda: client.frames)
    assert beats() == 2
    client.connection.heartbeat_if_quiet()  # nothing since: it beats again
    await wait_until(lambda: beats() == 3, beats)
    await client.close()
