"""The npe2 manifest: valid, one source of truth, and shipped in the wheel."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_MANIFEST = ROOT / "src" / "napari_softcopy" / "napari.yaml"
NPE2 = [sys.executable, "-m", "npe2"]


def npe2_validate(name_or_path: str, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*NPE2, "validate", *options, name_or_path], capture_output=True, text=True, timeout=120
    )


def test_installed_manifest_is_valid():
    """`npe2 validate napari-softcopy`: finds the manifest through the entry point."""
    result = npe2_validate("napari-softcopy")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_every_contributed_command_imports():
    """`npe2 validate --imports`: each `python_name` in the manifest exists."""
    pytest.importorskip("qtpy.QtWidgets", reason="the widget command needs a Qt binding")
    result = npe2_validate("napari-softcopy", "--imports")
    assert result.returncode == 0, result.stdout + result.stderr


def test_installed_manifest_is_the_package_file():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-softcopy")
    assert manifest.name == "napari-softcopy"
    assert manifest.display_name == "napari-softcopy"
    assert manifest.package_metadata.name == "napari-softcopy"


def test_top_level_manifest_is_a_relative_symlink_to_the_package_file():
    link = ROOT / "napari.yaml"
    assert link.is_symlink(), "napari.yaml must be a symlink to src/napari_softcopy/napari.yaml"
    target = os.readlink(link)
    assert not os.path.isabs(target), f"the symlink must be relative, not {target!r}"
    assert link.resolve() == PACKAGE_MANIFEST.resolve()


def test_top_level_symlink_is_tracked_as_a_symlink():
    """git stores mode 120000 for a symlink; a copied file would drift."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    out = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-s", "napari.yaml"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if not out:
        pytest.skip("napari.yaml is not committed yet")
    assert out.startswith("120000 "), out


def test_wheel_ships_the_manifest_and_its_entry_point(tmp_path):
    """Build a wheel offline from a copy of the project and look inside."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, project / name)
    shutil.copytree(
        ROOT / "src",
        project / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"),
    )
    wheels = tmp_path / "wheels"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--check-build-dependencies",
            "--no-index",
            "--quiet",
            "-w",
            str(wheels),
            str(project),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        "building the wheel offline failed (scripts/bootstrap installs the build-system "
        f"requirements into .venv):\n{result.stdout}{result.stderr}"
    )
    (wheel,) = wheels.glob("napari_softcopy-*.whl")

    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert "napari_softcopy/napari.yaml" in names
        shipped = zf.read("napari_softcopy/napari.yaml")
        (entry_points_name,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_points = zf.read(entry_points_name).decode()

    assert shipped == PACKAGE_MANIFEST.read_bytes()

    parser = configparser.ConfigParser()
    parser.read_string(entry_points)
    assert parser["napari.manifest"]["napari-softcopy"] == "napari_softcopy:napari.yaml"

    extracted = tmp_path / "napari.yaml"
    extracted.write_bytes(shipped)
    result = npe2_validate(str(extracted))
    assert result.returncode == 0, result.stdout + result.stderr
