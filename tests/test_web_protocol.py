"""The page in web/ keeps its own copies of the protocol's rules: they must agree with hub/'s.

The same cases (hand-picked edges, then seeded random ones near each rule's
boundaries) go through hub/'s functions and, in one node process
(tests/web/protocol_verdicts.mjs), through web/'s; every verdict must match.
The page's own unit tests (tests/web/*.test.mjs) run here too, so CI runs them.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import subprocess
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import pytest
from processes import REPO_ROOT, require_tool

from hub import cursor
from hub.cursor import InvalidCursor
from hub.events import (
    BINARY_MEDIA_TYPE,
    ID_PART_MAX,
    RESERVED_EVENT_TYPE_PREFIX,
    RESERVED_EVENT_TYPES,
    InvalidEvent,
    StreamId,
    binary_data,
    check_event_type,
    decode_binary,
    parse_id,
)
from hub.sse import RESET_EVENT_TYPE, reset_notice
from hub.topics import TOPIC_MAX_LENGTH, InvalidTopic, check_topic

WEB_TESTS = REPO_ROOT / "tests" / "web"
VERDICTS_SCRIPT = WEB_TESTS / "protocol_verdicts.mjs"
NODE_TIMEOUT_S = 120
SEED = 20240611
"""Fixed, so that a failure shows again on the next run."""
RANDOM_CASES = 1500
SHOWN_MISMATCHES = 15

T = TypeVar("T")
Json = Any
"""What json.loads returns."""

BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
GRAMMAR_CHARS = "ABCXYZabcxyz0189_-./:"
ODD_CHARS = [*' ,;*#?{}\\"\n\r\t\x00', "é", "٣", "€", "😀", "\udc80"]


@pytest.fixture(scope="module")
def node() -> str:
    return require_tool("node")


def run_node(node: str, args: Sequence[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [node, *args],
        cwd=REPO_ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=NODE_TIMEOUT_S,
    )


def test_the_pages_unit_tests_pass(node: str) -> None:
    result = run_node(node, ["--test", "--test-reporter=spec", "tests/web/"])
    if result.returncode != 0:
        pytest.fail(
            f"node --test tests/web/ failed (exit {result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}",
            pytrace=False,
        )


# The cases ------------------------------------------------------------------


def near_grammar(rng: random.Random, chars: str, longest: int) -> str:
    """A string of about the grammar's length, mostly from its characters, sometimes not."""
    length = rng.choice([0, 1, 2, rng.randint(0, longest + 3), longest - 1, longest, longest + 1])
    text = [rng.choice(chars) for _ in range(length)]
    if text and rng.random() < 0.3:
        text[rng.randrange(len(text))] = rng.choice(ODD_CHARS)
    return "".join(text)


def topic_cases(rng: random.Random) -> list[str]:
    longest = "x" * TOPIC_MAX_LENGTH
    edges = ["a", "news", "A-Z_a.z/0:9", longest, longest + "x", "", "..", "/", "a b", "café"]
    edges += ["a\n", "\na", "a\r\n", "{a}", "a*", "\udc80", "😀"]
    return edges + [near_grammar(rng, GRAMMAR_CHARS, TOPIC_MAX_LENGTH) for _ in range(RANDOM_CASES)]


def event_type_cases(rng: random.Random) -> list[str]:
    reserved = sorted(RESERVED_EVENT_TYPES)
    edges = ["", "message", "price.update", "x" * 64, "x" * 65, "a b", "a\nb", "é", "stream"]
    edges += ["hub", "hub-", "hub-x", "HUB-x", "my-hub-x", " hub-x", "stream-reset-2"]
    edges += reserved + [t.upper() for t in reserved]
    randoms = []
    for _ in range(RANDOM_CASES):
        text = near_grammar(rng, GRAMMAR_CHARS, 64)
        if rng.random() < 0.2:
            text = RESERVED_EVENT_TYPE_PREFIX + text
        elif rng.random() < 0.1:
            text = rng.choice(reserved) + text[: rng.randint(0, 2)]
        randoms.append(text)
    return edges + randoms


def big_part(rng: random.Random) -> int:
    """0 to a little over 2^64: where floats lose digits, and around the largest part."""
    near_floats = [rng.randint(0, 2**53 + 10), 2**53 + rng.randint(-2, 2)]
    near_max = [rng.randint(0, ID_PART_MAX), ID_PART_MAX - rng.randint(0, 2)]
    over = ID_PART_MAX + rng.randint(1, 10**19)
    return rng.choice([0, 1, rng.randint(0, 2**41), *near_floats, *near_max, over])


