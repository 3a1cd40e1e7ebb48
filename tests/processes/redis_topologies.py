"""Redis's distributed modes as real processes: a Redis Cluster, and a Sentinel-managed primary.

Both are built from `RedisServer`, bind to 127.0.0.1 on free ports, use short
failure-detection timeouts so a failover takes seconds, and kill every process they
started when closed.
"""

from __future__ import annotations

import subprocess
from types import TracebackType
from typing import Self

import redis
from redis.crc import key_slot

from .common import free_port, require_tool
from .redis_server import RedisServer
from .waiting import wait_until

NODE_TIMEOUT_MS = 1000
"""How long a cluster node or a sentinel waits before it calls a silent primary down."""

NOT_YET = (redis.RedisError, OSError)
"""A node that refuses or times out while the cluster or the sentinels settle: not ready yet."""


def _info(server: RedisServer, section: str) -> dict[str, str]:
    with server.client() as client:
        return {str(name): str(value) for name, value in client.info(section).items()}


class _Processes:
    """Started on entering a `with` block, every process killed on leaving it."""

    def start(self, timeout: float = 60.0) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:  # a start that failed half-way leaves no process behind
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ClusterProcesses(_Processes):
    """A Redis Cluster of `primaries` primaries with `replicas` replicas each."""

    def __init__(self, primaries: int = 3, replicas: int = 1) -> None:
        self.redis_cli = require_tool("redis-cli")
        self.primaries = primaries
        self.replicas = replicas
        self.servers: list[RedisServer] = []

    @property
    def url(self) -> str:
        """The hub's cluster URL: every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers)

    def start(self, timeout: float = 60.0) -> Self:
        for _ in range(self.primaries * (1 + self.replicas)):
            server = RedisServer(
                extra_args=[
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                    "--cluster-port", str(free_port()),
                    # a primary killed at once: its replica must take over without a grace period
                    "--cluster-replica-validity-factor", "0",
                ]
            )  # fmt: skip
            self.servers.append(server)
            server.start()
        if self.primaries == 1 and self.replicas == 0:
            self._assign_all_slots(self.servers[0])
        else:
            subprocess.run(
                [
                    self.redis_cli, "--cluster", "create",
                    *(f"127.0.0.1:{s.port}" for s in self.servers),
                    "--cluster-replicas", str(self.replicas), "--cluster-yes",
                ],
                check=True, capture_output=True, timeout=timeout,
            )  # fmt: skip
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until every running node says the cluster is ok and every replica is in sync."""
        wait_until(self._healthy, timeout, "the cluster to be ok on every node", ignore=NOT_YET)

    def _assign_all_slots(self, server: RedisServer) -> None:
        # `redis-cli --cluster create` wants three primaries; one node takes every slot itself.
        with server.client() as client:
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)

    def _healthy(self) -> bool:
        for server in self.servers:
            if not server.answering:
                continue
            if _info(server, "cluster").get("cluster_enabled") != "1":
                return False
            with server.client() as client:
                state = client.execute_command("CLUSTER", "INFO")
            text = state.decode() if isinstance(state, bytes) else str(state)
            if "cluster_state:ok" not in text:
                return False
            replication = _info(server, "replication")
            if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                return False
        return True

    def slot_owners(self) -> list[tuple[int, int, int]]:
        """(first slot, last slot, port of its primary) of each range, as a running node sees it."""
        node = next(s for s in self.servers if s.answering)
        with node.client() as client:
            ranges = client.execute_command("CLUSTER SLOTS")
        return [(int(start), int(end), int(primary[1])) for start, end, primary, *_ in ranges]

    def primary_of(self, key: str) -> RedisServer:
        """The server that owns `key`'s slot now."""
        slot = key_slot(key.encode())
        port = next(port for start, end, port in self.slot_owners() if start <= slot <= end)
        return next(s for s in self.servers if s.port == port)

    def replica_of(self, primary: RedisServer) -> RedisServer:
        return next(
            s
            for s in self.servers
            if s.answering and _info(s, "replication").get("master_port") == str(primary.port)
        )

    def wait_failover(self, killed: RedisServer, timeout: float = 30.0) -> None:
        """Wait until replicas own every slot the killed primary had and the cluster is ok."""

        def taken_over() -> bool:
            owners = {port for _, _, port in self.slot_owners()}
            return killed.port not in owners and self._healthy()

        wait_until(
            taken_over, timeout, f"a replica to take over from port {killed.port}", ignore=NOT_YET
        )

    def close(self) -> None:
        for server in self.servers:
            server.close()


