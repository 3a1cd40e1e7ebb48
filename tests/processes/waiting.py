"""Waiting for a condition instead of sleeping a fixed time: `wait_until`, `wait_until_async`.

A test (or a helper starting a server) that waits says what it waits for; if the
time runs out, the failure says what was observed last, so a slow machine and a
real bug read differently.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")

POLL_SECONDS = 0.05


class WaitTimeout(AssertionError):
    """A condition did not hold in time. An AssertionError: in a test, a failed expectation."""


class _Clock:
    """A deadline `within` s away, pushed back whenever `progress()` changes (if given)."""

    def __init__(self, within: float, progress: Callable[[], object] | None) -> None:
        self.within = within
        self.progress = progress
        self.started = self.moved = time.monotonic()
        self.seen = progress() if progress else None

    def expired(self) -> bool:
        now = time.monotonic()
        if self.progress is not None:
            seen = self.progress()
            if seen != self.seen:
                self.seen, self.moved = seen, now
        return now - self.moved >= self.within

    def describe(self) -> str:
        if self.progress is None:
            return f"not within {self.within:g} s"
        waited = time.monotonic() - self.started
        return (
            f"no progress for {self.within:g} s (after {waited:.1f} s; "
            f"progress stayed at {self.seen!r})"
        )


def _failure(what: str, when: str, last: object, error: BaseException | None, observed: str) -> str:
    parts = [f"{when}: {what}", f"the condition last gave {last!r}"]
    if error is not None:
        parts.append(f"and last raised {type(error).__name__}: {error}")
    if observed:
        parts.append(f"observed: {observed}")
    return "; ".join(parts)


def wait_until(
    condition: Callable[[], T],
    within: float,
    what: str,
    *,
    observe: Callable[[], object] | None = None,
    ignore: tuple[type[BaseException], ...] = (),
    interval: float = POLL_SECONDS,
    progress: Callable[[], object] | None = None,
) -> T:
    """The first truthy value of `condition()`, polled every `interval` s for up to `within` s.

    Exceptions of the `ignore` types count as "not yet"; any other propagates. With
    `progress`, the wait is bounded by progress instead: `within` counts from the last
    time `progress()` changed, so a slow machine only makes it longer. When the time runs
    out, raises WaitTimeout naming `what`, the condition's last value (or exception) and,
    if given, what `observe()` says then.
    """
    clock = _Clock(within, progress)
    last: object = None
    error: BaseException | None = None
    while True:
        try:
            value = condition()
        except ignore as exc:
            error = exc
        else:
            if value:
                return value
            last, error = value, None
        if clock.expired():
            raise WaitTimeout(
                _failure(what, clock.describe(), last, error, str(observe()) if observe else "")
            )
        time.sleep(interval)


@overload
async def wait_until_async(
    condition: Callable[[], Awaitable[T]],
    within: float,
    what: str,
    *,
    observe: Callable[[], object] | None = None,
    ignore: tuple[type[BaseException], ...] = (),
    interval: float = POLL_SECONDS,
    progress: Callable[[], object] | None = None,
) -> T: ...


@overload
async def wait_until_async(
    condition: Callable[[], T],
    within: float,
    what: str,
    *,
    observe: Callable[[], object] | None = None,
    ignore: tuple[type[BaseException], ...] = (),
    interval: float = POLL_SECONDS,
    progress: Callable[[], object] | None = None,
) -> T: ...


async def wait_until_async(
    condition: Callable[[], T | Awaitable[T]],
    within: float,
    what: str,
    *,
    observe: Callable[[], object] | None = None,
    ignore: tuple[type[BaseException], ...] = (),
    interval: float = POLL_SECONDS,
    progress: Callable[[], object] | None = None,
) -> T:
    """`wait_until` for a test on an event loop: the loop keeps running while it waits.

    `condition` may be a plain function or a coroutine function.
    """
    clock = _Clock(within, progress)
    last: object = None
    error: BaseException | None = None
    while True:
        try:
            result = condition()
            value: T = await result if inspect.isawaitable(result) else result
        except ignore as exc:
            error = exc
        else:
            if value:
                return value
            last, error = value, None
        if clock.expired():
            raise WaitTimeout(
                _failure(what, clock.describe(), last, error, str(observe()) if observe else "")
            )
        await asyncio.sleep(interval)