def mutate(rng: random.Random, text: str, alphabet: str) -> str:
    """`text` with one character changed, inserted or dropped."""
    where = rng.randint(0, len(text))
    change = rng.choice(["insert", "replace", "drop"])
    new = rng.choice(alphabet + "".join(ODD_CHARS[:8]))
    if change == "insert":
        return text[:where] + new + text[where:]
    if change == "replace":
        return text[:where] + new + text[where + 1 :]
    return text[:where] + text[where + 1 :]


def id_cases(rng: random.Random) -> list[str]:
    top, over = ID_PART_MAX, ID_PART_MAX + 1
    edges = ["0-0", "1700000000000-3", "007-01", f"{top}-{top}", f"{over}-0", f"0-{over}"]
    edges += ["9" * 20 + "-0", "1" * 21 + "-0", "9007199254740993-0", "", "1", "1-", "-1"]
    edges += ["1-2-3", "a-1", " 1-2", "1-2 ", "1-2\n", "+1-2", "1.5-2", "٣-1", "1-٣"]
    randoms = []
    for _ in range(RANDOM_CASES):
        text = f"{big_part(rng)}-{big_part(rng)}"
        randoms.append(mutate(rng, text, "0123456789-") if rng.random() < 0.4 else text)
    return edges + randoms


def to_base36(number: int) -> str:
    digits = ""
    while True:
        number, rest = divmod(number, 36)
        digits = BASE36[rest] + digits
        if not number:
            return digits


def cursor_cases(rng: random.Random) -> list[tuple[str, int]]:
    over = to_base36(ID_PART_MAX + 1)
    top = to_base36(ID_PART_MAX)
    edges = [("1700000000000-3", 1), ("m3xk2a1c.0.4f-2.0", 3), ("m3xk2a1c.0.4f-2.0", 2)]
    edges += [("z.z-z.0", 2), ("a.0-1-2.0", 2), ("a.0-.0", 2), ("a.-1.0", 2), ("a..0", 2)]
    edges += [(".0.0", 2), ("A.0.0", 2), ("a.b.0", 2), ("a.0.0-", 2), ("a.0-0.0", 2)]
    edges += [("0" * 14 + ".0.0", 2), ("0" * 15 + ".0.0", 2)]
    edges += [(f"{top}.0.0-{top}", 2), (f"{over}.0.0", 2), (f"{over}.1.1", 2), (f"1.0.0-{over}", 2)]
    edges += [("1-0", 2), ("", 1), ("", 2), ("1.0", 2), ("1-0" + "0" * 4100, 1)]
    # Around the length limit: 1000 topics fit, 1200 do not.
    edges += [(".".join(["1"] + ["0-1"] * n), n) for n in (1000, 1200)]
    randoms = []
    for _ in range(RANDOM_CASES):
        count = rng.choice([1, 2, 2, 3, 5])
        positions: list[StreamId] = [
            (big_part(rng) % (ID_PART_MAX + 1), rng.choice([0, 0, big_part(rng)]))
            for _ in range(count)
        ]
        text = cursor.encode(positions)
        if rng.random() < 0.5:
            text = mutate(rng, text, BASE36 + ".-")
        randoms.append((text, rng.choice([count, count, count + 1, max(1, count - 1)])))
    return edges + randoms


def canonical_cases(rng: random.Random) -> list[list[str]]:
    def topics() -> list[str]:
        return [near_grammar(rng, GRAMMAR_CHARS, 6) or "a" for _ in range(rng.randint(1, 8))]

    return [list("baBA_1:-./z")] + [topics() for _ in range(200)]


def data_url_cases(rng: random.Random) -> list[str]:
    b64_chars = "AQIDBw+/="
    heads = ["data:", "data:image/png", "data:;name=x", "data:text/plain;charset=utf-8;name=a%20b"]
    heads += ["data:a;b=;c=d", "data:a,b", "data:;x", "DATA:", " data:", "data:a;name=é"]
    edges = [binary_data(bytes(range(n)), "image/png", "dot.png") for n in range(8)]
    edges += ["", "hello", "data:", "data:text/plain,hello", "data:\n;base64,AAAA"]
    edges += [f"data:;base64,{b64}" for b64 in ["", "AAAA", "AB==", "abc", "ab=c", "AA==AAAA", "="]]
    edges += ["data:;base64,AAAA ", "data:;base64,AA\nAA"]
    randoms = []
    for _ in range(RANDOM_CASES):
        payload = "".join(rng.choice(b64_chars) for _ in range(rng.randint(0, 10)))
        randoms.append(f"{rng.choice(heads)};base64,{payload}")
    return edges + randoms


