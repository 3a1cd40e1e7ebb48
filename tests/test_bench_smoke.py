"""The benchmark's tools work: the load client counts right, and the harness runs end to end."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
from processes import require_tool

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


@pytest.fixture(scope="module")
def loadclient(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = require_tool("cc")
    exe = tmp_path_factory.mktemp("build") / "loadclient"
    subprocess.run(
        [cc, "-O2", "-Wall", "-Werror", "-pthread", "-o", str(exe), str(BENCH / "loadclient.c")],
        check=True,
        timeout=120,
    )
    return exe


@pytest.fixture(scope="module")
def publisher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = require_tool("cc")
    exe = tmp_path_factory.mktemp("build") / "publisher"
    subprocess.run(
        [cc, "-O2", "-Wall", "-Werror", "-o", str(exe), str(BENCH / "publisher.c")],
        check=True,
        timeout=120,
    )
    return exe


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@contextmanager
def scripted_server(body: list[bytes], heads: list[bytes] | None = None) -> Iterator[int]:
    """A one-connection HTTP server that sends `body` as a chunked event stream, then ends it
    (the request it got goes to `heads`)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            head = conn.recv(4096)
            if heads is not None:
                heads.append(head)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            for part in body:
                conn.sendall(_chunk(part))
                time.sleep(0.01)
            time.sleep(0.5)
            conn.sendall(b"0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        listener.close()
        thread.join(timeout=5)


def test_load_client_counts_lost_and_duplicated_events(loadclient: Path) -> None:
    now = time.time_ns()

    def event(seq: int) -> bytes:
        return b'id: 1-%d\r\ndata: {"seq":%d,"t":%d}\r\n\r\n' % (seq, seq, now)

    # seq 3 is missing, 4 comes twice, a heartbeat and a frame split across chunks in between
    frames = [
        b"retry: 1000\n\n",
        event(1),
        event(2),
        b":\n\n",
        event(4),
        event(4),
        event(5)[:9],
        event(5)[9:],
        b'event: other\ndata: {"seq":99}\n\n',
    ]
    with scripted_server(frames) as port:
        done = subprocess.run(
            [
                str(loadclient),
                "--port",
                str(port),
                "--path",
                "/events?topic=b%d",
                "--conns",
                "1",
                "--threads",
                "1",
                "--final",
                "6",
                "--max-time",
                "3",
                "--no-reconnect",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["deliveries"] == 4
    assert result["dup"] == 1
    assert result["lost"] == 2  # seq 3, and seq 6 that never came
    assert result["other_events"] == 1
    assert 0 <= result["lat_us"]["p50"] < 60_000_000


def test_load_client_expands_its_path_template_and_keeps_mercure_ids(loadclient: Path) -> None:
    """--path is a template: %d is the topic, %% a percent sign, a URL-encoded byte stays as
    it is; a Mercure update ID (not a stream ID) does not upset the count."""
    now = time.time_ns()
    frames = [
        b'id: #3:1700000000000-%d\ndata: {"seq":%d,"t":%d}\n\n' % (seq, seq, now)
        for seq in (1, 2, 3)
    ]
    heads: list[bytes] = []
    with scripted_server(frames, heads) as port:
        done = subprocess.run(
            [
                str(loadclient),
                "--port",
                str(port),
                "--path",
                "/.well-known/mercure?match=https%3A%2F%2Fbench.example%2Fb%d&x=100%%",
                "--conns",
                "1",
                "--threads",
                "1",
                "--final",
                "3",
                "--max-time",
                "3",
                "--no-reconnect",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    result = json.loads(done.stdout.splitlines()[-1])
    assert heads[0].startswith(
        b"GET /.well-known/mercure?match=https%3A%2F%2Fbench.example%2Fb0&x=100% HTTP/1.1\r\n"
    )
    assert (result["deliveries"], result["lost"], result["dup"]) == (3, 0, 0)
    assert result["protocol_errors"] == 0


@contextmanager
def stand_in_server(answer: Callable[[bytes, bytes], bytes]) -> Iterator[int]:
    """A one-connection HTTP/1.1 server on a free port: each request's head and body go to
    `answer`, which returns the whole response to send."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
                while b"\r\n\r\n" in data:
                    head, _, rest = data.partition(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    if len(rest) < length:
                        break
                    data = rest[length:]
                    conn.sendall(answer(head, rest[:length]))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        listener.close()
        thread.join(timeout=5)


def mercure_publish_server(requests: list[tuple[bytes, bytes]]) -> AbstractContextManager[int]:
    """A stand-in for `POST /.well-known/mercure`: it records each request's head and body
    and answers, as the hub does, 200 text/plain with the update's ID."""

    def answer(head: bytes, body: bytes) -> bytes:
        requests.append((head, body))
        update_id = b"#1:1700000000000-%d" % len(requests)
        return (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(update_id), update_id)
        )

    return stand_in_server(answer)


def test_publisher_posts_form_encoded_mercure_updates(publisher: Path, tmp_path: Path) -> None:
    targets = tmp_path / "topics.txt"
    topics = [f"https://bench.example/b{i}?x=1&y=a b" for i in range(3)]
    targets.write_text("".join(f"{t}\n" for t in topics))
    ids = tmp_path / "ids.txt"
    requests: list[tuple[bytes, bytes]] = []
    with mercure_publish_server(requests) as port:
        done = subprocess.run(
            [
                str(publisher),
                "--mode",
                "mercure",
                "--port",
                str(port),
                "--targets",
                str(targets),
                "--token",
                "secret",
                "--rate",
                "0",
                "--count",
                "2",
                "--window",
                "4",
                "--ids-out",
                str(ids),
                "--ack-timeout",
                "10",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["sent"], result["acked"], result["errors"]) == (6, 6, 0)
    head = requests[0][0]
    assert head.startswith(b"POST /.well-known/mercure HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer secret" in head
    assert b"\r\nContent-Type: application/x-www-form-urlencoded" in head
    forms = [parse_qsl(body.decode(), strict_parsing=True) for _, body in requests]
    assert all([name for name, _ in form] == ["topic", "data"] for form in forms)
    seen = [(form[0][1], json.loads(form[1][1])["seq"]) for form in forms]
    assert seen == [(t, seq) for seq in (1, 2) for t in topics]
    assert ids.read_text().splitlines() == [f"#1:1700000000000-{n}" for n in (4, 5, 6)]


def batch_publish_server(
    requests: list[tuple[bytes, list[dict[str, str]]]],
) -> AbstractContextManager[int]:
    """A stand-in for the hub's batch `POST /publish`: it records each request's headers and
    events, fails the first event of the first batch, and answers with Content-Length and
    chunked in turn."""

    def answer(head: bytes, request_body: bytes) -> bytes:
        events = json.loads(request_body)
        requests.append((head, events))
        failed = 1 if len(requests) == 1 else 0
        results: list[dict[str, object]] = [{"id": f"1-{i}"} for i in range(len(events))]
        if failed:
            results[0] = {"error": "topic refused", "status": 403}
        body = json.dumps(
            {"published": len(events) - failed, "failed": failed, "results": results}
        ).encode()
        if len(requests) % 2:
            return (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
        return (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + _chunk(body[:7])
            + _chunk(body[7:])
            + b"0\r\n\r\n"
        )

    return stand_in_server(answer)


def test_publisher_sends_batches_and_counts_their_answers(publisher: Path, tmp_path: Path) -> None:
    targets = tmp_path / "topics.txt"
    targets.write_text("".join(f"b{i}\n" for i in range(10)))
    requests: list[tuple[bytes, list[dict[str, str]]]] = []
    with batch_publish_server(requests) as port:
        done = subprocess.run(
            [
                str(publisher),
                "--mode",
                "hub-batch",
                "--port",
                str(port),
                "--targets",
                str(targets),
                "--token",
                "secret",
                "--rate",
                "0",
                "--count",
                "3",
                "--batch",
                "4",
                "--window",
                "2",
                "--ack-timeout",
                "10",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["sent"], result["acked"], result["errors"]) == (30, 29, 1)
    assert result["requests"] == len(requests) == 8  # 7 batches of 4, then the last 2
    assert result["first_error"] == "topic refused"
    head = requests[0][0]
    assert head.startswith(b"POST /publish HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer secret" in head
    assert b"\r\nContent-Type: application/json" in head
    seen = [(e["topic"], json.loads(e["data"])["seq"]) for _, batch in requests for e in batch]
    assert sorted(seen) == sorted((f"b{i}", seq) for i in range(10) for seq in (1, 2, 3))
    assert seen[:4] == [("b0", 1), ("b1", 1), ("b2", 1), ("b3", 1)]


def run_bench(script: str, *args: str, timeout: float) -> None:
    """Run a benchmark script of bench/ to its end; fail with its stderr if it fails."""
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_quick_benchmark_against_one_gateway(tmp_path: Path) -> None:
    require_tool("cc")
    require_tool("redis-server")
    run_bench(
        "run.py",
        "--quick",
        "--systems",
        "hub",
        "--scenarios",
        "fanout-1k-100,storm-1k",
        "--out",
        str(tmp_path),
        timeout=120,
    )
    rows = {r["scenario"]: r for r in json.loads((tmp_path / "results.json").read_text())["rows"]}
    live, storm = rows["fanout-1k-100"], rows["storm-1k"]
    assert "error" not in live and "error" not in storm, (live, storm)
    assert live["connected"] == live["clients"]
    assert live["deliveries"] > 0
    assert live["deliveries"] == live["expected_deliveries"]
    assert (live["lost"], live["dup"]) == (0, 0)
    assert storm["caught_up"] == storm["clients"]
    assert (storm["lost"], storm["dup"]) == (0, 0)
    assert "hub (1 gateway)" in (tmp_path / "RESULTS.md").read_text()


def test_publish_scaling_benchmark_runs_every_layout(tmp_path: Path) -> None:
    require_tool("cc")
    require_tool("redis-cli")
    run_bench(
        "publish_scaling.py",
        "--duration",
        "0.5",
        "--repeat",
        "1",
        "--out",
        str(tmp_path),
        "--results-dir",
        str(tmp_path),
        timeout=240,
    )
    table = (tmp_path / "PUBLISH_SCALING.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and " primar" in line[:12]]
    assert [row.split(" | ")[0] for row in rows] == [
        "| 1 primary",
        "| 3 primaries",
        "| 3 primaries + 3 replicas",
    ]
    for row in rows:
        pipelined = float(row.split(" | ")[1].replace(",", ""))
        assert pipelined > 1000, row


def test_quick_sparse_http_and_joins_against_one_gateway(tmp_path: Path) -> None:
    """Issue 13's scenarios end to end: POST /publish pipelined, one event per request and in
    batches; fresh and resuming joins."""
    require_tool("cc")
    require_tool("redis-server")
    run_bench(
        "run.py",
        "--quick",
        "--systems",
        "hub",
        "--scenarios",
        "sparse-http,sparse-http-batch,join-10k,join-10k-resume",
        "--out",
        str(tmp_path),
        "--results-dir",
        str(tmp_path),
        timeout=120,
    )
    rows = {r["scenario"]: r for r in json.loads((tmp_path / "results.json").read_text())["rows"]}
    sparse, batch = rows["sparse-http"], rows["sparse-http-batch"]
    fresh, resume = rows["join-10k"], rows["join-10k-resume"]
    for row in (sparse, batch, fresh, resume):
        assert "error" not in row, row
        assert row["connected"] == row["clients"], row
        assert (row["lost"], row["dup"]) == (0, 0), row
    for row, mode in ((sparse, "hub"), (batch, "hub-batch")):
        assert row["publish_mode"] == mode
        assert row["publish_errors"] == 0
        assert row["deliveries"] == row["expected_deliveries"] > 0
        assert row["cpu_us_per_delivery"]["gateway"] > 0
    assert batch["publish_requests"] < batch["published"]
    assert fresh["first_event"] == fresh["clients"]
    assert fresh["all_streaming_s"] is not None
    assert resume["caught_up"] == resume["clients"]
    assert resume["deliveries"] == resume["clients"] * resume["missed"]
    assert resume["all_streaming_s"] is not None
    assert "Targets (issue 13)" in (tmp_path / "RESULTS.md").read_text()


def test_quick_mercure_face_against_native(tmp_path: Path) -> None:
    """The Mercure face (`hub-mercure`) beside the native one, both published over HTTP: a
    fan-out against its native `POST /publish` counterpart, and the sparse topics."""
    require_tool("cc")
    require_tool("redis-server")
    run_bench(
        "run.py",
        "--quick",
        "--systems",
        "hub,hub-mercure",
        "--scenarios",
        "fanout-1k-100,fanout-1k-100-http,sparse-http",
        "--out",
        str(tmp_path),
        "--results-dir",
        str(tmp_path),
        timeout=180,
    )
    rows = {
        (r["scenario"], r["system"]): r
        for r in json.loads((tmp_path / "results.json").read_text())["rows"]
    }
    assert "skipped" in rows["fanout-1k-100-http", "hub-mercure"]
    pairs = (("fanout-1k-100", "fanout-1k-100-http"), ("sparse-http", "sparse-http"))
    for mercure_name, native_name in pairs:
        mercure, native = rows[mercure_name, "hub-mercure"], rows[native_name, "hub"]
        for row, mode in ((mercure, "mercure"), (native, "hub")):
            assert "error" not in row, row
            assert row["publish_mode"] == mode
            assert row["connected"] == row["clients"], row
            assert (row["lost"], row["dup"], row["publish_errors"]) == (0, 0, 0), row
            assert row["deliveries"] == row["expected_deliveries"] > 0, row
            assert row["cpu_us_per_delivery"]["gateway"] > 0
    results = (tmp_path / "RESULTS.md").read_text()
    section = results.split("## Mercure face against native", 1)[1]
    compared = [line for line in section.splitlines() if line.startswith("| fanout-1k-100 ← ")]
    assert compared and "×" in compared[0], section[:2000]
    assert any(line.startswith("| sparse-http | ") for line in section.splitlines())
