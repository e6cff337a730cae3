"""Freeing the acquisition disk (`napari_softcopy.move.free_source`): only files proven
identical to their copy are deleted, nothing outside the source tree, nothing after a change,
nothing at all when a copy fails the content check; a kill -9 mid-delete and a rerun end where
an uninterrupted run does. Real faults: a flipped byte, a read-only bind mount, SIGKILL."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from faults_support import bind_mount, make_archive, tree_state
from napari_softcopy import CopyEngine, CopyOptions
from napari_softcopy.destinations import LocalDestination
from napari_softcopy.manifest import MANIFEST, check_manifest
from napari_softcopy.move import JOURNAL, MoveRefused, free_source, move_in_progress


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    path = tmp_path / "state"
    monkeypatch.setenv("NAPARI_SOFTCOPY_STATE_DIR", str(path))
    return path


def copy_verified(src: Path, dst: Path) -> LocalDestination:
    engine = CopyEngine(src, dst, CopyOptions(low_priority=False))
    engine.start()
    assert engine.wait(120)
    assert engine.status().state == "verified", engine.status().message
    assert (dst / MANIFEST).exists()  # (written by the engine, before its marker)
    return LocalDestination(dst, create=False)


def archive(tmp_path: Path, n_chunks: int = 24) -> tuple[Path, Path, dict[str, bytes]]:
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    chunks = make_archive(src, n_chunks=n_chunks, chunk_bytes=8 * 1024)
    return src, dst, chunks


def files_below(root: Path) -> list[str]:
    return sorted(
        (Path(d) / f).relative_to(root).as_posix() for d, _s, fs in os.walk(root) for f in fs
    )


def test_free_source_empties_the_source_and_keeps_the_copy_intact(tmp_path):
    src, dst, chunks = archive(tmp_path)
    dest = copy_verified(src, dst)
    total = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    log = tmp_path / "deleted.log"
    report = free_source(src, dest, deleted_log=log)
    assert report.complete and report.files_freed == 26  # 24 chunks, zarr.json, the marker
    assert report.bytes_freed == total
    assert report.summary().startswith(f"freed {total / 2**20:.1f} MiB from {src} (26 files")
    assert src.is_dir() and os.listdir(src) == []  # (the root stays, empty)
    deleted = log.read_text().splitlines()
    assert deleted[-1] == "complete"  # the marker last
    assert sorted(deleted) == sorted([*chunks, "zarr.json", "complete"])
    assert check_manifest(dest).ok
    journal = json.loads((dst / JOURNAL).read_text())
    assert journal["state"] == "freed" and journal["bytes_freed"] == total
    assert not move_in_progress(dest, src)


def test_a_flipped_byte_at_the_destination_means_nothing_is_deleted(tmp_path):
    src, dst, _chunks = archive(tmp_path)
    dest = copy_verified(src, dst)
    chunk = dst / "c" / "7"
    data = bytearray(chunk.read_bytes())
    data[100] ^= 0xFF
    st = chunk.stat()
    chunk.write_bytes(bytes(data))
    os.utime(chunk, ns=(st.st_atime_ns, st.st_mtime_ns))  # (size and mtime as verified)
    before = tree_state(src)
    with pytest.raises(MoveRefused) as refused:
        free_source(src, dest)
    assert refused.value.reason == "destination"
    assert "c/7 (its content differs from the manifest)" in str(refused.value)
    assert "nothing was deleted" in str(refused.value)
    assert tree_state(src) == before
    assert not (dst / JOURNAL).exists()


def test_a_source_file_rewritten_after_the_copy_is_kept_and_reported(tmp_path):
    src, dst, _chunks = archive(tmp_path)
    dest = copy_verified(src, dst)
    (src / "c" / "2").write_bytes(b"rewritten after the copy" * 100)
    report = free_source(src, dest)
    assert files_below(src) == ["c/2"]
    assert report.kept == [("c/2", "differs from its verified copy (changed after the copy)")]
    assert "kept 1 files (first: c/2: " in report.summary()


def test_a_source_file_changed_after_its_check_is_kept(tmp_path):
    """A write between the content check and the deletion: the file's ctime (and here its
    mtime) moved, so it is kept, whatever its content. (``on_progress`` is called once every
    file is checked, before the first deletion.)"""
    src, dst, _chunks = archive(tmp_path)
    dest = copy_verified(src, dst)
    survivor = src / "c" / "23"

    def touch_when_checked(report):
        assert report.files_checked == 25 and report.files_freed == 0  # (and the marker)
        os.utime(survivor)  # (content unchanged: the ctime and mtime move)

    report = free_source(src, dest, on_progress=touch_when_checked)
    assert files_below(src) == ["c/23"]
    assert report.kept == [("c/23", "changed after it was verified (size, mtime or ctime)")]
    assert report.files_freed == 25


def test_files_the_copy_does_not_have_and_links_are_kept(tmp_path):
    src, dst, _chunks = archive(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_bytes(b"not the acquisition's")
    dest = copy_verified(src, dst)
    (src / "c" / "new").write_bytes(b"written after the finish")
    os.symlink(outside, src / "link")  # (never followed, never deleted)
    report = free_source(src, dest)
    assert (outside / "precious").read_bytes() == b"not the acquisition's"
    assert files_below(src) == ["c/new"] and (src / "link").is_symlink()
    assert dict(report.kept) == {
        "c/new": "not in the verified copy (written after its finish?)",
        "link": "not a regular file (links are never followed or deleted)",
    }


def test_no_marker_at_the_destination_means_nothing_is_deleted(tmp_path):
    src, dst, _chunks = archive(tmp_path)
    dest = copy_verified(src, dst)
    (dst / "complete").unlink()
    before = tree_state(src)
    with pytest.raises(MoveRefused, match="not verified complete") as refused:
        free_source(src, dest)
    assert refused.value.reason == "unverified"
    assert tree_state(src) == before


def test_a_read_only_source_is_a_clear_error_and_loses_nothing(tmp_path):
    real, dst, _chunks = archive(tmp_path)
    with bind_mount(real, tmp_path / "ro.zarr", read_only=True) as src:
        dest = copy_verified(src, dst)
        before = tree_state(src)
        with pytest.raises(MoveRefused) as refused:
            free_source(src, dest)
        assert refused.value.reason == "source"
        message = str(refused.value)
        assert f"source {src} is on a read-only filesystem" in message
        assert "remount it read-write and run the same command again" in message
        assert "\n" not in message
        assert tree_state(src) == before
    assert check_manifest(dest).ok


_FREE_IN_CHILD = """
import sys
from napari_softcopy.destinations import LocalDestination
from napari_softcopy.move import free_source
free_source(sys.argv[1], LocalDestination(sys.argv[2], create=False), deleted_log=sys.argv[3])
"""


def test_kill_9_mid_delete_then_rerun_ends_as_an_uninterrupted_run(tmp_path):
    """The deleted-files log is a pipe the test stops reading: the child blocks mid-delete
    once the pipe (shrunk to one page) is full, and is killed there."""
    src, dst, chunks = archive(tmp_path, n_chunks=1500)
    dest = copy_verified(src, dst)
    fifo = tmp_path / "deleted.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    fcntl.fcntl(reader, 1031, 4096)  # F_SETPIPE_SZ: one page; 1,500 paths take 10 KiB
    # (a writer of our own: the read below waits for the child's first line, not EOF)
    keep_open = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen(
        [sys.executable, "-c", _FREE_IN_CHILD, str(src), str(dst), str(fifo)], env=env
    )
    try:
        os.set_blocking(reader, True)
        first = os.read(reader, 64)  # the first deletion: the check is over, deleting began
        assert first
        child.kill()
        child.wait(30)
    finally:
        os.close(reader)
        os.close(keep_open)
    left = files_below(src)
    assert 0 < len(left) < len(chunks) + 2, "killed mid-delete"
    assert "complete" in left  # (the marker goes last)
    assert move_in_progress(dest, src)
    report = free_source(src, dest)
    assert report.complete and report.files_freed == len(left)
    assert os.listdir(src) == []
    assert check_manifest(dest).ok
    assert not move_in_progress(dest, src)


def test_a_rerun_checks_again_what_is_left(tmp_path):
    """After a crash, the copy of what is left is checked again before anything more goes: a
    copy corrupted meanwhile stops the rest."""
    src, dst, _chunks = archive(tmp_path)
    dest = copy_verified(src, dst)
    stop = threading.Event()
    free_source(src, dest, stop=stop, on_progress=lambda _r: stop.set())
    assert move_in_progress(dest, src)
    left = [rel for rel in files_below(src) if rel.startswith("c/")]
    assert len(left) == 24, "stopped once checked, before any deletion"
    with open(dst / left[0], "r+b") as f:
        f.write(b"\0\1\2")
    before = tree_state(src)
    with pytest.raises(MoveRefused, match=f"first: {left[0]} "):
        free_source(src, dest)
    assert tree_state(src) == before


def test_a_forced_finish_without_the_marker_frees_nothing(tmp_path):
    """SIGUSR2 (``finish(force=True)``) without the acquisition's marker: the acquisition may
    still be going on, and writers read their chunks back; the copy is verified and stands,
    the source stays whole."""
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    make_archive(src, n_chunks=6, chunk_bytes=4096, marker=False)
    before = tree_state(src)
    engine = CopyEngine(src, dst, CopyOptions(low_priority=False, move=True))
    engine.start()
    engine.finish(force=True)
    assert engine.wait(60)
    freed = engine.status().freed
    assert freed["refused"] == "not-ended" and freed["files_freed"] == 0
    assert "the finish was forced (SIGUSR2) without the acquisition's marker" in freed["message"]
    assert tree_state(src) == before
    assert check_manifest(LocalDestination(dst, create=False)).ok