SERVICE_NAME = "hubprimary"


class SentinelProcesses(_Processes):
    """A primary, `replicas` replicas, and `sentinels` sentinels watching them as SERVICE_NAME."""

    def __init__(self, replicas: int = 1, sentinels: int = 3) -> None:
        self.primary = RedisServer()
        self.replicas = [RedisServer() for _ in range(replicas)]
        self.sentinel_count = sentinels
        self.sentinels: list[RedisServer] = []

    @property
    def servers(self) -> list[RedisServer]:
        return [self.primary, *self.replicas]

    @property
    def url(self) -> str:
        addresses = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{addresses}/{SERVICE_NAME}"

    def start(self, timeout: float = 60.0) -> Self:
        self.primary.start()
        for replica in self.replicas:
            replica.extra_args = ("--replicaof", "127.0.0.1", str(self.primary.port))
            replica.start()
        quorum = self.sentinel_count // 2 + 1
        for _ in range(self.sentinel_count):
            sentinel = RedisServer(sentinel=True)
            sentinel.config_path.write_text(
                f"port {sentinel.port}\n"
                "bind 127.0.0.1\n"
                f"sentinel monitor {SERVICE_NAME} 127.0.0.1 {self.primary.port} {quorum}\n"
                f"sentinel down-after-milliseconds {SERVICE_NAME} {NODE_TIMEOUT_MS}\n"
                f"sentinel failover-timeout {SERVICE_NAME} 5000\n"
                f"sentinel parallel-syncs {SERVICE_NAME} 1\n"
            )
            self.sentinels.append(sentinel)
            sentinel.start()
        wait_until(
            self._watching,
            timeout,
            "the sentinels to see the primary and its replicas",
            ignore=NOT_YET,
        )
        return self

    def _watching(self) -> bool:
        for sentinel in self.sentinels:
            with sentinel.client() as client:
                replicas = client.execute_command("SENTINEL", "REPLICAS", SERVICE_NAME)
                others = client.execute_command("SENTINEL", "SENTINELS", SERVICE_NAME)
            if len(replicas) < len(self.replicas) or len(others) < self.sentinel_count - 1:
                return False
        return all(_info(r, "replication").get("master_link_status") == "up" for r in self.replicas)

    def current_primary(self) -> RedisServer:
        with self.sentinels[0].client() as client:
            _host, port = client.execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE_NAME
            )
        return next(s for s in self.servers if s.port == int(port))

    def wait_failover(self, killed: RedisServer, timeout: float = 30.0) -> RedisServer:
        def promoted() -> bool:
            current = self.current_primary()
            return current is not killed and _info(current, "replication").get("role") == "master"

        wait_until(
            promoted, timeout, f"the sentinels to replace port {killed.port}", ignore=NOT_YET
        )
        return self.current_primary()

    def rejoin(self, server: RedisServer, timeout: float = 30.0) -> None:
        """Start a stopped server as a replica of the current primary; wait until it is in sync."""
        primary = self.current_primary()
        server.extra_args = ("--replicaof", "127.0.0.1", str(primary.port))
        server.start()

        def synced() -> bool:
            replication = _info(server, "replication")
            return (
                replication.get("master_port") == str(primary.port)
                and replication.get("master_link_status") == "up"
            )

        wait_until(
            synced, timeout, f"port {server.port} to replicate port {primary.port}", ignore=NOT_YET
        )

    def close(self) -> None:
        for server in (*self.sentinels, *self.servers):
            server.close()
