"""Follow a file by name, like `tail -F`: yield each complete line appended to it.

    with FileFollower(path) as follower:
        for line in follower:          # polls every `interval` seconds, forever
            ...
        for lines in follower.batches():   # the same, each poll's lines together
            ...
        follower.poll()                # or: the lines available right now

It starts at the end of the file (or at its start with `from_start=True`) and
waits for a file that does not exist yet. When the name comes to point at a
new file (log rotation: renamed and replaced), it first reads the old file to
its end, then reads the new one from its start. When the file shrinks
(truncation, e.g. `copytruncate`), it reads again from the start.

Polling rather than inotify keeps it portable and simple; a truncation that is
followed by more writes than were read before, all within one interval, looks
like an append and goes unnoticed (as with `tail`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

DEFAULT_INTERVAL = 0.2
DEFAULT_MAX_LINE_BYTES = 1_048_576
_READ_SIZE = 65_536
# Bytes read in one poll at most, so a file that grows faster than it is read
# still lets the caller check its stop condition between polls.
_POLL_BUDGET = 4 * 1_048_576


class LineTooLong(ValueError):
    """A line grew past `max_line_bytes` without ending."""


class FileFollower:
    """Yields the lines appended to the file at `path`; a context manager."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        from_start: bool = False,
        interval: float = DEFAULT_INTERVAL,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        stop: Callable[[], bool] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.path = Path(path)
        self.interval = interval
        self.max_line_bytes = max_line_bytes
        self._stop = stop or (lambda: False)
        self._sleep = sleep
        self._file: BinaryIO | None = None
        self._identity: tuple[int, int] = (0, 0)
        self._position = 0
        self._partial = b""
        # Only a file present when following starts is skipped to its end: one
        # that appears later is new, and all of it is news.
        self._open(at_end=not from_start)

    def poll(self) -> list[str]:
        """The complete lines available now (without their line ending)."""
        lines: list[str] = []
        if self._file is None:
            self._open(at_end=False)
            if self._file is None:
                return lines
        if self._truncated():
            self._file.seek(0)
            self._position = 0
            self._partial = b""
        if self._read(lines) and self._replaced():
            # The old file is finished: its last line ends here even without a newline.
            if self._partial:
                lines.append(_decode(self._partial))
                self._partial = b""
            self._close_file()
            self._open(at_end=False)
            if self._file is not None:
                self._read(lines)
        return lines

    def __iter__(self) -> Iterator[str]:
        for lines in self.batches():
            yield from lines

    def batches(self) -> Iterator[list[str]]:
        """The lines of each poll that found any, as they come, until the stop condition."""
        while True:
            lines = self.poll()
            if lines:
                yield lines
            if self._stop():
                return
            self._sleep(self.interval)

    def close(self) -> None:
        self._close_file()

    def __enter__(self) -> FileFollower:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _open(self, *, at_end: bool) -> None:
        try:
            handle = open(self.path, "rb")
        except FileNotFoundError:
            return
        try:
            info = os.fstat(handle.fileno())
            self._position = handle.seek(0, os.SEEK_END) if at_end else 0
        except BaseException:
            handle.close()
            raise
        self._file = handle
        self._identity = (info.st_dev, info.st_ino)
        self._partial = b""

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _truncated(self) -> bool:
        assert self._file is not None
        return os.fstat(self._file.fileno()).st_size < self._position

    def _replaced(self) -> bool:
        """Whether the name now points at another file (not: has vanished)."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            # Renamed away and not replaced yet: the writer may still be
            # writing to the old file, so keep reading it.
            return False
        return (info.st_dev, info.st_ino) != self._identity

    def _read(self, lines: list[str]) -> bool:
        """Append the complete lines read to `lines`; True when at the end of the file."""
        assert self._file is not None
        budget = _POLL_BUDGET
        while budget > 0:
            chunk = self._file.read(_READ_SIZE)
            if not chunk:
                return True
            budget -= len(chunk)
            self._position += len(chunk)
            *complete, self._partial = (self._partial + chunk).split(b"\n")
            for raw in complete:
                self._check_length(raw)
                lines.append(_decode(raw))
            self._check_length(self._partial)
        return False

    def _check_length(self, raw: bytes) -> None:
        if len(raw.removesuffix(b"\r")) > self.max_line_bytes:
            raise LineTooLong(f"a line of {self.path} is longer than {self.max_line_bytes} bytes")


def _decode(raw: bytes) -> str:
    # A stray invalid byte in a log must not stop the stream: it becomes U+FFFD.
    return raw.removesuffix(b"\r").decode("utf-8", "replace")
