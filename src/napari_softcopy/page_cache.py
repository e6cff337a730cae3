"""Keeping the copy out of the page cache's way, at the least CPU a file.

A copy reads each source file and writes its copy; both leave pages in the cache. Pages that
a call can drop are dropped at once (``posix_fadvise(DONTNEED)``: `platform.drop_cache`);
pages still dirty cannot be, whatever is asked (``fincore`` before and after: every page of
a file just written stays; none after an ``fdatasync``), and the call only starts their
writeback from the calling thread. So a source file's pages are dropped only where one is
clean (`drop_clean_cache`): every page that can be dropped still is. The copy's own pages
are dirty when it is closed (unless flushed, ``--fsync each``): their per-file call
(`destinations.LocalDestination.release`) is kept for the writeback it starts, at the
copy's idle I/O class, which keeps the flush before the marker short (benchmarks/notes.md
item 4). Started in batches by a ``syncfs`` instead, it cost the copying thread 25-28 us a
file less, but the acquisition beside it took longer in 6 of 9 ``benchmarks.day`` runs in
turns (benchmarks/notes.md, issue 22 item 3).
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading

from .platform import IS_LINUX, degrade, drop_cache

# The C library is already loaded: CDLL(None) finds its symbols (as in `platform`).
_libc = ctypes.CDLL(None, use_errno=True) if IS_LINUX else None

# cachestat(2), Linux 6.5: how many of a file's pages are cached, dirty, under writeback. (A
# system call added after the tables were unified: the same number on every architecture.)
_SYS_CACHESTAT = 451


class _CachestatRange(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Cachestat(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in ("nr_cache", "nr_dirty", "nr_writeback", "nr_evicted", "nr_recently_evicted")
    ]


_WHOLE_FILE = _CachestatRange(0, 0)
_cachestat_local = threading.local()  # .result: each thread's own `_Cachestat`


def drop_clean_cache(fd: int) -> None:
    """`drop_cache` where it drops something: not where every cached page of ``fd`` is
    dirty or under writeback (``cachestat``), which no call can drop yet.

    A source file copied a moment after a writer that does not flush wrote it (zarr-python)
    is all dirty: there the drop dropped nothing (its pages were the writer's, cached before
    the copy read them, and stay cached either way) and only submitted the writer's
    writeback from the copy's thread, 6-9 us a 4.5 KiB file against under 1 us for the look.
    A page the copy's read brought in is clean, and so is a file its writer flushed
    (tensorstore does by default, ``file_io_sync``): a file with a clean page is dropped as
    before, the look costing it the under 1 us. Where ``cachestat`` is missing (a kernel
    before 6.5), every file is dropped by `drop_cache`, said once (`degrade`)."""
    result = getattr(_cachestat_local, "result", None)
    if result is None:
        result = _cachestat_local.result = _Cachestat()
    if _cachestat_works and _libc is not None:
        args = (ctypes.byref(_WHOLE_FILE), ctypes.byref(result), 0)
        if _libc.syscall(_SYS_CACHESTAT, fd, *args) == 0:
            if result.nr_cache <= result.nr_dirty + result.nr_writeback:
                return  # (nothing cached, or nothing that can be dropped now)
        else:
            _cachestat_failed(ctypes.get_errno())
    drop_cache(fd)


def _cachestat_failed(err: int) -> None:
    global _cachestat_works
    if err in (errno.ENOSYS, errno.EPERM):  # (no such call; a seccomp filter refusing it)
        _cachestat_works = False
        degrade(
            "leaving the writer's dirty pages alone",
            f"this kernel has no cachestat ({os.strerror(err)}): the cached pages of each "
            "source file are dropped after its copy, which for a file still dirty only "
            "starts its writeback (some CPU more a file)",
        )


_cachestat_works = IS_LINUX and _libc is not None
