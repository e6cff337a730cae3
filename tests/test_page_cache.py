"""Keeping the copy out of the page cache's way: what a drop can drop (``mincore`` of the
real files), the copies' writeback in batches, the source's pages dropped only where clean."""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
import threading

import pytest

from napari_softcopy.destinations import LocalDestination
from napari_softcopy.page_cache import WRITEBACK_BATCH, BatchedWriteback, drop_clean_cache
from napari_softcopy.platform import drop_cache
from napari_softcopy.transfer import copy_file
from support import assert_identical

NAME = "softcopy-writeback"  # (the thread `BatchedWriteback` starts)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


def resident_pages(path) -> int:
    """How many of ``path``'s pages are in the page cache (``mincore`` of a mapping: the
    pages are not read in by asking)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int]
    libc.mmap.argtypes += [ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    size = os.path.getsize(path)
    page = os.sysconf("SC_PAGE_SIZE")
    fd = os.open(path, os.O_RDONLY)
    try:
        address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert address not in (None, ctypes.c_void_p(-1).value)
        try:
            vec = (ctypes.c_ubyte * ((size + page - 1) // page))()
            assert libc.mincore(address, size, vec) == 0
            return sum(v & 1 for v in vec)
        finally:
            libc.munmap(address, size)
    finally:
        os.close(fd)


def test_a_copy_just_written_keeps_its_pages_whatever_is_asked_so_its_writeback_is_batched(
    tmp_path,
):
    """Why `BatchedWriteback` drops nothing that the per-file call dropped: a file just
    written is dirty, and ``posix_fadvise(DONTNEED)`` leaves every page of it resident (it
    only starts the writeback); once flushed, the same call drops them all."""
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, os.urandom(3 * 4096))
        drop_cache(fd)
        assert resident_pages(path) == 3  # (a dirty page cannot be dropped)
        os.fdatasync(fd)
        drop_cache(fd)
        assert resident_pages(path) == 0
    finally:
        os.close(fd)


def test_copies_start_their_writeback_in_batches_and_a_flushed_copy_drops_its_pages(tmp_path):
    """A local destination's published copies are counted into one `BatchedWriteback`
    (one ``syncfs`` a batch, not a call a file); a copy flushed before its rename (``--fsync
    each``) is clean, and its pages go at once; without ``uncache`` nothing is counted."""
    src = tmp_path / "src"
    src.mkdir()
    half = WRITEBACK_BATCH // 2 + 1
    for name in ("a", "b", "c"):
        (src / name).write_bytes(os.urandom(half if name != "c" else 8192))
    dest = LocalDestination(tmp_path / "dst")
    try:
        writeback = dest._writeback
        stop = threading.Event()
        copy_file(str(src / "a"), dest, "a", stop=stop, uncache=False)
        copy_file(str(src / "a"), dest, "a", stop=stop)  # (again: this one is counted)
        assert writeback.batches == 0 and not writeback.wait_for(1, 0.05)
        copy_file(str(src / "b"), dest, "b", stop=stop)  # (past a batch: one syncfs)
        assert writeback.wait_for(1, 30)
        copy_file(str(src / "c"), dest, "c", stop=stop, fsync=True)
        assert resident_pages(tmp_path / "dst" / "c") == 0
        assert writeback.batches == 1
        assert_identical(src, tmp_path / "dst")
    finally:
        dest.close()


def test_batched_writeback_ends_with_its_descriptor_closed(tmp_path):
    """Closing stops the thread without waiting for a batch in flight; the thread closes
    its own descriptor (never a syncfs on a number reused meanwhile)."""
    # (An earlier test's writeback thread may still be closing its own descriptor: only
    # what this one opens is looked for, and only the thread it starts is waited for.)
    fds_before = set(os.listdir("/proc/self/fd"))
    threads_before = set(threading.enumerate())
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        idle = BatchedWriteback(fd, batch=10)
        idle.close()  # (no thread was started: its descriptor closes here)
        busy = BatchedWriteback(fd, batch=10)
        assert busy.add(10) and busy.wait_for(1, 30)
        (thread,) = (t for t in set(threading.enumerate()) - threads_before if t.name == NAME)
        busy.close()
        assert not busy.add(10)  # (closed: the caller starts a file's writeback itself)
        thread.join(30)
        assert not thread.is_alive()
    finally:
        os.close(fd)
    assert set(os.listdir("/proc/self/fd")) <= fds_before


def test_a_source_still_dirty_is_left_alone_and_a_clean_one_dropped(tmp_path):
    """`drop_clean_cache` skips a file whose cached pages are all dirty (no call drops
    them: the drop would only start the writer's writeback) and drops a file read back
    clean, as `drop_cache` does; on a kernel without ``cachestat`` it is `drop_cache`."""
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, os.urandom(2 * 4096))
        drop_clean_cache(fd)
        assert resident_pages(path) == 2
        os.fdatasync(fd)
        os.pread(fd, 2 * 4096, 0)
        drop_clean_cache(fd)
        assert resident_pages(path) == 0
        os.pread(fd, 2 * 4096, 0)  # (read back in: cached, clean)
        assert resident_pages(path) == 2
        drop_clean_cache(fd)
        assert resident_pages(path) == 0
    finally:
        os.close(fd)
