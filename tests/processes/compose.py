"""The project's own docker-compose.yml, brought up on a real Docker engine under a
project name of its own, with the load balancer on a free loopback port.

`ComposeProject` runs `docker compose` as a user would (from the repository, with the
settings in the environment) and answers what a test asks of the engine: containers,
their state, published ports, what is left after `down -v`.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from .common import REPO_ROOT, MissingTool, free_port, require_tool

COMMAND_TIMEOUT = 600.0


def require_compose() -> str:
    """The docker CLI, once it is known to reach an engine and to have Compose v2."""
    docker = require_tool("docker")
    if subprocess.run([docker, "info"], capture_output=True).returncode != 0:
        raise MissingTool("no Docker engine answers (start dockerd)")
    version = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
    if version.returncode != 0:
        raise MissingTool("Docker Compose v2 (`docker compose`) is not installed")
    return docker


@dataclass(frozen=True)
class Container:
    name: str
    service: str
    number: int
    running: bool
    health: str
    restarts: int
    exit_code: int
    started_at: str
    pid: int


class ComposeProject:
    """`docker compose -p <unique name>` on the repository's compose file.

    `up()` builds and starts the topology and waits until every service is healthy;
    `close()` takes it down with its volumes, whatever state it is in.
    """

    def __init__(self, settings: Mapping[str, str] | None = None) -> None:
        self.docker = require_compose()
        self.name = f"ssehubtest{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tls_port = free_port()
        self.tls_url = f"https://localhost:{self.tls_port}"
        self.environment = {
            **os.environ,
            "HUB_LB_PORT": str(self.port),
            "HUB_LB_TLS_PORT": str(self.tls_port),
            **(settings or {}),
        }

    def compose(
        self, *arguments: str, check: bool = True, timeout: float = COMMAND_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.docker, "compose", "-p", self.name, *arguments],
            cwd=REPO_ROOT,
            env=self.environment,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"docker compose {' '.join(arguments)} failed ({result.returncode}):\n"
                + (result.stdout + result.stderr)[-4000:]
            )
        return result

    def docker_cli(self, *arguments: str, check: bool = True) -> str:
        result = subprocess.run(
            [self.docker, *arguments], capture_output=True, text=True, timeout=COMMAND_TIMEOUT
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(arguments)} failed: {result.stderr[-2000:]}")
        return result.stdout

    def up(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        """`up -d --wait`: returns once every service started is healthy."""
        return self.compose("up", "-d", "--wait", *arguments)

    def containers(self, service: str | None = None, *, all_states: bool = True) -> list[Container]:
        """The project's containers (of one service), ordered by service and number."""
        filters = ["--filter", f"label=com.docker.compose.project={self.name}"]
        if service is not None:
            filters += ["--filter", f"label=com.docker.compose.service={service}"]
        ids = self.docker_cli("ps", "-q", *(["-a"] if all_states else []), *filters).split()
        if not ids:
            return []
        found = [self._container(item) for item in json.loads(self.docker_cli("inspect", *ids))]
        return sorted(found, key=lambda c: (c.service, c.number))

    @staticmethod
    def _container(item: dict[str, Any]) -> Container:
        labels = item["Config"]["Labels"]
        state = item["State"]
        return Container(
            name=item["Name"].lstrip("/"),
            service=labels["com.docker.compose.service"],
            number=int(labels["com.docker.compose.container-number"]),
            running=bool(state["Running"]),
            health=state.get("Health", {}).get("Status", ""),
            restarts=int(item["RestartCount"]),
            exit_code=int(state["ExitCode"]),
            started_at=str(state["StartedAt"]),
            pid=int(state["Pid"]),
        )

    def container(self, name: str) -> Container:
        return self._container(json.loads(self.docker_cli("inspect", name))[0])

    def published_ports(self, name: str) -> list[tuple[str, str]]:
        """(host address, host port) of every port `name` publishes on the host."""
        item = json.loads(self.docker_cli("inspect", name))[0]
        bindings: dict[str, list[dict[str, str]] | None] = item["HostConfig"]["PortBindings"] or {}
        return [
            (binding["HostIp"], binding["HostPort"])
            for targets in bindings.values()
            for binding in targets or []
        ]

    def exec(self, name: str, command: Sequence[str]) -> str:
        return self.docker_cli("exec", name, *command)

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes the project still has on the engine."""
        label = f"label=com.docker.compose.project={self.name}"
        return {
            "containers": self.docker_cli("ps", "-aq", "--filter", label).split(),
            "networks": self.docker_cli("network", "ls", "-q", "--filter", label).split(),
            "volumes": self.docker_cli("volume", "ls", "-q", "--filter", label).split(),
        }

    def logs(self, service: str | None = None, tail: int = 200) -> str:
        arguments = ["logs", "--no-color", "--tail", str(tail)]
        result = self.compose(*arguments, *([service] if service else []), check=False)
        return result.stdout + result.stderr

    def close(self) -> None:
        self.compose(
            "--profile", "demo", "down", "-v", "--remove-orphans", "--timeout", "5", check=False
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
