"""`sse-publish`: publish events to the hub from the command line.

    sse-publish send news "hello"                 # one event; prints its ID
    tail -F app.log | sse-publish lines logs      # one event per line, live
    sse-publish follow logs /var/log/app.log      # the same, without tail
    sse-publish file images photo.png             # a file as one binary event
    sse-publish demo news                         # a few timed events to watch

`lines` and `follow` send a line alone when lines trickle in, and the lines that
are there at once in batches (`publish_many`). Every error is one line on
stderr: exit status 2 for a bad command line, 1 for anything else, 130 after
Ctrl-C.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import mimetypes
import os
import random
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from types import TracebackType
from typing import BinaryIO, NoReturn, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import redis

from hub.config import ConfigError, Settings
from hub.events import BINARY_MEDIA_TYPE, InvalidEvent, binary_data, check_event_type
from hub.publish import NotAllPublished
from hub.topics import InvalidTopic, check_topic
from publisher.client import DEFAULT_REDIS_URL, Publisher
from publisher.follow import DEFAULT_INTERVAL, FileFollower, LineTooLong
from publisher.http import HttpPublisher, HubUnreachable, PublishRefused

PROG = "sse-publish"
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130
DEFAULT_DELAYS = (0.0, 2.0, 5.0)
RETRY_BASE_SECONDS = 0.2
RETRY_CAP_SECONDS = 10.0
BATCH_LINES = 500
"""Most lines sent in one batch, when several are there at once."""
_READ_SIZE = 65_536

# type/subtype, without parameters: anything else would break the data: URL.
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")

T = TypeVar("T")


class CliError(Exception):
    """A failure to report as one line on stderr (exit status 1)."""


# --- sending, with optional retries ---------------------------------------------------


def backoff_delay(attempt: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry `attempt` (0-based): exponential, capped, jittered.

    Half of the delay is fixed and half random ("equal jitter"), so publishers
    that lost Redis together do not all come back in the same instant, and none
    retries at once.
    """
    ceiling = min(RETRY_CAP_SECONDS, RETRY_BASE_SECONDS * 2.0**attempt)
    return ceiling / 2 + rand() * ceiling / 2


def _retryable(exc: redis.exceptions.RedisError) -> bool:
    refused = (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError)
    if isinstance(exc, refused):
        return False
    return isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError))


