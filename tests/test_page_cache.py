"""Keeping the copy out of the page cache's way: what a drop can drop (``mincore`` of the
real files), a source's pages dropped only where one is clean."""

from __future__ import annotations

import ctypes
import mmap
import os
import sys

import pytest

from napari_softcopy.page_cache import drop_clean_cache
from napari_softcopy.platform import drop_cache

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


def test_a_file_just_written_keeps_its_pages_whatever_is_asked(tmp_path):
    """What `page_cache` stands on: a file just written is dirty, and
    ``posix_fadvise(DONTNEED)`` leaves every page of it resident (it only starts the
    writeback); once flushed, the same call drops them all."""
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
