"""The test helpers themselves: private Redis servers, gateway processes, strict mode."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from processes import (
    Gateway,
    Gateways,
    ProcessStartError,
    RedisServer,
    RedisServers,
    delete_keys,
    free_port,
    redis_answers,
)

TESTS_DIR = Path(__file__).resolve().parent

# Stands in for `python -m hub`: answers /healthz, shows its HUB_* environment on /env.
STAND_IN = textwrap.dedent(
    """
    import json, os, signal, sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/healthz":
                body = b"ok"
            elif self.path == "/env":
                hub = {k: v for k, v in os.environ.items() if k.startswith("HUB_")}
                body = json.dumps(hub).encode()
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):
            pass

    if os.environ.get("STAND_IN_FAIL"):
        print("stand-in: refusing to start:", os.environ["STAND_IN_FAIL"], file=sys.stderr)
        sys.exit(3)
    time.sleep(float(os.environ.get("STAND_IN_DELAY", "0")))
    server = ThreadingHTTPServer((os.environ["HUB_HOST"], int(os.environ["HUB_PORT"])), Handler)

    def on_term(signum, frame):
        print("stand-in: SIGTERM, exiting", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    print("stand-in listening on", server.server_port, flush=True)
    server.serve_forever()
    """
)


@pytest.fixture
def stand_in(tmp_path: Path) -> list[str]:
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    return [sys.executable, str(script)]


def test_free_port_can_be_bound() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


# --- RedisServer -------------------------------------------------------------


def test_redis_server_starts_on_a_private_port_and_stops() -> None:
    with RedisServer() as server:
        assert server.port != 6379
        assert server.url == f"redis://127.0.0.1:{server.port}"
        with server.client() as client:
            assert client.set("k", "v")
            assert client.get("k") == b"v"
            assert client.config_get("appendonly") == {"appendonly": "no"}
            assert client.config_get("save") == {"save": ""}
        assert server.stop() == 0
        assert not server.running
        assert not redis_answers(server.url)
    assert not server.directory.exists()


def test_redis_server_kill_and_restart_on_the_same_port() -> None:
    with RedisServer() as server:
        port, first_pid = server.port, server.pid
        with server.client() as client:
            client.set("k", "v")
        assert server.kill() == -signal.SIGKILL
        assert not redis_answers(server.url)
        server.start()
        assert server.port == port
        assert server.pid != first_pid
        with server.client() as client:
            # Without persistence a crash loses everything.
            assert client.get("k") is None
            client.set("k2", "v2")
        server.restart()
        assert server.port == port
        assert redis_answers(server.url)


def test_redis_server_with_append_only_file_keeps_data_across_a_crash() -> None:
    with RedisServer(persistent=True) as server:
        with server.client() as client:
            assert client.config_get("appendonly") == {"appendonly": "yes"}
            client.set("k", "v")
            client.xadd("stream", {"f": "1"})
        server.kill()
        server.start()
        with server.client() as client:
            assert client.get("k") == b"v"
            assert client.xlen("stream") == 1
        directory = server.directory
        assert any(directory.iterdir())
    assert not directory.exists()


def test_redis_servers_factory_closes_every_server() -> None:
    servers = RedisServers()
    first = servers()
    second = servers(persistent=True)
    assert first.port != second.port
    assert redis_answers(first.url) and redis_answers(second.url)
    servers.close()
    assert not redis_answers(first.url)
    assert not redis_answers(second.url)


def test_private_redis_fixture(private_redis: RedisServers) -> None:
    server = private_redis(persistent=True)
    assert redis_answers(server.url)
    assert server.persistent


def test_redis_server_start_failure_shows_the_log() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = RedisServer(port=busy.getsockname()[1])
        try:
            with pytest.raises(ProcessStartError, match=r"(?i)address already in use"):
                server.start(timeout=10)
        finally:
            server.close()


# --- key prefixes ------------------------------------------------------------


def test_key_prefix_is_unique_and_on_the_test_redis(key_prefix: str, redis_url: str) -> None:
    assert key_prefix.startswith("t") and key_prefix.endswith(":")
    assert redis_answers(redis_url)


def test_delete_keys_removes_only_the_prefix(redis_url: str, key_prefix: str) -> None:
    import redis

    wild = key_prefix + "*x:"
    with redis.Redis.from_url(redis_url) as client:
        for i in range(1200):
            client.set(f"{wild}{i}", i)
        client.set(f"{key_prefix}Ax:kept", 1)
        assert delete_keys(redis_url, wild) == 1200
        # The `*` in the prefix is literal, not a glob.
        assert client.exists(f"{key_prefix}Ax:kept") == 1
        assert delete_keys(redis_url, key_prefix) == 1
        assert client.exists(f"{key_prefix}Ax:kept") == 0


# --- Gateway -----------------------------------------------------------------


def test_gateway_defaults_to_the_hub_module(tmp_path: Path) -> None:
    gateway = Gateway(redis_url="redis://x", key_prefix="p:", log_path=tmp_path / "g.log")
    assert gateway.command == [sys.executable, "-m", "hub"]
    assert gateway.env["HUB_HOST"] == "127.0.0.1"
    assert gateway.env["HUB_PORT"] == str(gateway.port)


def test_gateway_runs_with_its_environment_and_log(
    gateway: Gateways, stand_in: list[str], redis_url: str, key_prefix: str
) -> None:
    g = gateway({"HUB_PUBLISH_TOKEN": "secret"}, command=stand_in)
    assert g.url == f"http://127.0.0.1:{g.port}"
    assert httpx.get(g.url + "/healthz", timeout=5).status_code == 200
    env = json.loads(httpx.get(g.url + "/env", timeout=5).text)
    assert env == {
        "HUB_REDIS_URL": redis_url,
        "HUB_HOST": "127.0.0.1",
        "HUB_PORT": str(g.port),
        "HUB_KEY_PREFIX": key_prefix,
        "HUB_PUBLISH_TOKEN": "secret",
    }
    assert g.returncode is None
    assert g.terminate(timeout=10) == 0
    assert "stand-in listening on" in g.log_text()
    assert "SIGTERM, exiting" in g.log_text()


def test_several_gateways_at_once(gateway: Gateways, stand_in: list[str]) -> None:
    gateways = gateway.many(3, command=stand_in)
    assert len({g.port for g in gateways}) == 3
    assert len({g.pid for g in gateways}) == 3
    for g in gateways:
        assert httpx.get(g.url + "/healthz", timeout=5).status_code == 200
    assert gateways[0].kill() == -signal.SIGKILL
    assert gateways[1].returncode is None


def test_gateway_wait_reports_a_running_process(gateway: Gateways, stand_in: list[str]) -> None:
    g = gateway(command=stand_in)
    with pytest.raises(subprocess.TimeoutExpired):
        g.wait(0.2)
    g.process.send_signal(signal.SIGTERM)
    assert g.wait(10) == 0


def test_gateway_that_exits_raises_with_its_log(gateway: Gateways, stand_in: list[str]) -> None:
    with pytest.raises(ProcessStartError, match=r"exited with 3(.|\n)*refusing to start: bad"):
        gateway({"STAND_IN_FAIL": "bad"}, command=stand_in)


def test_gateway_that_never_answers_times_out(gateway: Gateways, stand_in: list[str]) -> None:
    with pytest.raises(ProcessStartError, match="did not answer 200 within"):
        gateway({"STAND_IN_DELAY": "60"}, command=stand_in, timeout=1.0)


def test_gateway_without_waiting_and_close_kills_it(tmp_path: Path, stand_in: list[str]) -> None:
    gateways = Gateways(tmp_path, "redis://127.0.0.1:1", "p:")
    g = gateways({"STAND_IN_FAIL": "config"}, command=stand_in, wait_ready=False)
    assert g.wait(10) == 3
    running = gateways(command=stand_in)
    gateways.close()
    assert running.returncode == -signal.SIGKILL


# --- strict mode -------------------------------------------------------------

SAMPLE_TESTS = textwrap.dedent(
    """
    import pytest

    from processes import require_tool

    def test_skips_without_its_tool():
        require_tool("no-such-frobnicator-tool")

    @pytest.fixture
    def needs_tool():
        pytest.skip("frobnicator not installed")

    def test_passes():
        assert True

    def test_skips_in_body():
        pytest.skip("no widget here")

    @pytest.mark.skipif(True, reason="marker reason")
    def test_skipped_by_marker():
        pass

    def test_skips_in_setup(needs_tool):
        pass

    @pytest.mark.xfail(reason="known bug", strict=True)
    def test_expected_failure():
        assert False
    """
)


def run_pytest(
    tmp_path: Path, files: dict[str, str], strict_env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Runs pytest in a subprocess on `files`, with this suite's conftest and helpers."""
    shutil.copy(TESTS_DIR / "conftest.py", tmp_path / "conftest.py")
    shutil.copytree(
        TESTS_DIR / "processes",
        tmp_path / "processes",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\naddopts = --strict-markers -ra -p no:cacheprovider\nfilterwarnings = error\n"
    )
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CI", "HUB_TESTS_STRICT") and not k.startswith("PYTEST_")
    }
    env.update(strict_env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--continue-on-collection-errors"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_sample_suite(
    tmp_path: Path, strict_env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    files = {
        "test_sample.py": SAMPLE_TESTS,
        "test_module_skip.py": "import pytest\n"
        "pytest.skip('whole module gone', allow_module_level=True)\n",
    }
    return run_pytest(tmp_path, files, strict_env)


def test_skips_pass_outside_strict_mode(tmp_path: Path) -> None:
    result = run_sample_suite(tmp_path, {})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "strict mode: off" in result.stdout
    assert "1 passed, 5 skipped, 1 xfailed" in result.stdout


@pytest.mark.parametrize("strict_env", [{"CI": "true"}, {"HUB_TESTS_STRICT": "1"}])
def test_strict_mode_turns_every_skip_into_a_failure(
    tmp_path: Path, strict_env: dict[str, str]
) -> None:
    result = run_sample_suite(tmp_path, strict_env)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "strict mode: skips fail" in result.stdout
    for reason in ("no widget here", "marker reason", "frobnicator not installed",
                   "whole module gone", "no-such-frobnicator-tool not installed"):  # fmt: skip
        assert f"skipped in strict mode: {reason}" in output
    assert "skipped" not in result.stdout.splitlines()[-1]
    assert "2 failed, 1 passed, 1 xfailed, 3 errors" in result.stdout.splitlines()[-1]


def test_a_failing_test_shows_its_gateway_logs(tmp_path: Path) -> None:
    (tmp_path / "stand_in.py").write_text(STAND_IN)
    failing = textwrap.dedent(
        f"""
        import sys

        def test_fails(gateway):
            gateway(command=[sys.executable, {str(tmp_path / "stand_in.py")!r}])
            assert False, "deliberate"
        """
    )
    result = run_pytest(tmp_path, {"test_gateway_logs.py": failing}, {})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Gateway log gateway-0.log" in result.stdout
    assert "stand-in listening on" in result.stdout