class Sender:
    """Publishes through a `Publisher`, retrying lost connections and naming failures."""

    def __init__(
        self,
        settings: Settings,
        retries: int = 0,
        sleep: Callable[[float], None] = time.sleep,
        gateway: tuple[str, str] | None = None,
    ) -> None:
        self.retries = retries
        self._sleep = sleep
        self._url = settings.redis_url or DEFAULT_REDIS_URL
        self._where = _redact(self._url)
        self._publisher: Publisher | HttpPublisher
        if gateway is not None:
            self._publisher = HttpPublisher(*gateway)
            return
        try:
            self._publisher = Publisher(settings)
        except ValueError as exc:
            raise CliError(f"invalid Redis URL {self._where}: {exc}") from None

    def check_connection(self) -> None:
        """Fail now rather than at the first line, which may come much later."""
        if isinstance(self._publisher, HttpPublisher):
            return  # a gateway is asked at the first event
        self._call(self._publisher.ping)

    def text(self, topic: str, data: str, event_type: str = "") -> str:
        return self._call(lambda: self._publisher.publish(topic, data, event_type))

    def texts(
        self, topic: str, lines: Sequence[str], event_type: str, on_id: Callable[[str], None]
    ) -> None:
        """Publish `lines` as events, in order: one alone, several in one batch; each ID to
        `on_id` as soon as it is known. A retry sends only the events not yet published."""
        if len(lines) == 1:
            on_id(self.text(topic, lines[0], event_type))
            return
        events = [(topic, line, event_type) for line in lines]
        attempt = 0
        while events:
            failure: Exception | None = None
            try:
                published = self._publisher.publish_many(events)
            except NotAllPublished as exc:
                published = list(_leading_ids(exc.results))
                failure = cast(Exception, exc.results[len(published)])
            except (PublishRefused, HubUnreachable) as exc:
                published = list(_leading_ids(exc.ids))
                failure = exc
            for event_id in published:
                on_id(event_id)
            if failure is None:
                return
            events = events[len(published) :]
            self._retry_or_fail(failure, attempt)
            attempt += 1

    def binary(self, topic: str, payload: bytes, media_type: str, name: str) -> str:
        return self._call(lambda: self._publisher.publish_bytes(topic, payload, media_type, name))

    def _call(self, call: Callable[[], T]) -> T:
        attempt = 0
        while True:
            try:
                return call()
            except (PublishRefused, HubUnreachable, redis.exceptions.RedisError) as exc:
                self._retry_or_fail(exc, attempt)
                attempt += 1

    def _retry_or_fail(self, exc: Exception, attempt: int) -> None:
        """Wait before retry `attempt` (from 0) after `exc`, or raise the `CliError` for it."""
        if isinstance(exc, PublishRefused):
            raise CliError(str(exc)) from None
        if isinstance(exc, HubUnreachable):
            if attempt >= self.retries:
                raise CliError(str(exc)) from None
        elif not isinstance(exc, redis.exceptions.RedisError) or not _retryable(exc):
            raise CliError(f"Redis error at {self._where}: {_reason(exc)}") from None
        elif attempt >= self.retries:
            tried = f" (gave up after {attempt} retries)" if attempt else ""
            raise CliError(f"cannot reach Redis at {self._where}: {_reason(exc)}{tried}") from None
        self._sleep(backoff_delay(attempt))

    def close(self) -> None:
        self._publisher.close()

    def __enter__(self) -> Sender:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _leading_ids(results: Sequence[object]) -> Iterator[str]:
    """The IDs before the first event that was not published."""
    for result in results:
        if not isinstance(result, str):
            return
        yield result


def _reason(exc: BaseException) -> str:
    """The most specific cause, e.g. 'Connection refused' rather than 'Error 111 ...'."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno:
            # asyncio's strerror is "Connect call failed (...)"; the errno says why.
            return os.strerror(cause.errno)
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        cause = cause.__cause__ or cause.__context__
    return str(exc).rstrip(".") or type(exc).__name__


def _redact(url: str) -> str:
    """The URL without its password, to show in messages."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


# --- commands ----------------------------------------------------------------------


def cmd_send(args: argparse.Namespace, settings: Settings, out: Callable[[str], None]) -> None:
    check_topic(args.topic)
    check_event_type(args.type)
    if args.data is not None:
        data: str = args.data
    else:
        if sys.stdin.isatty():
            hint = "reading the data from standard input (end it with Ctrl-D)"
            print(f"{PROG}: {hint}", file=sys.stderr)
        data = _read_stdin_event(sys.stdin.buffer, settings.max_event_bytes)
    if args.json:
        data = _compact_json(data)
    with Sender(settings, args.retry, gateway=_gateway(args)) as sender:
        out(sender.text(args.topic, data, args.type))


def cmd_lines(args: argparse.Namespace, settings: Settings, out: Callable[[str], None]) -> None:
    check_topic(args.topic)
    check_event_type(args.type)
    on_id = out if args.print_ids else _ignore
    stdin = cast(io.BufferedIOBase, sys.stdin.buffer)
    with Sender(settings, args.retry, gateway=_gateway(args)) as sender:
        sender.check_connection()
        for lines in read_line_batches(stdin, settings.max_event_bytes):
            sender.texts(args.topic, lines, args.type, on_id)


