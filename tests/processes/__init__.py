"""Real server processes for the tests and the benchmark, and waiting for them by condition.

- private `redis-server`s (`RedisServer`), a Redis Cluster (`ClusterProcesses`), a
  Sentinel-managed primary (`SentinelProcesses`);
- gateways, `python -m hub` (`Gateway`, and the `Gateways` factory behind the `gateway`
  fixture);
- nginx, with the deployment's configuration in front of gateways (`Nginx`) or any other
  (`NginxProcess`);
- the compose topology on a real Docker engine (`ComposeProject`), on base images built
  from Debian packages (`ensure_standin_images`);
- `wait_until` / `wait_until_async`: wait for a condition, and on timeout say what was seen.

One package, imported under two names: the tests import it as `processes` (pytest puts
tests/ on sys.path), the benchmark as `tests.processes` (bench/repository.py puts the
repository's root on sys.path). Its modules import each other relatively, and it does
not import pytest: a missing program raises MissingTool, which tests/conftest.py turns
into a skip. Each class is a context manager; nothing needs a pytest fixture.
"""

from .common import (
    LOG_TAIL_CHARS,
    REPO_ROOT,
    MissingTool,
    Output,
    ProcessStartError,
    free_port,
    http_status,
    kill_session,
    log_tail,
    require_tool,
    running,
    spawn,
    stop,
    wait_started,
)
from .compose import ComposeProject, Container, require_compose
from .gateway import Gateway, Gateways, gateway_environment
from .nginx import NGINX_TEMPLATE, Nginx, NginxProcess, nginx_config, tls_listener
from .redis_server import SHARED_REDIS_URL, RedisServer, RedisServers, delete_keys, redis_answers
from .redis_topologies import NODE_TIMEOUT_MS, SERVICE_NAME, ClusterProcesses, SentinelProcesses
from .standin_images import ensure_standin_images
from .waiting import WaitTimeout, wait_until, wait_until_async

__all__ = [
    "LOG_TAIL_CHARS",
    "NGINX_TEMPLATE",
    "NODE_TIMEOUT_MS",
    "REPO_ROOT",
    "SERVICE_NAME",
    "SHARED_REDIS_URL",
    "ClusterProcesses",
    "ComposeProject",
    "Container",
    "Gateway",
    "Gateways",
    "MissingTool",
    "Nginx",
    "NginxProcess",
    "Output",
    "ProcessStartError",
    "RedisServer",
    "RedisServers",
    "SentinelProcesses",
    "WaitTimeout",
    "delete_keys",
    "ensure_standin_images",
    "free_port",
    "gateway_environment",
    "http_status",
    "kill_session",
    "log_tail",
    "nginx_config",
    "redis_answers",
    "require_compose",
    "require_tool",
    "running",
    "spawn",
    "stop",
    "tls_listener",
    "wait_started",
    "wait_until",
    "wait_until_async",
]
