"""The deployment's nginx in front of one gateway, a TLS listener (HTTP/2) beside the plain one.

The configuration is deploy/nginx.conf.template itself, filled in by the test suite's
`nginx_config` and `tls_listener` (so the proxy and TLS settings are the deployment's,
whatever they become), with the development certificate `hub.devcert` makes.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import repository  # noqa: F401  (the repository's root on sys.path, for tests.processes)
from native import BenchError
from procstat import tree
from systems import RunContext, starting

from hub.devcert import ensure_certificate
from tests.processes import NginxProcess, free_port, nginx_config, tls_listener

BACKLOG = 4096
"""Both listeners' accept queue: room for a thousand connects at once, so the kernel never
drops one (it would be retried a second later) and the queue is not what is measured."""


def lb_config(prefix: Path, plain_port: int, tls_port: int, gateway_port: int) -> str:
    """The deployment's configuration with a plain and a TLS + HTTP/2 listener."""
    certificate = ensure_certificate(prefix)
    tls = tls_listener(
        f"127.0.0.1:{tls_port} backlog={BACKLOG}", certificate.certificate, certificate.key
    )
    listen = f"127.0.0.1:{plain_port} backlog={BACKLOG}"
    return nginx_config(prefix, listen, [f"127.0.0.1:{gateway_port}"], tls=tls)


@dataclass(frozen=True)
class LoadBalancer:
    plain_port: int
    tls_port: int
    master_pid: int

    def worker_pids(self) -> list[int]:
        """nginx's workers (its master does no proxying)."""
        return [pid for pid in tree(self.master_pid) if pid != self.master_pid]


@contextmanager
def load_balancer(ctx: RunContext, gateway_port: int) -> Iterator[LoadBalancer]:
    """nginx in front of the gateway, ready once /healthz answers through it."""
    with tempfile.TemporaryDirectory(prefix="nginx-lb-", dir=ctx.workdir) as tmp:
        prefix = Path(tmp)
        plain_port, tls_port = free_port(), free_port()
        config = lb_config(prefix, plain_port, tls_port, gateway_port)
        ngx = NginxProcess(prefix, config, plain_port, "/healthz", output=ctx.log)
        try:
            with starting("nginx"):
                ngx.start(timeout=30)
            if ngx.process is None:
                raise BenchError("nginx is not running")
            yield LoadBalancer(plain_port, tls_port, ngx.process.pid)
        finally:
            ngx.close()
