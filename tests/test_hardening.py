"""A gateway reached directly by hostile clients: bounded memory, closed sockets, clear refusals.

Each test answers one finding of a red-team pass over a real gateway process
(with a real Redis): what an anonymous client, or a publisher with Redis
rights, could do to it. Memory is read from the gateway's RSS, with the bound
stated in the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import jwt
import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from processes import Gateway, Gateways, wait_until
from sse_client import Listener, metric, publisher

from hub.events import InvalidEvent
from hub.topics import Keys

SECRET = "a-test-secret-of-at-least-32-bytes!"
MIB = 1024 * 1024


@pytest.fixture(autouse=True)
def enough_file_descriptors() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4096)), hard))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def metrics_of(url: str) -> str:
    return httpx.get(url + "/metrics", timeout=10).text


def slow_disconnects(url: str) -> float:
    return metric(metrics_of(url), "hub_slow_client_disconnects_total")


class PeakRss:
    """The highest resident memory of a process seen by sample()."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.mib = rss_mib(pid)

    def sample(self) -> bool:
        self.mib = max(self.mib, rss_mib(self.pid))
        return True


def non_reading_socket(port: int) -> socket.socket:
    """A TCP connection whose receive buffer is tiny, so the gateway's writes to it stall."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


LISTEN, TIME_WAIT, CLOSE = "0A", "06", "07"


def server_connections(port: int) -> int:
    """Sockets the kernel holds for the server's side of connections to `port`.

    Read from the kernel's table, so the clients need not read anything: reading
    would drain the data that keeps a closing socket open. A socket closed with
    data its peer never read stays (FIN_WAIT1, still sending) unless it is reset.
    """
    held = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if int(local.rsplit(":", 1)[1], 16) == port and state not in (LISTEN, TIME_WAIT, CLOSE):
                held += 1
    return held


def response_of(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(timeout)
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def received_until(sock: socket.socket, marker: bytes, timeout: float = 10) -> bytes:
    """What the server sent, up to and including `marker` (or all of it by the timeout)."""
    sock.settimeout(timeout)
    answer = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while marker not in answer and (chunk := sock.recv(65536)):
            answer += chunk
    return answer


@contextlib.contextmanager
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        yield opened
    finally:
        for sock in opened:
            sock.close()


def no_traceback_in(log: str) -> None:
    assert "Traceback" not in log, log[-3000:]


# -- 1 and 3: what a client does not read is bounded, and its socket closed for real -----------


async def fill(redis_url: str, key_prefix: str, topic: str, events: int, size: int) -> None:
    async with publisher(redis_url, key_prefix) as pub:
        for n in range(events):
            await pub.publish(topic, f"{n:06d}" + "x" * (size - 6))


def never_reading_streams_grow_rss_by(hub: Gateway, request: bytes, count: int) -> float:
    """Open `count` streams with `request` that never read; the gateway's peak RSS growth (MiB).

    Returns once the gateway has dropped them all as slow and closed their sockets.
    """
    before = rss_mib(hub.pid)
    with sockets() as stuck:
        for _ in range(count):
            sock = non_reading_socket(hub.port)
            sock.sendall(request)
            stuck.append(sock)
        peak = PeakRss(hub.pid)
        wait_until(
            lambda: peak.sample() and slow_disconnects(hub.url) >= count,
            30,
            f"the {count} stalled clients dropped as slow",
            observe=lambda: f"{slow_disconnects(hub.url):.0f} dropped",
            interval=0.1,
        )
        wait_until(
            lambda: server_connections(hub.port) == 0, 10, "the gateway closed their sockets"
        )
    return peak.mib - before


def test_resuming_clients_that_never_read_hold_no_more_than_their_bound(
    gateway: Gateways, redis_url: str, key_prefix: str
) -> None:
    """Finding 1: 50 never-reading resumes of 1,000 events of 10 KB (10 MB of history each).

    Before: +466 MiB and never dropped. Bound: the gateway grows by under 80 MiB while
    they hang (a shared page, and at most one replay window each), they are dropped as
    slow once their writes stall, and their sockets are closed.
    """
    hub = gateway({"HUB_CLIENT_STALL_SECONDS": "2"})
    asyncio.run(fill(redis_url, key_prefix, "history", 1000, 10_000))
    request = b"GET /events?topic=history&last_event_id=0-0 HTTP/1.1\r\nHost: hub\r\n\r\n"
    grew = never_reading_streams_grow_rss_by(hub, request, count=50)
    assert grew < 80, f"RSS grew by {grew:.0f} MiB (bound 80 MiB)"
    assert hub.returncode is None


def test_a_resume_on_many_topics_holds_a_page_per_topic_at_most_its_bound(
    gateway: Gateways, redis_url: str, key_prefix: str
) -> None:
    """Finding 1, several topics: 10 never-reading connections on 8 topics each (+1,014 MiB
    before)."""
    hub = gateway({"HUB_CLIENT_STALL_SECONDS": "2"})
    topics = [f"t{n}" for n in range(8)]

    async def fill_all() -> None:
        await asyncio.gather(*(fill(redis_url, key_prefix, topic, 300, 10_000) for topic in topics))

    asyncio.run(fill_all())
    query = "&".join(f"topic={topic}" for topic in topics)
    cursor = ".".join(["0"] * (len(topics) + 1))
    request = f"GET /events?{query}&last_event_id={cursor} HTTP/1.1\r\nHost: hub\r\n\r\n"
    grew = never_reading_streams_grow_rss_by(hub, request.encode(), count=10)
    assert grew < 80, f"RSS grew by {grew:.0f} MiB (bound 80 MiB)"


def test_live_clients_dropped_as_slow_have_their_sockets_closed(
    gateway: Gateways, redis_url: str, key_prefix: str
) -> None:
    """Finding 3: a slow client's slot was freed but its socket (and kernel buffers) stayed."""
    hub = gateway({"HUB_CLIENT_BUFFER_BYTES": "262144", "HUB_MAX_STREAMS_PER_CLIENT": "60"})
    with sockets() as slow:
        for _ in range(50):
            sock = non_reading_socket(hub.port)
            sock.sendall(b"GET /events?topic=live HTTP/1.1\r\nHost: hub\r\n\r\n")
            slow.append(sock)
        wait_until(
            lambda: metric(metrics_of(hub.url), "hub_connected_clients") >= 50,
            10,
            "50 clients attached",
        )

        async def publish_until_dropped() -> None:
            async with publisher(redis_url, key_prefix) as pub:
                for _ in range(400):
                    await pub.publish("live", "y" * 50_000)
                    if metric(metrics_of(hub.url), "hub_slow_client_disconnects_total") >= 50:
                        return
                    await asyncio.sleep(0.01)

        asyncio.run(publish_until_dropped())
        assert metric(metrics_of(hub.url), "hub_slow_client_disconnects_total") >= 50
        wait_until(
            lambda: server_connections(hub.port) == 0, 10, "the gateway closed their sockets"
        )
        # The slots are free again: 50 new streams from the same address are accepted.
        with httpx.Client(base_url=hub.url, timeout=5) as http:
            with http.stream("GET", "/events", params={"topic": "live"}) as response:
                assert response.status_code == 200


