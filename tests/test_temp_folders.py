"""The temporary folders of a process (`temp_folders`): those of a killed process are deleted
by the next one made of their kind, and no other."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from napari_softcopy.listing import spool_folder
from napari_softcopy.proofs import ProofSpool


def _proof_spool() -> tuple[str, Callable[[], None]]:
    spool = ProofSpool()
    return spool.folder, spool.discard


def _listing_spool() -> tuple[str, Callable[[], None]]:
    folder = spool_folder()
    return folder, lambda: shutil.rmtree(folder)


@pytest.mark.parametrize(
    ("prefix", "make"),
    [("softcopy-proofs-", _proof_spool), ("softcopy-listing-", _listing_spool)],
    ids=["proofs", "listing"],
)
def test_the_spools_of_killed_processes_are_removed(tmp_path, monkeypatch, prefix, make):
    """A process killed (SIGKILL) cannot delete its spool: the next spool of its kind made
    deletes those whose process is gone, and leaves a live process's and another kind's."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    ).stdout.strip()
    orphan = tmp_path / f"{prefix}{gone}-abc"
    alive = tmp_path / f"{prefix}{os.getppid()}-abc"
    other_kind = tmp_path / f"softcopy-other-{gone}-abc"
    for folder in (orphan, alive, other_kind):
        folder.mkdir()
        (folder / "part").write_bytes(b"rows")
    folder, discard = make()
    try:
        assert not orphan.exists()
        assert alive.exists() and other_kind.exists()
        assert Path(folder).parent == tmp_path
        assert Path(folder).name.startswith(f"{prefix}{os.getpid()}-")
    finally:
        discard()
    assert not Path(folder).exists()