def cmd_follow(args: argparse.Namespace, settings: Settings, out: Callable[[str], None]) -> None:
    check_topic(args.topic)
    check_event_type(args.type)
    deadline = None if args.duration is None else time.monotonic() + args.duration
    on_id = out if args.print_ids else _ignore
    sent = 0
    follower = FileFollower(
        args.file,
        from_start=args.from_start,
        interval=args.interval,
        max_line_bytes=settings.max_event_bytes,
        stop=lambda: deadline is not None and time.monotonic() >= deadline,
    )
    with follower, Sender(settings, args.retry, gateway=_gateway(args)) as sender:
        sender.check_connection()
        if args.max_events == 0:
            return
        for lines in follower.batches():
            if args.max_events is not None:
                lines = lines[: args.max_events - sent]
            for start in range(0, len(lines), BATCH_LINES):
                sender.texts(args.topic, lines[start : start + BATCH_LINES], args.type, on_id)
            sent += len(lines)
            if sent == args.max_events:
                return


def cmd_file(args: argparse.Namespace, settings: Settings, out: Callable[[str], None]) -> None:
    check_topic(args.topic)
    name = os.path.basename(args.path)
    media_type = args.media_type or mimetypes.guess_type(args.path)[0] or BINARY_MEDIA_TYPE
    if not _MEDIA_TYPE.fullmatch(media_type):
        raise CliError(f"not a media type (type/subtype): {media_type!r}")
    limit = settings.max_event_bytes
    try:
        with open(args.path, "rb") as source:
            size = os.fstat(source.fileno()).st_size
            # Refuse a large file before reading it into memory.
            if _binary_event_size(size, media_type, name) > limit:
                raise CliError(_too_large(args.path, size, media_type, name, limit))
            payload = source.read(limit + 1)
    except OSError as exc:
        raise CliError(f"cannot read {args.path}: {exc.strerror or exc}") from None
    if _binary_event_size(len(payload), media_type, name) > limit:
        raise CliError(_too_large(args.path, len(payload), media_type, name, limit))
    with Sender(settings, args.retry, gateway=_gateway(args)) as sender:
        out(sender.binary(args.topic, payload, media_type, name))


def cmd_demo(args: argparse.Namespace, settings: Settings, out: Callable[[str], None]) -> None:
    check_topic(args.topic)
    check_event_type(args.type)
    delays: tuple[float, ...] = args.delays
    with Sender(settings, args.retry, gateway=_gateway(args)) as sender:
        first_sent: float | None = None  # the schedule counts from the first event, once sent
        for n, delay in enumerate(delays, start=1):
            if first_sent is None:
                time.sleep(delay)
            else:
                time.sleep(max(0.0, first_sent + delay - delays[0] - time.monotonic()))
            message = f"demo event {n} of {len(delays)}, {delay:g} s after the first"
            data = json.dumps({"n": n, "message": message}, separators=(",", ":"))
            out(sender.text(args.topic, data, args.type))
            if first_sent is None:
                first_sent = time.monotonic()


def read_line_batches(
    stream: io.BufferedIOBase, max_line_bytes: int, most: int = BATCH_LINES
) -> Iterator[list[str]]:
    """The lines of `stream` without their line endings, as soon as they are complete: those
    that are there at once come together, at most `most` in a list."""
    buffer = bytearray()
    while True:
        # What the pipe holds now, without waiting for more: one line when lines trickle
        # in, many when they come faster than they are sent.
        chunk = stream.read1(_READ_SIZE)
        if not chunk:
            if buffer:
                yield [_line(bytes(buffer), max_line_bytes)]
            return
        scanned = len(buffer)
        buffer += chunk
        end = buffer.rfind(b"\n", scanned)
        lines: list[str] = []
        too_long = None
        try:
            if end >= 0:
                for raw in bytes(buffer[:end]).split(b"\n"):
                    lines.append(_line(raw, max_line_bytes))
                del buffer[: end + 1]
            if len(buffer) - buffer.endswith(b"\r") > max_line_bytes:  # the line to come
                _line(bytes(buffer), max_line_bytes)
        except CliError as exc:
            too_long = exc  # the lines before it are sent before it is reported
        for start in range(0, len(lines), most):
            yield lines[start : start + most]
        if too_long is not None:
            raise too_long


