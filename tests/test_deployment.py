"""The deployment files: the compose file is valid, and nginx accepts the configuration it runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from processes import REPO_ROOT, nginx_config, require_tool


def test_the_compose_file_follows_the_compose_specification() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(REPO_ROOT / "docker-compose.yml"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_topology_has_what_sse_needs() -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert all("healthcheck" in service for service in services.values())
    assert services["gateway"]["deploy"]["replicas"] >= 3
    assert "--appendonly" in services["redis"]["command"]
    assert services["publisher"]["profiles"] == ["demo"]


def test_the_image_installs_and_runs_what_the_tests_run() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "pip install --no-cache-dir -e ." in dockerfile
    assert 'CMD ["sse-hub"]' in dockerfile
    assert "sse-hub" in (REPO_ROOT / "pyproject.toml").read_text()


def test_nginx_accepts_the_configuration_for_tests_and_for_compose(tmp_path: Path) -> None:
    nginx = require_tool("nginx")
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    upstream_line = compose["services"]["lb"]["environment"]["UPSTREAMS"]
    for name, upstreams in (
        ("tests", ["127.0.0.1:9001", "127.0.0.1:9002"]),
        ("compose", [upstream_line.split()[1].replace("gateway", "127.0.0.1")]),
    ):
        prefix = tmp_path / name
        prefix.mkdir()
        config = prefix / "nginx.conf"
        config.write_text(nginx_config(prefix, "127.0.0.1:9000", upstreams))
        result = subprocess.run(
            [nginx, "-t", "-p", str(prefix), "-c", str(config)], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        text = config.read_text()
        assert "proxy_buffering off;" in text and "proxy_http_version 1.1;" in text
