"""The deployment files: the compose file is valid, and nginx accepts the configuration it runs."""

from __future__ import annotations

import re
import string
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from processes import NGINX_TEMPLATE, REPO_ROOT, nginx_config, require_tool


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
    # Every long-running service; `tls` only makes a certificate at start and exits.
    running = {name: service for name, service in services.items() if name != "tls"}
    assert all("healthcheck" in service for service in running.values())
    assert all(service["restart"] == "unless-stopped" for service in running.values())
    assert services["tls"]["restart"] == "no"
    assert services["lb"]["depends_on"]["tls"] == {"condition": "service_completed_successfully"}
    assert services["gateway"]["deploy"]["replicas"] >= 3
    assert "--appendonly" in services["redis"]["command"]
    assert services["publisher"]["profiles"] == ["demo"]
    assert services["publisher"]["init"] is True


def test_the_compose_topology_is_safe_on_a_network_by_default() -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert "ports" not in services["redis"]
    assert services["lb"]["ports"] == [
        "${HUB_LB_ADDRESS:-127.0.0.1}:${HUB_LB_TLS_PORT:-8443}:8443",
        "${HUB_LB_ADDRESS:-127.0.0.1}:${HUB_LB_PORT:-8080}:8080",
    ]
    # No working default secret: without one, HTTP publishing is off.
    assert services["gateway"]["environment"]["HUB_PUBLISH_TOKEN"] == "${HUB_PUBLISH_TOKEN:-}"
    assert services["gateway"]["pull_policy"] == "build"


def test_the_image_installs_the_tested_versions_and_runs_unprivileged() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "-c constraints.txt" in dockerfile
    assert "\nUSER hub\n" in dockerfile
    assert 'CMD ["sse-hub"]' in dockerfile
    assert "sse-hub" in (REPO_ROOT / "pyproject.toml").read_text()
    ignored = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[ignored.index("*") :][:1] == ["*"], "the build context is an allowlist"


def _pins() -> dict[str, str]:
    lines = (REPO_ROOT / "constraints.txt").read_text().splitlines()
    pairs = (line.split("==", 1) for line in lines if "==" in line and not line.startswith("#"))
    return {canonical_name(name): version.strip() for name, version in pairs}


def canonical_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_tests_run_with_the_pinned_versions_of_everything_the_hub_needs() -> None:
    pins = _pins()
    needed: set[str] = set()
    pending = ["sse-hub"]
    while pending:
        name = pending.pop()
        for requirement in metadata.requires(name) or []:
            parsed = Requirement(requirement)
            if parsed.marker is not None and not parsed.marker.evaluate({"extra": ""}):
                continue
            dependency = canonical_name(parsed.name)
            if dependency not in needed:
                needed.add(dependency)
                pending.append(dependency)
    assert sorted(needed - pins.keys()) == [], "dependencies constraints.txt does not pin"
    installed = {name: metadata.version(name) for name in needed}
    assert {n: v for n, v in installed.items() if pins[n] != v} == {}, (
        "installed versions differ from constraints.txt: install with -c constraints.txt"
    )


def test_nginx_accepts_the_configuration_for_tests_and_for_compose(tmp_path: Path) -> None:
    nginx = require_tool("nginx")
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    lb = compose["services"]["lb"]["environment"]
    tests_prefix = tmp_path / "tests"
    compose_prefix = tmp_path / "compose"
    configs = {
        tests_prefix: nginx_config(tests_prefix, "127.0.0.1:9000", ["127.0.0.1:9001"]),
        # As the lb service's envsubst fills it in, in a prefix of our own.
        compose_prefix: string.Template(NGINX_TEMPLATE.read_text()).safe_substitute(
            # Its TLS listener (`http2 on`, nginx >= 1.25.1, and certificates made at start)
            # is left out here: tests/test_compose.py runs it in the lb container.
            {**lb, "PREFIX": str(compose_prefix), "LISTEN": "127.0.0.1:9000", "TLS": ""}
        ),
    }
    for prefix, text in configs.items():
        prefix.mkdir()
        config = prefix / "nginx.conf"
        config.write_text(text)
        result = subprocess.run(
            [nginx, "-t", "-p", str(prefix), "-c", str(config)], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        assert "proxy_buffering off;" in text and "proxy_http_version 1.1;" in text
        assert "proxy_pass http://$gateways;" in text
