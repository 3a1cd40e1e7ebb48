"""The gateway keeps the cycle collector off what survives, and still reclaims cyclic garbage."""

from __future__ import annotations

import gc
import socket
import weakref

import pytest
from processes import Gateways, wait_until

from hub.heap import LEAST_CLOSED, FrozenHeap

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Node:
    """An object in a reference cycle: only the cycle collector can free it."""

    def __init__(self) -> None:
        self.me = self


async def test_survivors_are_frozen_and_cyclic_garbage_is_reclaimed_once_enough_connections_closed() -> (
    None
):
    closed = 0
    async with FrozenHeap(lambda: 10, lambda: closed) as heap:
        assert gc.get_freeze_count() > 0, "what exists at start is frozen"
        garbage = Node()
        heap.step()  # frozen while alive
        dead = weakref.ref(garbage)
        del garbage
        gc.collect()
        assert dead() is not None, "a frozen cycle is left alone by the collector"

        closed = LEAST_CLOSED - 1
        heap.step()
        gc.collect()
        assert dead() is not None, "too few connections closed to be worth a full collection"

        closed = LEAST_CLOSED
        heap.step()
        assert dead() is None, "as many connections closed as are open, and more than the least"
    assert gc.get_freeze_count() == 0, "nothing stays frozen once it closes"


def test_a_gateway_reclaims_what_short_lived_connections_leave(gateway: Gateways) -> None:
    """Not streams alone: each closed connection (a publish, a health check) leaves cycles."""
    hub = gateway()
    for _ in range(LEAST_CLOSED + 50):
        with socket.create_connection((hub.HOST, hub.port), timeout=10) as conn:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n")
            while conn.recv(4096):
                pass
    wait_until(
        lambda: "closed connections in" in hub.log_text(),
        30,
        "the gateway to log a collection of what the closed connections left",
    )
