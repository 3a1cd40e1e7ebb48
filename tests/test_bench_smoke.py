"""The benchmark's tools work: the load client counts right, and the harness runs end to end."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@contextmanager
def scripted_server(body: list[bytes]) -> Iterator[int]:
    """A one-connection HTTP server that sends `body` as a chunked event stream, then ends it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
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


def test_quick_benchmark_against_one_gateway(tmp_path: Path) -> None:
    require_tool("cc")
    require_tool("redis-server")
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "run.py"),
            "--quick",
            "--systems",
            "hub",
            "--scenarios",
            "fanout-1k-100,storm-1k",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
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
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "publish_scaling.py"),
            "--duration",
            "0.5",
            "--repeat",
            "1",
            "--out",
            str(tmp_path),
            "--results-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
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