NAMES = ["", "a", "a b.png", "café menu.txt", "it's (1)*!~.txt", "50%;x=y,z", "日本語.bin", "😀"]
NAMES += ["a/b\\c?d#e&f=g+h"]
MEDIA_TYPES = ["", "image/png", "text/plain;charset=utf-8", "application/x-test"]


def binary_cases(rng: random.Random) -> list[tuple[bytes, str, str]]:
    return [
        (rng.randbytes(rng.randint(0, 40)), kind, name) for kind in MEDIA_TYPES for name in NAMES
    ]


def reset_notice_cases() -> list[tuple[str, StreamId | None]]:
    longest = "x" * TOPIC_MAX_LENGTH
    top = (ID_PART_MAX, ID_PART_MAX)
    return [("news", (1700000000000, 0)), ("a/b:c.d_e-f", (5, 7)), (longest, None), ("t", top)]


# Python's verdicts ----------------------------------------------------------


def accepts(check: Callable[[str], object], *refusals: type[Exception]) -> Callable[[str], bool]:
    def verdict(text: str) -> bool:
        try:
            check(text)
        except refusals:
            return False
        return True

    return verdict


def id_verdict(text: str) -> list[str] | None:
    try:
        ms, seq = parse_id(text)
    except ValueError:
        return None
    return [str(ms), str(seq)]


def cursor_verdict(case: tuple[str, int]) -> list[list[str]] | None:
    try:
        return [[str(ms), str(seq)] for ms, seq in cursor.decode(*case)]
    except InvalidCursor:
        return None


def data_url_verdict(data: str) -> int | str | None:
    """The decoded size; None for text; 'undecodable' when the base64 does not decode."""
    try:
        payload = decode_binary(data)
    except binascii.Error:
        return "undecodable"
    return None if payload is None else len(payload)


def reset_notice_data(topic: str, first_kept: StreamId | None) -> tuple[str, str]:
    """The event type and data a browser hands over for hub/sse.py's notice."""
    event_type, data = "message", []
    for line in reset_notice(topic, first_kept).decode("utf-8").split("\n"):
        field, _, value = line.partition(": ")
        if field == "event":
            event_type = value
        elif field == "data":
            data.append(value)
    return event_type, "\n".join(data)


# Comparing ------------------------------------------------------------------


def js_verdicts(node: str, cases: dict[str, Json]) -> dict[str, Json]:
    result = run_node(node, [str(VERDICTS_SCRIPT)], stdin=json.dumps(cases))
    if result.returncode != 0:
        pytest.fail(
            f"{VERDICTS_SCRIPT.name} failed (exit {result.returncode}):\n{result.stderr}",
            pytrace=False,
        )
    verdicts: dict[str, Json] = json.loads(result.stdout)
    return verdicts


def same(case: object, python: object, js: Json) -> bool:
    return bool(python == js)


def assert_same(
    what: str,
    cases: Iterable[T],
    python: Callable[[T], object],
    js: Sequence[Json],
    agree: Callable[[T, object, Json], bool] = same,
) -> None:
    """Every case gets the same verdict from `python` as node gave (`js`, in order)."""
    cases = list(cases)
    assert len(js) == len(cases), f"{what}: {len(cases)} cases, {len(js)} verdicts from node"
    mismatches = []
    for case, j in zip(cases, js, strict=True):
        p = python(case)
        if not agree(case, p, j):
            mismatches.append((case, p, j))
    if mismatches:
        lines = [
            f"  {case!r:.80}: hub/ says {p!r}, web/ says {j!r}"
            for case, p, j in mismatches[:SHOWN_MISMATCHES]
        ]
        pytest.fail(
            f"web/ and hub/ disagree on {len(mismatches)} of {len(cases)} {what}:\n"
            + "\n".join(lines),
            pytrace=False,
        )


