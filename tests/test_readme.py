"""The README is the newcomer's manual: its commands and tables must match the code."""

from __future__ import annotations

from pathlib import Path

from hub.config import settings_table

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
TEST_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -q -c constraints.txt -e '.[test]'"
    " && .venv/bin/python -m pytest"
)


def test_the_configuration_table_is_the_one_the_code_defines() -> None:
    assert settings_table() in README


def test_ci_runs_the_test_command_the_readme_gives() -> None:
    assert f"    {TEST_COMMAND}\n" in README
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text()


def test_the_run_command_starts_the_console_script() -> None:
    assert ".venv/bin/sse-hub" in README
    assert 'sse-hub = "hub.main:main"' in (ROOT / "pyproject.toml").read_text()
