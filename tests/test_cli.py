"""`sse-publish` as a real process, against real Redis: what it sends is what the stream holds."""

from __future__ import annotations

import io
import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, cast

import pytest
import redis
from processes import REPO_ROOT, Gateways, RedisServer, free_port, require_tool, wait_until

from hub.config import Settings
from hub.events import decode_binary, parse_id
from hub.publish import NotAllPublished, NotSent
from hub.topics import Keys
from publisher.cli import RETRY_CAP_SECONDS, CliError, Sender, backoff_delay, read_line_batches

CLI = [sys.executable, "-m", "publisher.cli"]
ID = re.compile(r"\d+-\d+")
WAIT_SECONDS = 20.0  # generous: the machine is shared
UNREACHABLE = {"HUB_REDIS_TIMEOUT_SECONDS": "1"}
"""For a Redis that is not there: the client retries a refused connection until its Redis
timeout (5 s by default) is over, time in which nothing can change."""


def cli_env(
    redis_url: str, key_prefix: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(HUB_REDIS_URL=redis_url, HUB_KEY_PREFIX=key_prefix)
    env.update(extra or {})
    return env


def _default_sigint() -> None:
    # A shell starts background jobs with SIGINT ignored, and Python then leaves it
    # ignored: a test suite run with `&` would never see Ctrl-C reach the CLI.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Hub:
    """Runs the CLI with this test's Redis and prefix, and reads back the topic streams."""

    def __init__(self, redis_url: str, key_prefix: str) -> None:
        self.redis_url = redis_url
        self.key_prefix = key_prefix
        self.keys = Keys(key_prefix)

    def run(
        self,
        *args: str,
        input: bytes | str | None = b"",
        env: Mapping[str, str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        data = input.encode() if isinstance(input, str) else input
        result = subprocess.run(
            [*CLI, *args],
            input=data,
            capture_output=True,
            env=cli_env(self.redis_url, self.key_prefix, env),
            cwd=REPO_ROOT,
            timeout=timeout,
        )
        return subprocess.CompletedProcess(
            result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
        )

    def start(self, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*CLI, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=cli_env(self.redis_url, self.key_prefix, env),
            cwd=REPO_ROOT,
            preexec_fn=_default_sigint,
        )

    def entries(self, topic: str, url: str | None = None) -> list[tuple[str, str, str]]:
        """(id, type, data) of every event of `topic`, oldest first."""
        with redis.Redis.from_url(url or self.redis_url) as client:
            raw = client.xrange(self.keys.stream(topic))
        return [(sid.decode(), fields[b"t"].decode(), fields[b"d"].decode()) for sid, fields in raw]

    def data(self, topic: str) -> list[str]:
        return [data for _, _, data in self.entries(topic)]

    def wait_for(self, topic: str, count: int) -> list[str]:
        """The data of `topic` once it holds at least `count` events (fails after a while)."""

        def enough() -> list[str]:
            data = self.data(topic)
            return data if len(data) >= count else []

        return wait_until(
            enough,
            WAIT_SECONDS,
            f"{count} events in {topic}",
            observe=lambda: f"{topic} holds {self.data(topic)!r}",
        )


@pytest.fixture
def hub(redis_url: str, key_prefix: str) -> Hub:
    return Hub(redis_url, key_prefix)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test started; any still running at the end are killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def finish(process: subprocess.Popen[bytes], timeout: float = WAIT_SECONDS) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out.decode(), err.decode()


def write(stream: IO[bytes] | None, data: str) -> None:
    assert stream is not None
    stream.write(data.encode())
    stream.flush()


def assert_one_line_error(
    result: subprocess.CompletedProcess[str] | tuple[int, str, str], *fragments: str
) -> str:
    code, _out, err = (
        (result.returncode, result.stdout, result.stderr)
        if isinstance(result, subprocess.CompletedProcess)
        else result
    )
    assert "Traceback" not in err
    assert code == 1, (code, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sse-publish: error: "), err
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def assert_usage_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert "Traceback" not in result.stderr
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("usage: sse-publish")
    last = result.stderr.splitlines()[-1]
    assert last.startswith("sse-publish") and ": error: " in last and fragment in last, last


# --- help and options -----------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["send"], ["lines"], ["follow"], ["file"], ["demo"]])
def test_every_command_has_help(command: list[str]) -> None:
    script = Path(sys.executable).parent / "sse-publish"
    assert script.exists(), "the console script is installed"
    result = subprocess.run(
        [str(script), *command, "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: sse-publish {' '.join(command)}".rstrip())
    assert "--redis-url" in result.stdout and "--prefix" in result.stdout
    if command:
        assert "--retry" in result.stdout


def test_connection_options_override_the_environment(hub: Hub) -> None:
    other = hub.key_prefix + "other:"
    bad_env = {"HUB_REDIS_URL": f"redis://127.0.0.1:{free_port()}"}
    before = hub.run("--redis-url", hub.redis_url, "--prefix", other, "send", "t", "a", env=bad_env)
    after = hub.run("send", "t", "b", "--redis-url", hub.redis_url, "--prefix", other, env=bad_env)
    assert before.returncode == 0 and after.returncode == 0, before.stderr + after.stderr
    assert Hub(hub.redis_url, other).data("t") == ["a", "b"]
    assert hub.data("t") == []


def test_without_hub_redis_url_it_uses_the_local_default(hub: Hub) -> None:
    if hub.redis_url != "redis://127.0.0.1:6379":
        pytest.skip("the default address is only checked against the shared Redis")
    result = hub.run("send", "t", "x", env={"HUB_REDIS_URL": ""})
    assert result.returncode == 0, result.stderr
    assert hub.data("t") == ["x"]


# --- send ------------------------------------------------------------------------------


def test_send_text_exactly_and_print_its_id(hub: Hub) -> None:
    text = "héllo ✓ 🎉\nsecond line\n\n  indented: data: id: x\r\nlast"
    result = hub.run("send", "news/eu:1", text)
    assert result.returncode == 0, result.stderr
    [(sid, etype, data)] = hub.entries("news/eu:1")
    assert result.stdout == sid + "\n"
    assert (etype, data) == ("", text)


def test_send_with_a_type_and_options_between_positionals(hub: Hub) -> None:
    result = hub.run("send", "news", "--type", "greeting", "hi")
    assert result.returncode == 0, result.stderr
    assert [(t, d) for _, t, d in hub.entries("news")] == [("greeting", "hi")]


def test_send_reads_all_of_stdin_as_one_event(hub: Hub) -> None:
    assert hub.run("send", "t", input="line 1\nlïne 2\n\nline 4\n").returncode == 0
    assert hub.run("send", "t", input="no final newline").returncode == 0
    assert hub.run("send", "t", input="two final newlines\n\n").returncode == 0
    assert hub.data("t") == ["line 1\nlïne 2\n\nline 4", "no final newline", "two final newlines\n"]


def test_send_json_is_checked_and_compacted(hub: Hub) -> None:
    document = ' { "a" : [1, 2.5, "é"],\n "b": null, "c": {"d": true} } '
    assert hub.run("send", "t", "--json", document).returncode == 0
    assert hub.run("send", "t", "--json", input=document).returncode == 0
    compact = '{"a":[1,2.5,"é"],"b":null,"c":{"d":true}}'
    assert hub.data("t") == [compact, compact]
    assert json.loads(compact) == json.loads(document)


# --- lines -----------------------------------------------------------------------------


def test_lines_sends_each_line_as_it_arrives(
    hub: Hub, processes: list[subprocess.Popen[bytes]]
) -> None:
    process = hub.start("lines", "logs", "--type", "log", "--print-ids")
    processes.append(process)
    # Each line must arrive while the writer keeps the pipe open: no buffering until EOF.
    write(process.stdin, "first ✓\n")
    assert hub.wait_for("logs", 1) == ["first ✓"]
    write(process.stdin, "second, with CRLF\r\n\n")
    assert hub.wait_for("logs", 3) == ["first ✓", "second, with CRLF", ""]
    write(process.stdin, "last, without newline")
    code, out, err = finish(process)  # closes stdin: EOF
    assert (code, err) == (0, "")
    entries = hub.entries("logs")
    expected = ["first ✓", "second, with CRLF", "", "last, without newline"]
    assert [d for _, _, d in entries] == expected
    assert {t for _, t, _ in entries} == {"log"}
    assert out.split() == [sid for sid, _, _ in entries]


def test_tail_f_into_lines_streams_a_log_live(
    hub: Hub, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    tail = require_tool("tail")
    log = tmp_path / "app.log"
    log.write_text("already there\n")
    tailing = subprocess.Popen([tail, "-n", "+1", "-f", str(log)], stdout=subprocess.PIPE)
    processes.append(tailing)
    publishing = subprocess.Popen(
        [*CLI, "lines", "app"],
        stdin=tailing.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(hub.redis_url, hub.key_prefix),
        cwd=REPO_ROOT,
    )
    processes.append(publishing)
    assert hub.wait_for("app", 1) == ["already there"]
    for n in range(2, 5):
        with open(log, "a") as file:
            file.write(f"line {n}\n")
        assert hub.wait_for("app", n)[-1] == f"line {n}"
    tailing.terminate()
    assert finish(publishing) == (0, "", "")
    assert hub.data("app") == ["already there", "line 2", "line 3", "line 4"]


def test_lines_piped_all_at_once_are_sent_in_batches_in_order(hub: Hub) -> None:
    lines = [f"burst {n} ✓" for n in range(2_000)]
    result = hub.run("lines", "burst", "--type", "log", "--print-ids", input="\n".join(lines))
    assert (result.returncode, result.stderr) == (0, "")
    entries = hub.entries("burst")
    assert [d for _, _, d in entries] == lines
    assert {t for _, t, _ in entries} == {"log"}
    assert result.stdout.split() == [sid for sid, _, _ in entries]
    assert all(parse_id(a) < parse_id(b) for (a, _, _), (b, _, _) in itertools.pairwise(entries))


def test_lines_through_a_gateway_are_sent_in_batches_in_order(
    hub: Hub, gateway: Gateways, processes: list[subprocess.Popen[bytes]]
) -> None:
    gateway_url = gateway({"HUB_PUBLISH_TOKEN": "tok"}).url
    process = hub.start("lines", "burst", "--hub", gateway_url, "--token", "tok", "--print-ids")
    processes.append(process)
    write(process.stdin, "a trickle\n")
    assert hub.wait_for("burst", 1) == ["a trickle"]
    lines = [f"burst {n}" for n in range(1_500)]
    write(process.stdin, "".join(f"{line}\n" for line in lines))
    code, out, err = finish(process)
    assert (code, err) == (0, "")
    entries = hub.entries("burst")
    assert [d for _, _, d in entries] == ["a trickle", *lines]
    assert out.split() == [sid for sid, _, _ in entries]


def test_read_line_batches_gives_what_is_there_at_once() -> None:
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as reader, os.fdopen(write_fd, "wb", buffering=0) as writer:
        batches = read_line_batches(cast(io.BufferedIOBase, reader), 100, most=500)
        writer.write(b"one\n")
        assert next(batches) == ["one"]
        writer.write(b"two\r\nthr")
        assert next(batches) == ["two"]
        writer.write(b"ee\n" + b"".join(b"n%d\n" % n for n in range(1_200)))
        got = [next(batches) for _ in range(3)]
        assert [len(batch) for batch in got] == [500, 500, 201]
        assert [line for batch in got for line in batch] == [
            "three",
            *(f"n{n}" for n in range(1_200)),
        ]
        writer.write(b"short\n" + b"x" * 101 + b"\nnever\n")
        assert next(batches) == ["short"]
        with pytest.raises(CliError, match="longer than 100 bytes"):
            next(batches)


class FlakyPublisher:
    """Stands in for `Publisher`: its first batch is published in part, Redis failing."""

    def __init__(self, failure: Exception) -> None:
        self.failure = failure
        self.batches: list[list[str]] = []

    def publish_many(self, events: list[tuple[str, str, str]]) -> list[str]:
        self.batches.append([data for _, data, _ in events])
        if len(self.batches) == 1:
            raise NotAllPublished(["1-0", "1-1", self.failure, NotSent(self.failure)])
        return [f"2-{n}" for n in range(len(events))]

    def close(self) -> None:
        pass


def test_a_batch_retried_sends_again_only_what_was_not_published(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lost = redis.exceptions.ConnectionError("Connection lost")
    flaky = FlakyPublisher(lost)
    ids: list[str] = []
    with Sender(Settings(), retries=1, sleep=lambda seconds: None) as sender:
        monkeypatch.setattr(sender, "_publisher", flaky)
        sender.texts("t", ["a", "b", "c", "d"], "", ids.append)
    assert flaky.batches == [["a", "b", "c", "d"], ["c", "d"]]
    assert ids == ["1-0", "1-1", "2-0", "2-1"]
    refused = FlakyPublisher(redis.exceptions.ResponseError("OOM command not allowed"))
    ids.clear()
    with Sender(Settings(), retries=5, sleep=lambda seconds: None) as sender:
        monkeypatch.setattr(sender, "_publisher", refused)
        with pytest.raises(CliError, match="OOM"):
            sender.texts("t", ["a", "b", "c", "d"], "", ids.append)
    assert ids == ["1-0", "1-1"] and len(refused.batches) == 1


@pytest.mark.parametrize("command", ["lines", "follow"])
def test_ctrl_c_exits_quietly_with_130(
    hub: Hub, tmp_path: Path, processes: list[subprocess.Popen[bytes]], command: str
) -> None:
    log = tmp_path / "app.log"
    log.write_text("running\n")
    args = ["lines", "t"] if command == "lines" else ["follow", "t", str(log), "--from-start"]
    process = hub.start(*args)
    processes.append(process)
    write(process.stdin, "running\n")
    hub.wait_for("t", 1)  # it is past its start-up, waiting for more
    process.send_signal(signal.SIGINT)
    assert finish(process) == (130, "", "")


# --- follow ----------------------------------------------------------------------------


def test_follow_starts_at_the_end(
    hub: Hub, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    log = tmp_path / "app.log"
    log.write_text("old line\n")
    process = hub.start("follow", "app", str(log), "--interval", "0.05", "--duration", "60")
    processes.append(process)
    # Append probes until one arrives: from then on the follower is surely running.
    probes_written = itertools.count()

    def probe_arrived() -> bool:
        with open(log, "a") as file:
            file.write(f"probe {next(probes_written)}\n")
        return bool(hub.data("app"))

    wait_until(probe_arrived, WAIT_SECONDS, "a probe line to reach the stream", interval=0.1)
    with open(log, "a") as file:
        file.write("after the probes\n")
    data = hub.wait_for("app", 1)
    while data[-1] != "after the probes":
        data = hub.wait_for("app", len(data) + 1)
    assert "old line" not in data
    probes = data[:-1]
    first = int(probes[0].split()[1])
    assert probes == [f"probe {n}" for n in range(first, first + len(probes))]


def test_follow_across_append_rotation_and_truncation(
    hub: Hub, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    log = tmp_path / "app.log"
    log.write_text("one\n")
    process = hub.start(
        "follow", "app", str(log), "--from-start", "--interval", "0.05",
        "--max-events", "7", "--duration", "60", "--print-ids",
    )  # fmt: skip
    processes.append(process)
    assert hub.wait_for("app", 1) == ["one"]

    with open(log, "a") as file:
        file.write("two ✓\n")
    assert hub.wait_for("app", 2)[-1] == "two ✓"

    # Rotation: renamed, still written to by the old writer, then replaced.
    log.rename(tmp_path / "app.log.1")
    with open(tmp_path / "app.log.1", "a") as file:
        file.write("three, in the rotated file\n")
    log.write_text("four, in the new file\n")
    assert hub.wait_for("app", 4)[2:] == ["three, in the rotated file", "four, in the new file"]

    # Truncation in place (copytruncate).
    with open(log, "r+") as file:
        file.truncate(0)
    with open(log, "a") as file:
        file.write("five\n")
    assert hub.wait_for("app", 5)[-1] == "five"

    # A file that appears later is read from its start.
    log.unlink()
    time.sleep(0.3)
    log.write_text("six\nseven\n")
    code, out, err = finish(process)
    assert (code, err) == (0, "")
    entries = hub.entries("app")
    assert [d for _, _, d in entries] == [
        "one", "two ✓", "three, in the rotated file", "four, in the new file",
        "five", "six", "seven",
    ]  # fmt: skip
    assert out.split() == [sid for sid, _, _ in entries]


def test_follow_sends_a_backlog_in_batches_and_stops_at_max_events(
    hub: Hub, tmp_path: Path
) -> None:
    log = tmp_path / "app.log"
    lines = [f"backlog {n}" for n in range(1_200)]
    log.write_text("".join(f"{line}\n" for line in lines))
    result = hub.run(
        "follow", "app", str(log), "--from-start", "--max-events", "1000", "--print-ids",
        "--duration", "60",
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (0, "")
    entries = hub.entries("app")
    assert [d for _, _, d in entries] == lines[:1000]
    assert result.stdout.split() == [sid for sid, _, _ in entries]


def test_follow_waits_for_the_file(
    hub: Hub, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    log = tmp_path / "not-yet" / "app.log"
    # --from-start: the file may appear before the process is up, and must be read
    # whole either way (test_follow.py checks that a late file is read whole without it).
    args = ["follow", "app", str(log), "--interval", "0.05", "--max-events", "2", "--from-start"]
    process = hub.start(*args, "--duration", "60")
    processes.append(process)
    time.sleep(0.5)
    assert process.poll() is None, "a missing file is waited for, not an error"
    log.parent.mkdir()
    log.write_text("hello\nworld\n")
    assert finish(process) == (0, "", "")
    assert hub.data("app") == ["hello", "world"]


def test_follow_stops_after_its_duration(hub: Hub, tmp_path: Path) -> None:
    started = time.monotonic()
    result = hub.run("follow", "app", str(tmp_path / "never.log"), "--duration", "1")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert time.monotonic() - started >= 1
    assert hub.data("app") == []


# --- file ------------------------------------------------------------------------------


def test_file_round_trips_bytes_exactly(hub: Hub, tmp_path: Path) -> None:
    payload = random.Random(7).randbytes(100_000)
    path = tmp_path / "snapshot ü.png"
    path.write_bytes(payload)
    result = hub.run("file", "images", str(path))
    assert result.returncode == 0, result.stderr
    [(sid, etype, data)] = hub.entries("images")
    assert result.stdout == sid + "\n"
    assert etype == ""
    assert data.startswith("data:image/png;name=snapshot%20%C3%BC.png;base64,")
    assert decode_binary(data) == payload


def test_file_media_type_falls_back_and_can_be_given(hub: Hub, tmp_path: Path) -> None:
    path = tmp_path / "blob.unknownext"
    path.write_bytes(b"\x00\x01\xff")
    assert hub.run("file", "t", str(path)).returncode == 0
    assert hub.run("file", "t", str(path), "--media-type", "text/plain").returncode == 0
    first, second = hub.data("t")
    assert first.startswith("data:application/octet-stream;name=blob.unknownext;base64,")
    assert second.startswith("data:text/plain;name=blob.unknownext;base64,")
    assert decode_binary(first) == decode_binary(second) == b"\x00\x01\xff"


@pytest.mark.parametrize("media_type", ["text", "text/plain;charset=utf-8", "a/b,c", ""])
def test_file_bad_media_type(hub: Hub, tmp_path: Path, media_type: str) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"x")
    result = hub.run("file", "t", str(path), "--media-type", media_type)
    if media_type:
        assert_one_line_error(result, "not a media type")
    else:  # empty: guessed, as if not given
        assert result.returncode == 0, result.stderr


def test_file_over_the_size_limit_once_encoded(hub: Hub, tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"x" * 900)  # fits raw, but not as base64
    result = hub.run("file", "t", str(path), env={"HUB_MAX_EVENT_BYTES": "1000"})
    assert_one_line_error(result, "data.bin is 900 bytes", "HUB_MAX_EVENT_BYTES (1000)")
    assert hub.data("t") == []


@pytest.mark.parametrize("name", ["missing.bin", "."])
def test_file_unreadable(hub: Hub, tmp_path: Path, name: str) -> None:
    result = hub.run("file", "t", str(tmp_path / name))
    reason = "No such file or directory" if name == "missing.bin" else "Is a directory"
    assert_one_line_error(result, "cannot read", reason)


# --- demo ------------------------------------------------------------------------------


def test_demo_sends_timed_json_events(hub: Hub) -> None:
    result = hub.run("demo", "news", "--delays", "0,0.3,0.8")
    assert result.returncode == 0, result.stderr
    entries = hub.entries("news")
    assert result.stdout.split() == [sid for sid, _, _ in entries]
    documents = [json.loads(data) for _, _, data in entries]
    assert [doc["n"] for doc in documents] == [1, 2, 3]
    assert all(isinstance(doc["message"], str) and doc["message"] for doc in documents)
    # Stream IDs are Redis's clock in ms: the events went out at least that far apart.
    times = [parse_id(sid)[0] for sid, _, _ in entries]
    assert times[1] - times[0] >= 250 and times[2] - times[0] >= 750


@pytest.mark.parametrize("delays", ["1,x", "2,1", "-1", ""])
def test_demo_bad_delays_are_a_usage_error(hub: Hub, delays: str) -> None:
    assert_usage_error(hub.run("demo", "t", "--delays", delays), "--delays")


def test_retry_backoff_grows_is_jittered_and_capped() -> None:
    assert [backoff_delay(n, rand=lambda: 0.0) for n in range(3)] == [0.1, 0.2, 0.4]
    assert [backoff_delay(n, rand=lambda: 1.0) for n in range(3)] == [0.2, 0.4, 0.8]
    assert backoff_delay(50, rand=lambda: 1.0) == RETRY_CAP_SECONDS
    assert backoff_delay(50, rand=lambda: 0.0) == RETRY_CAP_SECONDS / 2


# --- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [["send", "t", "x"], ["lines", "t"], ["file", "t", "FILE"],
     ["demo", "t", "--delays", "0"], ["follow", "t", "FILE", "--from-start"]],
)  # fmt: skip
def test_unreachable_redis(hub: Hub, tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "file.txt"
    path.write_text("a line\n")
    url = f"redis://127.0.0.1:{free_port()}"
    args = [str(path) if arg == "FILE" else arg for arg in command]
    result = hub.run("--redis-url", url, *args, input="a line\n", env=UNREACHABLE)
    line = assert_one_line_error(result)
    assert line == f"sse-publish: error: cannot reach Redis at {url}: Connection refused"


@pytest.mark.parametrize("command", [["lines", "t"], ["follow", "t", "FILE"]])
def test_unreachable_redis_is_reported_before_any_input(
    hub: Hub, tmp_path: Path, command: list[str]
) -> None:
    url = f"redis://127.0.0.1:{free_port()}"
    args = [str(tmp_path / "app.log") if arg == "FILE" else arg for arg in command]
    process = hub.start(
        "--redis-url", url, *args, env=UNREACHABLE
    )  # stdin stays open, the file stays empty
    try:
        result = finish(process)
    finally:
        process.kill()
        process.wait()
    assert_one_line_error(result, f"cannot reach Redis at {url}: Connection refused")


def test_the_password_is_not_shown(hub: Hub) -> None:
    url = f"redis://user:s3cret@127.0.0.1:{free_port()}/0"
    result = hub.run("send", "t", "x", "--redis-url", url, env=UNREACHABLE)
    assert_one_line_error(result, "redis://user:***@127.0.0.1")
    assert "s3cret" not in result.stderr


def test_retry_gives_up_after_backoff(hub: Hub) -> None:
    url = f"redis://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = hub.run("send", "t", "x", "--retry", "2", "--redis-url", url, env=UNREACHABLE)
    elapsed = time.monotonic() - started
    assert_one_line_error(result, f"cannot reach Redis at {url}", "gave up after 2 retries")
    assert elapsed >= 0.3  # at least half of 0.2 s + 0.4 s


def test_retry_succeeds_once_redis_is_back(
    hub: Hub, processes: list[subprocess.Popen[bytes]]
) -> None:
    server = RedisServer()  # not started yet: its port refuses connections
    try:
        process = hub.start("send", "t", "back", "--retry", "8", "--redis-url", server.url)
        processes.append(process)
        time.sleep(0.5)
        server.start()
        code, out, err = finish(process, timeout=60)
        assert (code, err) == (0, "")
        [(sid, _, data)] = hub.entries("t", url=server.url)
        assert (out.strip(), data) == (sid, "back")
    finally:
        server.close()


def test_no_retry_fails_at_once(hub: Hub) -> None:
    started = time.monotonic()
    result = hub.run("send", "t", "x", "--redis-url", f"redis://127.0.0.1:{free_port()}")
    assert_one_line_error(result, "Connection refused")
    assert "gave up" not in result.stderr
    assert time.monotonic() - started < 15


def test_an_invalid_redis_url(hub: Hub) -> None:
    assert_one_line_error(hub.run("send", "t", "x", "--redis-url", "http://x"), "invalid Redis URL")


@pytest.mark.parametrize(
    "command", [["send", "bad topic", "x"], ["lines", "bad topic"], ["file", "bad topic", "FILE"],
                ["demo", "bad topic"], ["follow", "bad topic", "FILE"], ["send", "", "x"]],
)  # fmt: skip
def test_invalid_topic(hub: Hub, tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "file.txt"
    path.write_text("x\n")
    args = [str(path) if arg == "FILE" else arg for arg in command]
    # stdin stays open: a bad topic is reported before any input is read.
    process = hub.start(*args)
    try:
        result = finish(process)
    finally:
        process.kill()
        process.wait()
    assert_one_line_error(result, "topic")


@pytest.mark.parametrize("command", [["send", "t", "x"], ["lines", "t"], ["demo", "t"]])
def test_invalid_event_type(hub: Hub, command: list[str]) -> None:
    result = hub.run(*command, "--type", "has space", input="x\n")
    assert_one_line_error(result, "event type 'has space'")
    assert hub.data("t") == []


def test_too_large_data(hub: Hub) -> None:
    env = {"HUB_MAX_EVENT_BYTES": "10"}
    assert hub.run("send", "t", "0123456789", env=env).returncode == 0
    assert_one_line_error(
        hub.run("send", "t", "ééééé!", env=env), "event data is 11 bytes, over the limit of 10"
    )
    assert_one_line_error(hub.run("send", "t", input="0123456789A\n", env=env), "limit of 10")
    result = hub.run("lines", "t", input="short\n0123456789A\nnever\n", env=env)
    assert_one_line_error(result, "longer than 10 bytes")
    assert hub.data("t") == ["0123456789", "short"]


@pytest.mark.parametrize(
    ("document", "reason"),
    [("{x", "not valid JSON"), ("NaN", "NaN is not JSON"), ("", "not valid JSON"),
     ('{"a": 1} trailing', "Extra data")],
)  # fmt: skip
def test_bad_json(hub: Hub, document: str, reason: str) -> None:
    assert_one_line_error(hub.run("send", "t", "--json", document), reason)
    assert hub.data("t") == []


def test_stdin_that_is_not_text(hub: Hub) -> None:
    result = hub.run("send", "t", input=b"\xff\xfe\x00")
    assert_one_line_error(result, "not UTF-8", "sse-publish file")


def test_data_that_is_not_unicode(hub: Hub) -> None:
    # Undecodable bytes in argv reach Python as lone surrogates.
    result = hub.run("send", "t", os.fsdecode(b"bad \xff"))
    assert_one_line_error(result, "not valid Unicode")


def test_follow_a_directory(hub: Hub, tmp_path: Path) -> None:
    result = hub.run("follow", "t", str(tmp_path), "--duration", "5")
    assert_one_line_error(result, "Is a directory")


def test_bad_settings_in_the_environment(hub: Hub) -> None:
    result = hub.run("send", "t", "x", env={"HUB_MAX_EVENT_BYTES": "lots"})
    assert_one_line_error(result, "HUB_MAX_EVENT_BYTES")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [(["send"], "TOPIC"), (["send", "t", "a", "b"], "unrecognized"), (["nope"], "invalid choice"),
     (["follow", "t", "f", "--interval", "0"], "--interval"),
     (["send", "t", "--retry", "-1"], "--retry"),
     ([], "COMMAND")],
)  # fmt: skip
def test_usage_errors_exit_2(hub: Hub, args: list[str], fragment: str) -> None:
    assert_usage_error(hub.run(*args), fragment)