def data_urls_agree(data: str, python: object, js: Json) -> bool:
    """Both say text, or both the same size; web/ may also refuse base64 padded beyond the
    canonical length of what it decodes to (`AAAA=`), which some Pythons accept."""
    if js is None:
        if python is None or python == "undecodable":
            return True
        b64 = data.partition(";base64,")[2]
        return isinstance(python, int) and len(b64) != 4 * -(-python // 3)
    return isinstance(js, dict) and js.get("size") == python


@pytest.fixture
def rng() -> random.Random:
    """The same cases for each test, however the tests are selected."""
    return random.Random(SEED)


def test_the_constants_agree(node: str) -> None:
    constants = js_verdicts(node, {})["constants"]
    assert constants == {
        "resetEventType": RESET_EVENT_TYPE,
        "reservedEventTypes": sorted(RESERVED_EVENT_TYPES),
        "reservedEventTypePrefix": RESERVED_EVENT_TYPE_PREFIX,
        "idPartMax": str(ID_PART_MAX),
        "maxCursorLength": cursor.MAX_CURSOR_LENGTH,
        "binaryMediaType": BINARY_MEDIA_TYPE,
    }


def test_topics_agree(node: str, rng: random.Random) -> None:
    cases = topic_cases(rng)
    verdicts = js_verdicts(node, {"topics": cases})["topics"]
    assert_same("topics", cases, accepts(check_topic, InvalidTopic), verdicts)


def test_event_types_agree(node: str, rng: random.Random) -> None:
    cases = event_type_cases(rng)
    verdicts = js_verdicts(node, {"eventTypes": cases})["eventTypes"]
    assert_same("event types", cases, accepts(check_event_type, InvalidEvent), verdicts)


def test_stream_ids_agree(node: str, rng: random.Random) -> None:
    cases = id_cases(rng)
    assert_same("stream IDs", cases, id_verdict, js_verdicts(node, {"ids": cases})["ids"])


def test_cursors_agree(node: str, rng: random.Random) -> None:
    cases = cursor_cases(rng)
    verdicts = js_verdicts(node, {"cursors": cases})["cursors"]
    assert_same("cursors", cases, cursor_verdict, verdicts)
    decoded = sum(v is not None for v in verdicts)
    assert decoded > len(cases) // 4, f"only {decoded} of {len(cases)} cursors decode"


def test_topic_order_agrees(node: str, rng: random.Random) -> None:
    cases = canonical_cases(rng)
    verdicts = js_verdicts(node, {"canonical": cases})["canonical"]
    assert_same("topic lists", cases, lambda case: list(cursor.canonical_topics(case)), verdicts)


def test_binary_data_urls_agree(node: str, rng: random.Random) -> None:
    cases = data_url_cases(rng)
    verdicts = js_verdicts(node, {"dataUrls": cases})["dataUrls"]
    assert_same("data URLs", cases, data_url_verdict, verdicts, agree=data_urls_agree)
    binary = sum(v is not None for v in verdicts)
    assert binary > len(cases) // 10, f"only {binary} of {len(cases)} data URLs are binary"


def test_the_page_builds_and_reads_binary_events_as_hub_does(node: str, rng: random.Random) -> None:
    cases = binary_cases(rng)
    as_json = [[base64.b64encode(payload).decode(), kind, name] for payload, kind, name in cases]
    built = js_verdicts(node, {"binary": as_json})["binary"]
    assert_same("binary events built", cases, lambda case: binary_data(*case), built)
    read = js_verdicts(node, {"dataUrls": built})["dataUrls"]
    assert_same(
        "binary events read",
        cases,
        lambda case: {
            "size": len(case[0]),
            # The page shows the media type without its parameters.
            "mediaType": case[1].partition(";")[0] or BINARY_MEDIA_TYPE,
            "name": case[2],
        },
        read,
    )


def test_the_page_reads_the_stream_reset_notice(node: str) -> None:
    cases = reset_notice_cases()
    notices = [reset_notice_data(topic, first_kept) for topic, first_kept in cases]
    assert {event_type for event_type, _ in notices} == {RESET_EVENT_TYPE}
    verdicts = js_verdicts(node, {"resetNotices": [data for _, data in notices]})["resetNotices"]
    assert_same(
        "stream-reset notices",
        cases,
        lambda case: {
            "topic": case[0],
            "reason": "history-truncated",
            "firstKept": f"{case[1][0]}-{case[1][1]}" if case[1] else "",
        },
        verdicts,
    )
