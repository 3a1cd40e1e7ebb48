"""FileFollower follows a file by name like `tail -F`, polled step by step (no sleeping)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from publisher.follow import FileFollower, LineTooLong


def append(path: Path, data: str | bytes) -> None:
    with open(path, "ab") as file:
        file.write(data.encode() if isinstance(data, str) else data)


def test_starts_at_the_end_and_yields_appended_lines(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("old 1\nold 2\n")
    with FileFollower(log) as follower:
        assert follower.poll() == []
        append(log, "new 1\nnew 2\n")
        assert follower.poll() == ["new 1", "new 2"]
        assert follower.poll() == []
        append(log, "new 3\n")
        assert follower.poll() == ["new 3"]


def test_from_start_yields_the_existing_lines_first(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("old 1\nold 2\n")
    with FileFollower(log, from_start=True) as follower:
        append(log, "new\n")
        assert follower.poll() == ["old 1", "old 2", "new"]


def test_a_line_is_yielded_once_complete_and_without_its_ending(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("")
    with FileFollower(log) as follower:
        append(log, "par")
        assert follower.poll() == []
        append(log, "tial\r\n\nnext ünïcödé ✓\n")
        assert follower.poll() == ["partial", "", "next ünïcödé ✓"]


def test_invalid_utf8_becomes_replacement_characters(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("")
    with FileFollower(log) as follower:
        append(log, b"bad \xff\xfe byte\n")
        assert follower.poll() == ["bad \ufffd\ufffd byte"]


def test_waits_for_the_file_and_reads_a_new_file_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "later" / "app.log"
    with FileFollower(log) as follower:
        assert follower.poll() == []
        log.parent.mkdir()
        assert follower.poll() == []
        log.write_text("first\nsecond\n")
        assert follower.poll() == ["first", "second"]


def test_rotation_reads_the_old_file_to_its_end_then_the_new_one(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    rotated = tmp_path / "app.log.1"
    log.write_text("")
    with FileFollower(log) as follower:
        append(log, "a\n")
        assert follower.poll() == ["a"]
        log.rename(rotated)
        # The writer has not reopened yet: it still writes to the renamed file.
        append(rotated, "b\n")
        assert follower.poll() == ["b"]
        append(rotated, "c\nunfinished")
        log.write_text("d\n")
        assert follower.poll() == ["c", "unfinished", "d"]
        append(rotated, "lost: the old file is no longer followed\n")
        append(log, "e\n")
        assert follower.poll() == ["e"]


def test_rotation_before_a_poll_loses_nothing(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("")
    with FileFollower(log) as follower:
        append(log, "a\n")
        log.rename(tmp_path / "app.log.1")
        log.write_text("b\n")
        assert follower.poll() == ["a", "b"]


def test_a_file_replaced_atomically_is_read_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "state.txt"
    log.write_text("v1\n")
    with FileFollower(log, from_start=True) as follower:
        assert follower.poll() == ["v1"]
        replacement = tmp_path / "state.tmp"
        replacement.write_text("v2\n")
        os.replace(replacement, log)
        assert follower.poll() == ["v2"]


def test_a_deleted_and_recreated_file_is_followed(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("")
    with FileFollower(log) as follower:
        append(log, "a\n")
        log.unlink()
        assert follower.poll() == ["a"]
        assert follower.poll() == []
        log.write_text("b\n")
        assert follower.poll() == ["b"]


def test_truncation_starts_again_from_the_beginning(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("")
    with FileFollower(log) as follower:
        append(log, "a long first line\nanother long line\n")
        assert follower.poll() == ["a long first line", "another long line"]
        with open(log, "r+b") as file:  # copytruncate: same file, emptied in place
            file.truncate(0)
        append(log, "short\n")
        assert follower.poll() == ["short"]
        log.write_text("tiny\n")  # reopened with O_TRUNC, shorter than before
        assert follower.poll() == ["tiny"]
        append(log, "after\n")
        assert follower.poll() == ["after"]


def test_a_large_backlog_is_read_over_several_polls_in_order(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    lines = [f"line {i:07d} " + "x" * 100 for i in range(60_000)]  # about 6.7 MB
    log.write_text("".join(line + "\n" for line in lines))
    with FileFollower(log, from_start=True) as follower:
        first = follower.poll()
        assert 0 < len(first) < len(lines), "one poll reads a bounded amount"
        log.rename(tmp_path / "big.log.1")
        log.write_text("new file\n")
        got = first
        for _ in range(10):
            got += follower.poll()
        assert got == [*lines, "new file"]


def test_an_overlong_line_is_an_error(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("")
    with FileFollower(log, max_line_bytes=10) as follower:
        append(log, "0123456789\r\n")
        assert follower.poll() == ["0123456789"]
        append(log, "0123456789A")  # too long even before it ends
        with pytest.raises(LineTooLong, match="longer than 10 bytes"):
            follower.poll()


def test_iteration_polls_until_the_stop_condition(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("")
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        # Another line is written while the follower waits.
        naps.append(seconds)
        append(log, f"line {len(naps)}\n")

    follower = FileFollower(log, interval=0.5, stop=lambda: len(naps) >= 3, sleep=sleep)
    with follower:
        assert list(follower) == ["line 1", "line 2", "line 3"]
    assert naps == [0.5, 0.5, 0.5]


def test_batches_hold_the_lines_of_each_poll_together(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("")
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 1:
            append(log, "a\nb\nc\n")
        elif len(naps) == 3:
            append(log, "d\n")

    follower = FileFollower(log, interval=0.5, stop=lambda: len(naps) >= 4, sleep=sleep)
    with follower:
        assert list(follower.batches()) == [["a", "b", "c"], ["d"]]
    assert naps == [0.5, 0.5, 0.5, 0.5]


def test_the_interval_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="interval"):
        FileFollower(tmp_path / "x", interval=0)


def test_a_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        FileFollower(tmp_path)
