"""nginx in the foreground with a private prefix: the deployment's configuration in front of
gateways (`Nginx`, also over TLS and HTTP/2), or any configuration (`NginxProcess`, which the
benchmark uses)."""

from __future__ import annotations

import string
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from hub.devcert import DevCertificate, ensure_certificate

from .common import (
    REPO_ROOT,
    Output,
    ProcessStartError,
    free_port,
    http_status,
    kill_session,
    require_tool,
    spawn,
    stop,
    wait_started,
)
from .gateway import Gateway

NGINX_TEMPLATE = REPO_ROOT / "deploy" / "nginx.conf.template"


def tls_listener(listen: str, certificate: Path, key: Path) -> str:
    """The template's `${TLS}`: a TLS listener speaking HTTP/2, in the form nginx 1.22 takes
    (`http2` on the listen line; from 1.25.1 the separate `http2 on;` is preferred)."""
    return (
        f"listen {listen} ssl http2;\n"
        f"        ssl_certificate {certificate};\n"
        f"        ssl_certificate_key {key};"
    )


def nginx_config(
    prefix: Path, listen: str, upstreams: Sequence[str], access_log: str = "off", tls: str = ""
) -> str:
    """The deployment's nginx configuration, with this topology's addresses filled in, and
    `tls` (see tls_listener) for a TLS listener beside the plain one."""
    servers = "".join(f"\n        server {address} max_fails=0;" for address in upstreams)
    # least_conn: streams last, so a new one goes to the gateway holding the fewest (one
    # just restarted fills up first). max_fails=0: nginx clears a failed peer only when a
    # request to it ends, and a stream never ends, so a restarted gateway would stay
    # shunned (502 for everyone).
    gateways = f"upstream gateways {{\n        least_conn;{servers}\n        keepalive 64;\n    }}"
    return string.Template(NGINX_TEMPLATE.read_text()).safe_substitute(
        PREFIX=str(prefix),
        LISTEN=listen,
        GATEWAYS=gateways,
        UPSTREAM="gateways",
        ACCESS_LOG=access_log,
        TLS=tls,
    )


class NginxProcess:
    """nginx running `config` with `directory` as its prefix, in the foreground.

    start() checks the configuration (`nginx -t`), starts nginx and returns once GET
    `ready_path` on `port` answers 200; close() stops it (SIGTERM, a fast shutdown: open
    streams are cut) and kills whatever is left of it.
    """

    def __init__(
        self, directory: Path, config: str, port: int, ready_path: str, output: Output | None = None
    ) -> None:
        self.binary = require_tool("nginx")
        self.directory = directory
        self.port = port
        self.ready_path = ready_path
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "nginx.conf"
        self.config.write_text(config)
        self.output: Output = directory / "stderr.log" if output is None else output
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        # The deployment's configuration logs errors to stderr; others may use a file.
        parts = [self.directory / "error.log"]
        if isinstance(self.output, Path):
            parts.insert(0, self.output)
        return "\n".join(p.read_text(errors="replace") for p in parts if p.exists())

    def start(self, timeout: float = 10.0) -> Self:
        arguments = ["-p", str(self.directory), "-c", str(self.config)]
        check = subprocess.run([self.binary, "-t", *arguments], capture_output=True, text=True)
        if check.returncode != 0:
            raise ProcessStartError(
                f"nginx rejected its configuration: {check.stderr.strip()[:2000]}"
            )
        self.process = spawn([self.binary, *arguments, "-g", "daemon off;"], self.output)
        try:
            wait_started(
                self.process,
                lambda: http_status("127.0.0.1", self.port, self.ready_path) == 200,
                timeout=timeout,
                name=f"nginx on port {self.port} (GET {self.ready_path})",
                goal="answer 200",
                log=self.logs,
            )
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self.process is None:
            return
        try:
            stop(self.process, 5)
        except subprocess.TimeoutExpired:
            pass
        kill_session(self.process)

    def __enter__(self) -> Self:
        if self.process is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Nginx(NginxProcess):
    """The deployment's nginx (deploy/nginx.conf.template) in front of `upstreams`.

    Ready once /healthz answers through it, that is once a gateway answers behind it.
    With `tls`, it also serves HTTPS with HTTP/2 on a second port (`tls_url`), with the
    certificate hub.devcert makes in `certificates` (`directory`/tls by default), or keeps
    there: for 127.0.0.1 and localhost, signed by `ca` (a client trusts it with
    `--cacert`, `verify=`).
    """

    def __init__(
        self,
        directory: Path,
        upstreams: Sequence[Gateway],
        *,
        tls: bool = False,
        certificates: Path | None = None,
    ) -> None:
        port = free_port()
        addresses = [f"127.0.0.1:{gateway.port}" for gateway in upstreams]
        self.certificate: DevCertificate | None = None
        self.tls_port: int | None = None
        listener = ""
        if tls:
            self.certificate = ensure_certificate(certificates or directory / "tls")
            self.tls_port = free_port()
            while self.tls_port == port:
                self.tls_port = free_port()
            listener = tls_listener(
                f"127.0.0.1:{self.tls_port}", self.certificate.certificate, self.certificate.key
            )
        config = nginx_config(directory, f"127.0.0.1:{port}", addresses, tls=listener)
        super().__init__(directory, config, port, "/healthz")

    @property
    def tls_url(self) -> str:
        if self.tls_port is None:
            raise RuntimeError("this nginx serves no TLS: make it with tls=True")
        return f"https://127.0.0.1:{self.tls_port}"

    @property
    def ca(self) -> Path:
        """The authority a client trusts to verify `tls_url`."""
        if self.certificate is None:
            raise RuntimeError("this nginx serves no TLS: make it with tls=True")
        return self.certificate.ca