# -- 2: a publish is authenticated before its body is read, and parsed within bounds -----------


def test_an_unauthenticated_publish_is_refused_before_its_body_is_read(gateway: Gateways) -> None:
    """Finding 2: 200 bad-token publishes of 6 MB bodies took the gateway from 92 to 1,369 MiB."""
    hub = gateway({"HUB_JWT_KEY": SECRET, "HUB_PRIVATE_TOPICS": "user/*"})
    before = rss_mib(hub.pid)
    head = (
        b"POST /publish HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer not-a-token\r\n"
        b"Content-Type: application/json\r\nContent-Length: 6000000\r\n\r\n"
    )
    with sockets() as clients:
        for _ in range(100):
            sock = socket.create_connection(("127.0.0.1", hub.port))
            sock.sendall(head)
            clients.append(sock)
        for sock in clients:  # the answer comes without a byte of the body
            answer = received_until(sock, b"not valid")
            assert answer.startswith(b"HTTP/1.1 401") and b"not valid" in answer, answer[:300]
        for sock in clients:  # and whatever they send next is not kept
            with contextlib.suppress(OSError):
                sock.sendall(b"[" * MIB)
        time.sleep(0.5)
        assert rss_mib(hub.pid) - before < 30, "the gateway kept none of the bodies"
    no_traceback_in(hub.log_text())


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"[" * 100_000, 413, "over 10000"),
        (b'{"topic": "news", "data": ' + b"[" * 40 + b"]" * 40 + b"}", 400, "nests deeper than 32"),
        (b"[" + b"{}," * 2_000_000 + b"{}]", 413, "send large structures as a string"),
        (b'{"topic": "news", "data": [' + b"1," * 20_000 + b"1]}", 413, "over 10000"),
    ],
)
def test_json_bodies_are_measured_before_they_are_parsed(
    gateway: Gateways, body: bytes, status: int, reason: str
) -> None:
    """Finding 2: deep nesting gave 500 with a RecursionError; 6 MB of `{}` held the loop for a
    second."""
    hub = gateway({"HUB_PUBLISH_TOKEN": "token"})
    response = httpx.post(
        hub.url + "/publish",
        content=body,
        timeout=30,
        headers={"Authorization": "Bearer token", "Content-Type": "application/json"},
    )
    assert response.status_code == status and reason in response.text, response.text
    no_traceback_in(hub.log_text())


