"""The periodic rescan skips the folders proven during the copy (issue 22 item 3: the live
CPU a file at a day's scale), and still finds what only it can find.

A watched folder whose proof stands is skipped: a change there would have marked it (its
event). A proven folder without its watch (past the watch limit) is looked at on its source
side, and a change there, which no event tells of, is still found and copied by the rescan
before any marker. Real writers (zarr-python), the kernel's events; the counts of folders
skipped and looked at are asserted, nothing is timed.
"""

from __future__ import annotations

from pathlib import Path

from support import engine, wait_for
from test_proofs import (
    FEW_WATCHES,
    QUICK,
    ended_identical,
    unwatched_proven,
    wait_until_proven,
    write_array,
    write_array_then_more_folders,
)


def source_files(root: Path) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file())


def test_a_periodic_rescan_skips_the_watched_proven_folders(tmp_path):
    """Every folder watched and proven: a rescan walks only the root and counts the rest
    from their proofs (the figures as a walk would give them)."""
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    e = engine(src, dst, tuning=QUICK, wait_for_source=True)
    with ended_identical(e, src, dst):
        write_array(src)
        every = wait_until_proven(e, src)
        wait_for(
            lambda: e.status().scan_folders_skipped == len(every) - 1,  # (the root is walked)
            60,
            "a rescan that skipped every proven folder but the root",
        )
        s = e.status()
        assert s.scan_folders_looked_at == 0  # (every folder kept its watch)
        assert s.files_at_destination == source_files(src)  # (256 chunks, the metadata)
        assert s.chunks_at_destination == 256


def test_a_change_in_a_proven_folder_without_its_watch_is_copied_by_a_rescan(tmp_path):
    """A chunk of a proven folder that gave its watch back is rewritten (a new mtime, no
    event can tell): the rescan's look at that folder's source side finds it changed, walks
    it and queues the chunk, which is copied during the acquisition, before any marker. A
    rescan that skipped such folders blindly would never copy it (this waits for it)."""
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    e = engine(src, dst, tuning=FEW_WATCHES, wait_for_source=True)
    with ended_identical(e, src, dst):
        write_array_then_more_folders(e, src)
        wait_for(
            lambda: e.status().scan_folders_looked_at > 0,
            60,
            "a rescan that looked at a proven folder without its watch",
        )
        folder = unwatched_proven(e, src)[0]
        chunk = src / folder / "3"
        new = bytes([250] * len(chunk.read_bytes()))
        chunk.write_bytes(new)  # (in place: its folder has no watch, so no event)
        wait_for(
            lambda: (dst / folder / "3").read_bytes() == new,
            60,
            "the rewritten chunk copied by a rescan",
        )
        s = e.status()
        assert s.finish_reason is None and not s.marker_seen  # (no finish found it)
