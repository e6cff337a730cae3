"""The project's own plumbing: CI runs exactly what the README tells a person to run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def ci_command() -> str:
    """The command `.ci/run` runs: its last line that is not a comment, `set` or `cd`."""
    lines = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    commands = [line for line in lines if not re.match(r"(set|cd)\b", line)]
    assert len(commands) == 1, f".ci/run should run exactly one command, found {commands}"
    return commands[0]


def readme_commands() -> list[str]:
    """Every line of the README's fenced bash blocks."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"^```(?:bash|sh|console)?\n(.*?)^```", text, flags=re.M | re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readme_test_command():
    command = ci_command()
    assert "pytest" in command
    assert command in readme_commands(), (
        f"README.md must show the exact command .ci/run runs: {command!r}"
    )


def test_readme_shows_the_demo_command():
    assert "bash scripts/bootstrap && .venv/bin/napari-softcopy demo" in readme_commands()


def test_readme_keeps_its_sections():
    text = (ROOT / "README.md").read_text()
    for section in ("## Usage", "## targets.yaml", "## How it works", "## Pitfalls"):
        assert re.search(rf"^{re.escape(section)}\s*$", text, flags=re.M), section


def test_ci_script_is_strict_and_runs_from_the_repo_root():
    text = (ROOT / ".ci" / "run").read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert 'cd "$(dirname "${BASH_SOURCE[0]}")/.."' in text


def test_scripts_are_valid_bash():
    for script in (ROOT / ".ci" / "run", ROOT / "scripts" / "bootstrap"):
        subprocess.run(["bash", "-n", str(script)], check=True)
        assert os.access(script, os.X_OK), f"{script} should be executable"


def test_bootstrap_is_a_no_op_when_everything_is_there():
    """After a bootstrap, running it again touches neither apt nor pip."""
    venv = ROOT / ".venv"
    if Path(sys.prefix).resolve() != venv.resolve() or not (venv / ".bootstrap-stamp").exists():
        pytest.skip("not running from a bootstrapped .venv (tox or a hand-made venv?)")
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "bootstrap")],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout, result.stdout + result.stderr
    assert "installing" not in result.stdout


def test_the_oldest_tested_versions_are_the_lower_bounds_that_pyproject_allows():
    """`tox -e oldest` pins requirements/oldest.txt: each pin must be the lower bound
    pyproject.toml states, or the bound claims a version that nothing tests."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        from pip._vendor import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["napari"]
    lower = {}
    for requirement in declared:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?>=([0-9.]+)", requirement)
        if match:
            lower[match[1].lower()] = match[2]
    pins = {}
    for line in (ROOT / "requirements" / "oldest.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = version
    assert set(pins) == {"numpy", "zarr", "tensorstore", "watchdog", "napari"}
    for name, version in pins.items():
        bound = [int(p) for p in lower[name].split(".")]
        pinned = [int(p) for p in version.split(".")]
        width = max(len(bound), len(pinned))
        assert bound + [0] * (width - len(bound)) == pinned + [0] * (width - len(pinned)), (
            f"{name}: pyproject.toml allows >={lower[name]}, tox -e oldest tests {version}"
        )


def test_the_package_imports_its_public_names_when_first_used():
    """A helper process importing one module does not import the whole package (its start
    and memory: PEP 562 names in `napari_softcopy/__init__`); every public name still
    resolves, and the list of them is the one `__getattr__` serves."""
    import napari_softcopy

    heavy = ("napari_softcopy.engine", "napari_softcopy.verify", "napari_softcopy.checks")
    assert _loaded_by(["napari_softcopy.copy_helper"], heavy) == []
    names = set(napari_softcopy.__all__) - {"__version__"}
    assert names == set(napari_softcopy._PUBLIC)
    assert all(getattr(napari_softcopy, name) is not None for name in names)


def test_the_copys_processes_do_not_load_openssl():
    """`hashlib` loads OpenSSL's libcrypto (about 4 MiB of RSS in each process): the engine
    and its helpers make their digests of names with CPython's built-in modules
    (`platform.blake2b`, `platform.sha1`)."""
    copy = ["engine", "cli", "copy_helper", "scan_walk", "source_looks"]
    openssl = ("hashlib", "_hashlib", "hmac", "secrets")
    assert _loaded_by([f"napari_softcopy.{m}" for m in copy], openssl) == []


def _loaded_by(imports: list[str], modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has loaded once it imported ``imports``."""
    import json
    import subprocess
    import sys

    code = (
        f"import json, sys, {', '.join(imports)}; "
        f"print(json.dumps(sorted(m for m in {modules!r} if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_tox_leaves_the_bootstrapped_venv_its_name():
    """tox 4.67+ writes a PEP 832 ``.venv`` redirect file at the project's root unless told
    not to; `scripts/bootstrap` makes its venv at ``.venv`` and fails on such a file."""
    import configparser

    tox = configparser.ConfigParser()
    tox.read(ROOT / "tox.ini")
    assert tox.getboolean("tox", "venv_redirect", fallback=None) is False, (
        "tox.ini: set venv_redirect = false in [tox]"
    )
