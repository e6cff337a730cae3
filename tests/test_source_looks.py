"""The finish's looks at unwatched proven folders' source (`source_looks.look_at_sources`):
the same folders found changed whether a helper process shares them or not, a helper's
chunks booked as its own, and a look cut short never vouching for a folder it did not make."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from napari_softcopy.destinations import Capabilities, FileInfo
from napari_softcopy.destinations.base import source_stamp
from napari_softcopy.proofs import NO_WATCH, Proof, ProofSpool
from napari_softcopy.source_looks import _CHUNK, look_at_sources

#: Folders: more than two chunks, so that both the helper and this process look at some.
FOLDERS = 3 * _CHUNK + 10


def _proven_tree(root: Path, spool: ProofSpool) -> dict[str, Proof]:
    """``FOLDERS`` folders of 3 files, each "proven" as a proof records it: its rows (size,
    mtime, the source version's stamp) in ``spool``."""
    proofs = {}
    for i in range(FOLDERS):
        rel = f"t{i // 100}/c{i % 100}"
        (root / rel).mkdir(parents=True)
        for k in range(3):
            (root / rel / str(k)).write_bytes(os.urandom(10 + k))
        for name in sorted(os.listdir(root / rel)):
            st = os.lstat(root / rel / name)
            spool.add(
                rel, name, FileInfo(False, True, st.st_size, st.st_mtime_ns, source_stamp(st))
            )
        offset, length, _, _ = spool.block(rel)
        proofs[rel] = Proof(offset, length, 3, 33, 0, (), NO_WATCH)
    return proofs


def _rewrite_keeping_size_and_mtime(path: Path) -> None:
    st = path.stat()
    path.write_bytes(bytes(st.st_size))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_the_helper_and_this_process_find_the_same_changes(tmp_path):
    """Changes spread over every chunk (a rewrite with size and mtime put back, a new file,
    a file gone) are found wherever they were looked at; the rest are found as proven."""
    root = tmp_path / "src"
    spool = ProofSpool()
    try:
        proofs = _proven_tree(root, spool)
        folders = list(proofs)
        changed = {folders[3], folders[_CHUNK + 7], folders[2 * _CHUNK + 1], folders[-1]}
        _rewrite_keeping_size_and_mtime(root / folders[3] / "1")
        (root / folders[_CHUNK + 7] / "new").write_bytes(b"x")
        (root / folders[2 * _CHUNK + 1] / "0").unlink()
        _rewrite_keeping_size_and_mtime(root / folders[-1] / "2")
        (root / folders[5] / "0.__lock").write_bytes(b"x")  # (a writer's temporary file)
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            caps = Capabilities()
            shared = look_at_sources(root_fd, spool.path, proofs, folders, caps, helper_from=1)
            alone = look_at_sources(root_fd, spool.path, proofs, folders, caps)
        finally:
            os.close(root_fd)
    finally:
        spool.discard()
    assert shared.changed == alone.changed == changed
    assert shared.looked == alone.looked == FOLDERS
    assert 0 < shared.in_helper < FOLDERS, shared.in_helper  # (fed first, then both look)
    assert alone.in_helper == 0


def test_looks_cut_short_vouch_for_nothing(tmp_path):
    """A stop before the looks end: every folder counts as changed (walked, or the walk is
    cut short too), none as found proven."""
    root = tmp_path / "src"
    spool = ProofSpool()
    stop = threading.Event()
    stop.set()
    try:
        proofs = _proven_tree(root, spool)
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            found = look_at_sources(
                root_fd, spool.path, proofs, list(proofs), Capabilities(), helper_from=1, stop=stop
            )
        finally:
            os.close(root_fd)
    finally:
        spool.discard()
    assert found.changed == set(proofs) and found.looked == 0
