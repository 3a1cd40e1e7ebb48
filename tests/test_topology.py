"""Reading HUB_REDIS_URL: which Redis topology it names, and a clear error when it names none."""

from __future__ import annotations

import subprocess
import sys

import pytest
from processes import free_port

from hub import topology
from hub.config import ConfigError


def test_a_plain_url_is_one_server() -> None:
    single = topology.from_url("redis://:secret@db.internal:6380/2", timeout=3)
    assert isinstance(single, topology.SingleServer)
    assert not single.sharded and not single.moves
    [node] = single.primaries()
    assert node.name == "db.internal:6380"
    assert node.options["password"] == "secret" and node.options["db"] == 2
    assert node.options["socket_timeout"] == 3
    assert single.owner("any key") is node


def test_a_unix_socket_is_one_server() -> None:
    [node] = topology.from_url("unix:///run/redis.sock", timeout=1).primaries()
    assert node.name == "/run/redis.sock"


def test_a_sentinel_url_names_the_sentinels_and_the_service() -> None:
    sentinel = topology.from_url(
        "redis+sentinel://app:pw@s1:26379,s2,[::1]:26380/hub/3?sentinel_password=sp", timeout=1
    )
    assert isinstance(sentinel, topology.SentinelPrimary)
    assert sentinel.moves and not sentinel.sharded
    with pytest.raises(topology.NoPrimary):
        sentinel.owner("k")  # not asked yet


def test_a_cluster_url_lists_seed_nodes_and_shards_pub_sub() -> None:
    cluster = topology.from_url("rediss+cluster://n1:7000,n2:7001", timeout=1)
    assert isinstance(cluster, topology.Cluster)
    assert cluster.sharded and cluster.moves
    assert cluster.primaries() == []  # the slot map is read from a node when the hub starts


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://localhost:6379", "scheme 'http' is none of"),
        ("redis+cluster://n1:7000/1", "has no path"),
        ("redis+sentinel://s1:26379", "ends in /service"),
        ("redis+sentinel://s1:26379/hub/x", "ends in /service"),
        ("redis+cluster://n1:port", "'n1:port' is not host:port"),
        ("redis://localhost:notaport", "invalid Redis URL"),
    ],
)
def test_a_url_that_names_no_topology_is_refused_with_a_reason(url: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason.replace("(", r"\(")):
        topology.from_url(url, timeout=1)


def test_the_gateway_refuses_a_bad_url_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hub"],
        env={"HUB_REDIS_URL": "redis+cluster://n1:7000/1", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "sse-hub: error: a Redis Cluster URL has no path: a cluster has database 0 only"
    ]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "redis+sentinel://127.0.0.1:{port}/hub",
            "no Sentinel at 127.0.0.1:{port} named a primary for 'hub' (none answered, or none monitors it)",
        ),
        (
            "redis+cluster://127.0.0.1:{port}",
            "no cluster node answered CLUSTER SLOTS (127.0.0.1:{port}: ",
        ),
    ],
)
def test_the_publisher_cli_names_an_unreachable_topology_in_one_line(
    url: str, message: str
) -> None:
    port = free_port()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "publisher.cli",
            "--redis-url",
            url.format(port=port),
            "send",
            "t",
            "x",
        ],
        env={"HUB_REDIS_TIMEOUT_SECONDS": "0.5", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"sse-publish: error: cannot reach Redis at {url.format(port=port)}: ")
    assert message.format(port=port) in line
