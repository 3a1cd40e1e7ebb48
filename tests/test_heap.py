"""The gateway keeps the cycle collector off what survives, and still reclaims cyclic garbage."""

from __future__ import annotations

import gc
import weakref

import pytest

from hub.heap import LEAST_ENDED, FrozenHeap

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Node:
    """An object in a reference cycle: only the cycle collector can free it."""

    def __init__(self) -> None:
        self.me = self


async def test_survivors_are_frozen_and_cyclic_garbage_is_reclaimed_once_enough_streams_ended() -> (
    None
):
    ended = 0
    async with FrozenHeap(lambda: 10, lambda: ended) as heap:
        assert gc.get_freeze_count() > 0, "what exists at start is frozen"
        garbage = Node()
        heap.step()  # frozen while alive
        dead = weakref.ref(garbage)
        del garbage
        gc.collect()
        assert dead() is not None, "a frozen cycle is left alone by the collector"

        ended = LEAST_ENDED - 1
        heap.step()
        gc.collect()
        assert dead() is not None, "too few streams ended to be worth a full collection"

        ended = LEAST_ENDED
        heap.step()
        assert dead() is None, "as many streams ended as are open, and more than the least"
    assert gc.get_freeze_count() == 0, "nothing stays frozen once it closes"
