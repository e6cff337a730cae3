"""The MkDocs site builds without a single warning (broken link, page missing from nav...)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None,
    reason="mkdocs is not installed (it is in the 'testing' and 'docs' extras)",
)
def test_docs_build_strict(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "index.html").exists()
    assert (tmp_path / "architecture" / "index.html").exists()


def test_nav_lists_only_existing_pages():
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def pages(nav):
        for entry in nav:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            if isinstance(value, list):
                yield from pages(value)
            else:
                yield value

    listed = list(pages(config["nav"]))
    assert listed[0] == "index.md"
    for page in listed:
        assert (ROOT / "docs" / page).is_file(), f"mkdocs.yml lists docs/{page}, which is missing"


def test_the_sources_state_facts_instead_of_citing_notes_outside_the_repository():
    """A comment saying "measured in FIELD-NOTES" sends a reader to a document they do not
    have: the fact itself belongs in the docstring or in docs/."""
    citing = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "src").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "FIELD-NOTES" in line or "FIELD_NOTES" in line
    ]
    assert not citing, citing
