"""Lint failures fail the test suite (and so CI): `ruff check` and `ruff format --check`."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATHS = [name for name in ("src", "tests", "benchmarks") if (ROOT / name).is_dir()]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ruff") is None,
    reason="ruff is not installed (it is in the 'testing' extra)",
)


def ruff(*args: str) -> subprocess.CompletedProcess:
    # Configuration (rules, line length, excludes) comes from pyproject.toml; ruff also
    # skips what .gitignore lists (virtualenvs, caches, benchmark results).
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, *PATHS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_ruff_check():
    result = ruff("check", "--no-cache", "--output-format=concise")
    assert result.returncode == 0, f"ruff check found problems:\n{result.stdout}{result.stderr}"


def test_ruff_format():
    result = ruff("format", "--check", "--no-cache")
    assert result.returncode == 0, (
        "files need `ruff format` (run: .venv/bin/ruff format "
        f"{' '.join(PATHS)}):\n{result.stdout}{result.stderr}"
    )
