"""The engine's resume scan (`engine.scan`) over a real tree and its real copy."""

from __future__ import annotations

import json
import os
import threading

import pytest

from napari_softcopy import CopyEngine, CopyOptions
from napari_softcopy.destinations import LocalDestination
from napari_softcopy.engine import scan as scan_module
from napari_softcopy.transfer import copy_file

FILES = 200


@pytest.fixture
def copied(tmp_path):
    """A finished archive of `FILES` chunk files in 10 folders, and its copy made by the
    engine's own `copy_file` (mtimes kept, source stamps recorded)."""
    src, dst = tmp_path / "a.zarr", tmp_path / "c.zarr"
    src.mkdir()
    (src / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group"}))
    rels = ["zarr.json"]
    for i in range(FILES):
        folder = src / "c" / str(i // 20)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / str(i % 20)).write_bytes(os.urandom(100 + i))
        rels.append(f"c/{i // 20}/{i % 20}")
    dest = LocalDestination(dst)
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for rel in rels:
            assert copy_file(rel, dest, rel, stop=threading.Event(), src_dir_fd=fd).committed
    finally:
        os.close(fd)
        dest.close()
    return src, dst


def _scan(src, dst, *, deep: bool = False) -> list[str]:
    """One scan of the engine over ``src`` and its copy ``dst``: the paths it queued."""
    engine = CopyEngine(src, dst, CopyOptions())
    engine._dest = LocalDestination(dst, create=False)
    engine._src_fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    try:
        engine._scan(initial=True, deep=deep)
        queued = []
        while (item := engine._pending.take(timeout=0)) is not None:
            queued.append(item.path)
        assert engine._counters.files_at_destination == FILES + 1
        return sorted(queued)
    finally:
        os.close(engine._src_fd)
        engine._dest.close()


def test_a_resume_scan_asks_the_one_rule_only_about_files_that_may_differ(copied, monkeypatch):
    """A current copy's file (the source's size, its exact mtime) is settled without the
    rule's three calls; a file of another size or mtime still goes to the rule."""
    src, dst = copied
    (src / "c/0/1").write_bytes(b"another size")
    st = os.stat(src / "c/0/2")
    os.utime(src / "c/0/2", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    asked = []

    def counting(source, copy, capabilities, read_stamp=None):
        asked.append(copy)
        return real(source, copy, capabilities, read_stamp)

    real = scan_module.is_copy_of
    monkeypatch.setattr(scan_module, "is_copy_of", counting)
    assert _scan(src, dst) == ["c/0/1", "c/0/2"]
    assert len(asked) == 2  # (before: one call for each of the 201 files)


def test_a_deep_scan_still_finds_a_rewrite_with_size_and_mtime_put_back(copied):
    """The shortcut is for ordinary scans only: a deep scan compares every stamp."""
    src, dst = copied
    path = src / "c/3/4"
    st, data = os.stat(path), path.read_bytes()
    path.unlink()
    path.write_bytes(data[::-1])  # (a new inode: another version, same size)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _scan(src, dst) == []
    assert _scan(src, dst, deep=True) == ["c/3/4"]