def test_a_large_string_is_still_accepted(
    gateway: Gateways, redis_url: str, key_prefix: str
) -> None:
    hub = gateway({"HUB_PUBLISH_TOKEN": "token"})
    data = "[{}]," * 200_000  # a megabyte of brackets inside a string is no structure
    response = httpx.post(
        hub.url + "/publish",
        json={"topic": "news", "data": data},
        timeout=30,
        headers={"Authorization": "Bearer token"},
    )
    assert response.status_code == 200, response.text
    [(_, fields)] = cast(
        list[tuple[bytes, dict[bytes, bytes]]],
        redis.Redis.from_url(redis_url).xrange(Keys(key_prefix).stream("news")),
    )
    assert fields[b"d"].decode() == data


# -- 4: X-Forwarded-For only from the proxies named -----------------------------------------


def stream_statuses(url: str, forwarded_for: list[str]) -> list[int]:
    statuses = []
    with contextlib.ExitStack() as open_streams:
        http = open_streams.enter_context(httpx.Client(base_url=url, timeout=5))
        for address in forwarded_for:
            response = open_streams.enter_context(
                http.stream(
                    "GET", "/events", params={"topic": "a"}, headers={"X-Forwarded-For": address}
                )
            )
            statuses.append(response.status_code)
    return statuses


def test_x_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(gateway: Gateways) -> None:
    """Finding 4: a local client spoofed 300 addresses past a limit of 50."""
    spoofed = [f"10.0.0.{n}" for n in range(6)]
    direct = gateway({"HUB_MAX_STREAMS_PER_CLIENT": "3"})
    assert stream_statuses(direct.url, spoofed) == [200, 200, 200, 429, 429, 429]
    behind_proxy = gateway({"HUB_MAX_STREAMS_PER_CLIENT": "3", "HUB_TRUSTED_PROXIES": "127.0.0.1"})
    assert stream_statuses(behind_proxy.url, spoofed) == [200] * 6, (
        "each forwarded client counted alone"
    )
    assert stream_statuses(behind_proxy.url, ["10.0.0.9"] * 4) == [200, 200, 200, 429]


def test_a_trusted_proxy_that_is_not_an_address_is_a_clear_error(gateway: Gateways) -> None:
    hub = gateway({"HUB_TRUSTED_PROXIES": "nginx"}, wait_ready=False)
    assert hub.wait(15) != 0
    assert "HUB_TRUSTED_PROXIES" in hub.log_text()
    no_traceback_in(hub.log_text())


# -- 5: header caps while headers arrive, deadlines for headers and bodies ---------------------