def _line(raw: bytes, max_line_bytes: int) -> str:
    content = raw.removesuffix(b"\r")
    if len(content) > max_line_bytes:
        raise CliError(f"a line of standard input is longer than {max_line_bytes} bytes")
    return content.decode("utf-8", "replace")


def _read_stdin_event(stream: BinaryIO, max_bytes: int) -> str:
    raw = stream.read(max_bytes + 2)
    raw = raw.removesuffix(b"\n")
    if len(raw) > max_bytes:
        raise CliError(f"standard input is over the event size limit of {max_bytes} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CliError(
            "standard input is not UTF-8 text (send binary data with `sse-publish file`)"
        ) from None


def _compact_json(data: str) -> str:
    def refuse_constant(name: str) -> NoReturn:
        raise ValueError(f"{name} is not JSON")

    try:
        value = json.loads(data, parse_constant=refuse_constant)
    except ValueError as exc:
        raise CliError(f"data is not valid JSON: {exc}") from None
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _binary_event_size(size: int, media_type: str, name: str) -> int:
    return len(binary_data(b"", media_type, name)) + 4 * math.ceil(size / 3)


def _too_large(path: str, size: int, media_type: str, name: str, limit: int) -> str:
    encoded = _binary_event_size(size, media_type, name)
    return (
        f"{path} is {size} bytes, {encoded} bytes as an event: over HUB_MAX_EVENT_BYTES ({limit})"
    )


# --- command line --------------------------------------------------------------------


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return value


def _delays(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if any(not 0 <= v < math.inf for v in values):
        raise argparse.ArgumentTypeError(f"delays must be 0 or more: {text!r}")
    if list(values) != sorted(values):
        raise argparse.ArgumentTypeError(f"delays must not decrease: {text!r}")
    return values


class _IntermixedParser(argparse.ArgumentParser):
    """A command's parser: options may come between positionals (`send t --json '{}'`).

    Python 3.11's argparse otherwise gives the optional DATA nothing when an
    option separates it from TOPIC.
    """

    _intermixing = False

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._intermixing:  # the intermixed parse's own inner passes
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def _add_connection_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    # The options are accepted before and after the command; only the top-level
    # parser sets defaults, so a subcommand does not overwrite what came before it.
    default = None if defaults else argparse.SUPPRESS
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--redis-url",
        metavar="URL",
        default=default,
        help=f"Redis to publish to (default: HUB_REDIS_URL, else {DEFAULT_REDIS_URL})",
    )
    group.add_argument(
        "--prefix",
        metavar="PREFIX",
        default=default,
        help="prefix of the hub's Redis keys (default: HUB_KEY_PREFIX, else sse:)",
    )
    group.add_argument(
        "--hub",
        metavar="URL",
        default=default,
        help="publish through this gateway's POST /publish instead of Redis (needs --token)",
    )
    group.add_argument(
        "--token",
        metavar="TOKEN",
        default=default,
        help="with --hub: a JWT whose publish claims cover the topic, or HUB_PUBLISH_TOKEN",
    )


