"""The scaled-out topology as processes: a Redis, several gateways, nginx in front."""

from __future__ import annotations

import signal
import string
import subprocess
import time
from pathlib import Path

from processes import REPO_ROOT, Gateway, ProcessStartError, _http_status, free_port, require_tool

NGINX_TEMPLATE = REPO_ROOT / "deploy" / "nginx.conf.template"


def nginx_config(prefix: Path, listen: str, upstreams: list[str]) -> str:
    """The deployment's nginx configuration, with this topology's addresses filled in."""
    servers = "\n        ".join(f"server {address} max_fails=1 fail_timeout=2s;" for address in upstreams)
    return string.Template(NGINX_TEMPLATE.read_text()).safe_substitute(
        PREFIX=str(prefix), LISTEN=listen, UPSTREAMS=servers
    )


class Nginx:
    """nginx in the foreground with a private prefix, stopped by `close`."""

    def __init__(self, directory: Path, upstreams: list[Gateway]) -> None:
        self.binary = require_tool("nginx")
        self.port = free_port()
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "nginx.conf"
        addresses = [f"127.0.0.1:{gateway.port}" for gateway in upstreams]
        self.config.write_text(nginx_config(directory, f"127.0.0.1:{self.port}", addresses))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        with open(self.directory / "stderr.log", "wb") as stderr:
            self.process = subprocess.Popen(
                [self.binary, "-p", str(self.directory), "-c", str(self.config), "-g", "daemon off;"],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        deadline = time.monotonic() + 10
        while _http_status("127.0.0.1", self.port, "/healthz", timeout=1.0) != 200:
            if self.process.poll() is not None or time.monotonic() > deadline:
                logs = [self.directory / "stderr.log", self.directory / "error.log"]
                raise ProcessStartError(
                    "nginx did not start: " + " ".join(p.read_text() for p in logs if p.exists())
                )
            time.sleep(0.05)
        return self

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