def test_headers_that_never_end_are_cut_off_at_the_cap(gateway: Gateways) -> None:
    """Finding 5: 8 connections sending 128 MiB of headers took the gateway from 82 to 1,097 MiB."""
    hub = gateway({"HUB_MAX_HEADER_BYTES": "16384"})
    before = rss_mib(hub.pid)
    line = b"X-Filler: " + b"z" * 1000 + b"\r\n"
    with sockets() as floods:
        for _ in range(8):
            sock = socket.create_connection(("127.0.0.1", hub.port))
            sock.sendall(b"GET /events?topic=a HTTP/1.1\r\nHost: hub\r\n")
            floods.append(sock)
        refused = 0
        for sock in floods:
            try:
                for _ in range(16 * 1024):  # up to 16 MiB each
                    sock.sendall(line)
            except (BrokenPipeError, ConnectionResetError):
                refused += 1
        assert refused == 8, "every flood was cut off before 16 MiB"
        assert rss_mib(hub.pid) - before < 30
    with socket.create_connection(("127.0.0.1", hub.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: hub\r\n" + line * 60)
        answer = response_of(sock)
    assert answer.startswith(b"HTTP/1.1 431") and b"over the limit" in answer, answer[:300]
    assert httpx.get(hub.url + "/healthz").status_code == 200


@pytest.mark.parametrize(
    ("sent", "what"),
    [
        (b"", "nothing at all"),
        (b"GET /events?topic=a HTTP/1.1\r\nHost: hub\r\n", "half a header block"),
        (
            b"POST /publish HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer token\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"topic": ',
            "half a body",
        ),
    ],
)
def test_requests_that_stall_are_timed_out(gateway: Gateways, sent: bytes, what: str) -> None:
    """Finding 5: 2,000 connections sending nothing, half a header block or half a body stayed."""
    hub = gateway(
        {
            "HUB_PUBLISH_TOKEN": "token",
            "HUB_REQUEST_HEADER_SECONDS": "1",
            "HUB_REQUEST_BODY_SECONDS": "1",
        }
    )
    with sockets() as stalled:
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", hub.port))
            if sent:
                sock.sendall(sent)
            stalled.append(sock)
        answers = [response_of(sock, timeout=15) for sock in stalled]
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), (
        f"{what}: {answers[0][:200]!r}"
    )
    assert b"did not arrive within 1 s" in answers[0]


def test_an_open_stream_is_not_timed_out(
    gateway: Gateways, redis_url: str, key_prefix: str
) -> None:
    """The deadlines are for requests: a stream that outlives them keeps streaming."""
    hub = gateway({"HUB_REQUEST_HEADER_SECONDS": "0.5", "HUB_REQUEST_BODY_SECONDS": "0.5"})

    async def run() -> None:
        listener = Listener(hub.url, ["long"]).start()
        await listener.wait_connected()
        await asyncio.sleep(1.5)
        async with publisher(redis_url, key_prefix) as pub:
            await pub.publish("long", "still here")
        await listener.wait_for(1, within=10)
        await listener.close()
        assert listener.data == ["still here"]

    asyncio.run(run())


# -- 6 and 9: every token failure is a 401 with its reason ------------------------------------


def _pem(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def refusal_of(url: str, token: str) -> tuple[int, str, int, str]:
    """Status and reason of a stream and of a publish with `token` (a stream is left at once)."""
    bearer = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, timeout=10) as http:
        with http.stream("GET", "/events", params={"topic": "user/42"}, headers=bearer) as events:
            reason = events.read().decode() if events.status_code != 200 else ""
        published = http.post("/publish", json={"topic": "user/42", "data": "x"}, headers=bearer)
    return events.status_code, reason, published.status_code, published.text


def test_a_token_of_another_key_type_is_a_401_not_a_500(gateway: Gateways, tmp_path: Path) -> None:
    """Finding 6: with RS256,ES256 and an RSA key, an ES256 token signed by anyone gave 500."""
    rsa_key = rsa.generate_private_key(65537, 2048)
    key_file = tmp_path / "public.pem"
    key_file.write_bytes(_pem(rsa_key))
    claims = {"mercure": {"subscribe": ["*"], "publish": ["*"]}, "exp": int(time.time()) + 600}
    attacker = ec.generate_private_key(ec.SECP256R1())
    for algorithms, forged in [
        ("RS256,ES256", jwt.encode(claims, attacker, algorithm="ES256")),
        ("RS256,HS256", jwt.encode(claims, "a" * 32, algorithm="HS256")),
    ]:
        hub = gateway(
            {
                "HUB_JWT_KEY": str(key_file),
                "HUB_JWT_ALGORITHMS": algorithms,
                "HUB_PRIVATE_TOPICS": "user/*",
            }
        )
        status, reason, publish_status, publish_reason = refusal_of(hub.url, forged)
        assert (status, publish_status) == (401, 401), (reason, publish_reason)
        assert "not valid" in reason and "not valid" in publish_reason
        good = jwt.encode(claims, rsa_key, algorithm="RS256")
        assert refusal_of(hub.url, good)[0::2] == (200, 200)
        no_traceback_in(hub.log_text())


def test_a_token_whose_exp_is_not_a_number_is_refused(gateway: Gateways) -> None:
    """Finding 9: `"exp": "<now+3>"` passed, and its stream outlived it."""
    hub = gateway({"HUB_JWT_KEY": SECRET, "HUB_PRIVATE_TOPICS": "user/*"})
    now = int(time.time())
    for claim, value in (("exp", now + 3), ("nbf", now - 10), ("iat", now - 10)):
        claims = {"mercure": {"subscribe": ["*"], "publish": ["*"]}, claim: str(value)}
        status, reason, publish_status, _ = refusal_of(
            hub.url, jwt.encode(claims, SECRET, algorithm="HS256")
        )
        assert (status, publish_status) == (
            401,
            401,
        ) and f"'{claim}' claim must be a number" in reason


# -- 7 and 8: what is read back from Redis is validated before it is framed --------------------


def raw_entry(redis_url: str, key_prefix: str, topic: str, **fields: bytes) -> str:
    """An entry written to a topic's stream by hand, as a buggy publisher would (no
    announcement)."""
    client = redis.Redis.from_url(redis_url)
    stream = Keys(key_prefix).stream(topic)
    last = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrevrange(stream, count=1))
    prev = last[0][0] if last else b"0-0"
    entry: dict[Any, Any] = {"p": prev, **fields}
    return cast(bytes, client.xadd(stream, entry)).decode()


