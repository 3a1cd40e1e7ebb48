"""Shared fixtures (Redis, key prefixes, gateway processes) and CI's strict mode.

The processes themselves are tests/processes/, a package the benchmark uses too. A
program it needs and does not find (MissingTool) skips the test here.

Strict mode (env CI=true or HUB_TESTS_STRICT=1): a skipped test, or a module
skipped at collection, is reported as a failure, so a missing tool cannot pass CI
silently.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from processes import (
    SHARED_REDIS_URL,
    Gateways,
    MissingTool,
    RedisServer,
    RedisServers,
    delete_keys,
    redis_answers,
    require_tool,
)

GATEWAYS = pytest.StashKey[Gateways]()


def strict_mode() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("HUB_TESTS_STRICT") == "1"


def _skip_reason(longrepr: object) -> str:
    # A skip's longrepr is (path, lineno, reason).
    reason = (
        str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    )
    return reason.removeprefix("Skipped: ")


def pytest_report_header() -> str:
    return "strict mode: skips fail" if strict_mode() else "strict mode: off"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.skipped and not hasattr(report, "wasxfail") and strict_mode():
        report.outcome = "failed"
        report.longrepr = f"skipped in strict mode: {_skip_reason(report.longrepr)}"
    if report.when == "call" and report.failed and GATEWAYS in item.stash:
        for name, tail in item.stash[GATEWAYS].logs():
            report.sections.append((f"Gateway log {name}", tail))
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    try:
        return (yield)
    except MissingTool as missing:
        pytest.skip(str(missing))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    try:
        return (yield)
    except MissingTool as missing:
        pytest.skip(str(missing))


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    if report.skipped and strict_mode():
        report.outcome = "failed"
        report.longrepr = f"skipped in strict mode: {_skip_reason(report.longrepr)}"
    return report


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The shared Redis at 127.0.0.1:6379 if it answers, else a private one for the session."""
    if redis_answers(SHARED_REDIS_URL):
        yield SHARED_REDIS_URL
        return
    require_tool("redis-server")
    with RedisServer() as server:
        yield server.url


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix unique to this test; its keys are deleted from `redis_url` afterwards."""
    prefix = f"t{uuid.uuid4().hex[:12]}:"
    yield prefix
    delete_keys(redis_url, prefix)


@pytest.fixture
def private_redis() -> Iterator[RedisServers]:
    """Factory: `private_redis(persistent=False, extra_args=())` -> a started RedisServer."""
    servers = RedisServers()
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture
def gateway(
    request: pytest.FixtureRequest, tmp_path: Path, redis_url: str, key_prefix: str
) -> Iterator[Gateways]:
    """Factory: `gateway(env=None, *, redis_url=, key_prefix=, port=, command=, wait_ready=)`."""
    gateways = Gateways(tmp_path, redis_url, key_prefix)
    request.node.stash[GATEWAYS] = gateways
    try:
        yield gateways
    finally:
        gateways.close()