def _add_sending_options(parser: argparse.ArgumentParser, *, event_type: bool = True) -> None:
    if event_type:
        parser.add_argument(
            "--type", default="", metavar="TYPE", help="event type (default: message)"
        )
    parser.add_argument(
        "--retry",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="retry a lost Redis connection up to N times, with jittered exponential "
        "backoff (a retried event may, rarely, arrive twice); default 0: fail at once",
    )
    _add_connection_options(parser, defaults=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Publish events to the SSE hub's topics. Other settings come from the "
        "HUB_* environment variables.",
        epilog="Run `%(prog)s COMMAND --help` for a command's options.",
    )
    _add_connection_options(parser, defaults=True)
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_IntermixedParser
    )

    def command(
        name: str, run: Callable[..., None], summary: str, details: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=summary, description=f"{summary}. {details}")
        sub.set_defaults(run=run)
        return sub

    send = command(
        "send",
        cmd_send,
        "send one event and print its ID",
        "Without DATA, all of standard input is the event's data (less one final newline).",
    )
    send.add_argument("topic", metavar="TOPIC")
    send.add_argument("data", metavar="DATA", nargs="?", help="the event's data (text)")
    send.add_argument(
        "--json", action="store_true", help="check that DATA is JSON and send it compacted"
    )
    _add_sending_options(send)

    lines = command(
        "lines",
        cmd_lines,
        "send each line of standard input as its own event",
        "Each line is sent as soon as it arrives, so `tail -F app.log | sse-publish lines logs` "
        f"streams a log live; lines that are there at once go together, up to {BATCH_LINES} in "
        "one batch. Invalid UTF-8 bytes become U+FFFD.",
    )
    lines.add_argument("topic", metavar="TOPIC")
    lines.add_argument("--print-ids", action="store_true", help="print each event's ID")
    _add_sending_options(lines)

    follow = command(
        "follow",
        cmd_follow,
        "send each line appended to a file as its own event, like `tail -F`",
        "Starts at the end of the file, waits for it to exist, and follows it by name "
        "across rotation (reading the old file to its end first) and truncation. The lines "
        f"found at once go together, up to {BATCH_LINES} in one batch.",
    )
    follow.add_argument("topic", metavar="TOPIC")
    follow.add_argument("file", metavar="FILE")
    follow.add_argument(
        "--from-start", action="store_true", help="send the lines already in the file too"
    )
    follow.add_argument(
        "--interval",
        type=_positive_float,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"how often to look for new lines (default: {DEFAULT_INTERVAL})",
    )
    follow.add_argument(
        "--max-events", type=_non_negative_int, metavar="N", help="stop after sending N events"
    )
    follow.add_argument(
        "--duration", type=_positive_float, metavar="SECONDS", help="stop after SECONDS"
    )
    follow.add_argument("--print-ids", action="store_true", help="print each event's ID")
    _add_sending_options(follow)

    file = command(
        "file",
        cmd_file,
        "send a file's bytes as one binary event and print its ID",
        "The data is a data: URL (base64) with the file's media type and name; it must fit "
        "HUB_MAX_EVENT_BYTES once encoded.",
    )
    file.add_argument("topic", metavar="TOPIC")
    file.add_argument("path", metavar="PATH")
    file.add_argument(
        "--media-type", metavar="TYPE", help="media type (default: guessed from the file name)"
    )
    _add_sending_options(file, event_type=False)

    demo = command(
        "demo",
        cmd_demo,
        "send a few timed JSON events and print their IDs",
        'Each event\'s data is like {"n":1,"message":"..."}.',
    )
    demo.add_argument("topic", metavar="TOPIC")
    demo.add_argument(
        "--delays",
        type=_delays,
        default=DEFAULT_DELAYS,
        metavar="S,S,...",
        help="seconds after the start to send each event at (default: 0,2,5)",
    )
    _add_sending_options(demo)
    return parser


def _gateway(args: argparse.Namespace) -> tuple[str, str] | None:
    if args.hub is None:
        return None
    if not args.token:
        raise CliError("--hub needs --token")
    return args.hub, args.token


def _settings(args: argparse.Namespace) -> Settings:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    if args.redis_url is not None:
        settings = replace(settings, redis_url=args.redis_url)
    if args.prefix is not None:
        settings = replace(settings, key_prefix=args.prefix)
    return settings


def _ignore(text: str) -> None:
    pass


def _print_line(text: str) -> None:
    print(text, flush=True)


def _fail(message: str) -> int:
    one_line = " ".join(message.splitlines())
    print(f"{PROG}: error: {one_line}", file=sys.stderr, flush=True)
    return EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (argparse exits 2 by itself)."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args, _settings(args), _print_line)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Whoever read our output has gone; say nothing, and keep the
        # interpreter from complaining when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    except (CliError, InvalidTopic, InvalidEvent, LineTooLong) as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))
    except Exception as exc:  # never a traceback, even for a bug
        return _fail(f"unexpected {type(exc).__name__}: {exc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