@pytest.mark.anyio
async def test_a_malformed_entry_is_skipped_and_the_topic_goes_on(
    gateway: Gateways, redis_url: str, key_prefix: str
) -> None:
    """Finding 7: an undecodable entry followed by a gap killed the topic's catch-up for good."""
    hub = gateway()
    live = [Listener(hub.url, ["wedge"]).start() for _ in range(2)]
    for listener in live:
        await listener.wait_connected()
    async with publisher(redis_url, key_prefix) as pub:
        first = await pub.publish("wedge", "before")
        raw_entry(redis_url, key_prefix, "wedge", t=b"", d=b"\xff\xfe not utf-8")
        raw_entry(
            redis_url,
            key_prefix,
            "wedge",
            t=b"x\nretry: 1\nid: 424242-0\nevent: forged",
            d=b"forged",
        )
        raw_entry(redis_url, key_prefix, "wedge", t=b"stream-reset", d=b'{"topic":"other"}')
        for n in range(200):
            await pub.publish("wedge", f"after {n}")
    expected = ["before"] + [f"after {n}" for n in range(200)]
    for listener in live:
        await listener.wait_for(len(expected), within=20)
        assert listener.data == expected, "every good event, in order, none of the bad ones"
        assert all(event.event == "message" for event in listener.events)
    replayed = Listener(hub.url, ["wedge"], last_event_id=first).start()
    await replayed.wait_for(200, within=20)
    assert replayed.status == 200 and replayed.data == expected[1:]
    assert all(event.event == "message" and "424242" not in event.id for event in replayed.events)
    for listener in (*live, replayed):
        await listener.close()
    page = metrics_of(hub.url)
    assert metric(page, "hub_malformed_entries_skipped_total") >= 6, "3 live and 3 replayed"
    assert "skipped" in hub.log_text()
    no_traceback_in(hub.log_text())


@pytest.mark.anyio
async def test_the_hubs_own_event_types_are_reserved(redis_url: str, key_prefix: str) -> None:
    """Finding 8: a publisher could forge the hub's `stream-reset` notice about another topic."""
    async with publisher(redis_url, key_prefix) as pub:
        for reserved in ("stream-reset", "hub-anything"):
            with pytest.raises(InvalidEvent, match="reserved"):
                await pub.publish("news", json.dumps({"topic": "user/43"}), reserved)


# -- 10: cursors out of range are a 400 ----------------------------------------------------------


@pytest.mark.parametrize(
    ("topics", "cursor"),
    [
        (["a"], "99999999999999999999-0"),
        (["a"], "1-99999999999999999999"),
        (["a"], "١٢٣-0"),
        (["a", "b"], "zzzzzzzzzzzzzz.0.0"),
        (["a", "b"], "1.0-zzzzzzzzzzzzzz.0"),
    ],
)
def test_cursors_out_of_range_are_a_400(gateway: Gateways, topics: list[str], cursor: str) -> None:
    """Finding 10: a cursor past 2^64 gave 200 with Redis's own error; non-ASCII digits passed."""
    hub = gateway()
    params: list[tuple[str, str | int | float | bool | None]] = [("topic", t) for t in topics]
    with httpx.Client(base_url=hub.url, timeout=10) as http:
        by_query = http.get("/events", params=[*params, ("last_event_id", cursor)])
        assert by_query.status_code == 400 and "cursor" in by_query.text, by_query.text
        if cursor.isascii():
            by_header = http.get("/events", params=params, headers={"Last-Event-ID": cursor})
            assert by_header.status_code == 400, by_header.text
