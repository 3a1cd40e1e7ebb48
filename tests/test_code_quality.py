"""The code passes the project's checks: mypy --strict (packages and tests), ruff, ruff format."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = REPO_ROOT / "pyproject.toml"
CHECKED = ["hub", "publisher", "tests", "bench"]


def run(*command: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *command], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def run_mypy(cache_dir: Path, *targets: str) -> subprocess.CompletedProcess[str]:
    # A private cache: several runs of the suite may share the work tree.
    return run(
        "mypy", "--config-file", str(PYPROJECT), "--cache-dir", str(cache_dir),
        "--no-color-output", *targets,
    )  # fmt: skip


def passed(result: subprocess.CompletedProcess[str], tool: str) -> None:
    if result.returncode != 0:
        output = result.stdout + result.stderr
        pytest.fail(f"{tool} (exit {result.returncode}) found problems:\n{output}", pytrace=False)


def test_the_packages_and_the_tests_pass_mypy_strict(tmp_path: Path) -> None:
    result = run_mypy(tmp_path / "cache")  # the files listed in pyproject.toml
    passed(result, "mypy")
    assert "Success: no issues found" in result.stdout


def test_the_project_configuration_is_strict(tmp_path: Path) -> None:
    untyped = tmp_path / "untyped.py"
    untyped.write_text("def double(x):\n    return x * 2\n")
    result = run_mypy(tmp_path / "cache", str(untyped))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "[no-untyped-def]" in result.stdout


def test_ruff_finds_nothing() -> None:
    passed(run("ruff", "check", "--no-cache", *CHECKED), "ruff check")


def test_the_code_is_formatted_as_ruff_formats_it() -> None:
    passed(run("ruff", "format", "--check", "--no-cache", *CHECKED), "ruff format --check")
