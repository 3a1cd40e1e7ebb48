"""The shipped packages type-check under the project's strict mypy configuration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from processes import REPO_ROOT

PYPROJECT = REPO_ROOT / "pyproject.toml"


def run_mypy(cache_dir: Path, *targets: str) -> subprocess.CompletedProcess[str]:
    # A private cache: several runs of the suite may share the work tree.
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(PYPROJECT),
         "--cache-dir", str(cache_dir), "--no-color-output", *targets],  # fmt: skip
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_hub_and_publisher_pass_mypy_strict(tmp_path: Path) -> None:
    result = run_mypy(tmp_path / "cache", "-p", "hub", "-p", "publisher")
    output = result.stdout + result.stderr
    if result.returncode != 0 or "Success: no issues found" not in result.stdout:
        pytest.fail(f"mypy (exit {result.returncode}) found problems:\n{output}", pytrace=False)


def test_the_project_configuration_is_strict(tmp_path: Path) -> None:
    untyped = tmp_path / "untyped.py"
    untyped.write_text("def double(x):\n    return x * 2\n")
    result = run_mypy(tmp_path / "cache", str(untyped))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "[no-untyped-def]" in result.stdout
