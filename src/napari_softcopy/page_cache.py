"""Keeping the copy out of the page cache's way, at the least CPU a file.

A copy reads each source file and writes its copy; both leave pages in the cache. Pages that
a call can drop are dropped at once (``posix_fadvise(DONTNEED)``: `platform.drop_cache`);
pages still dirty cannot be, whatever is asked (``fincore`` before and after: every page of
a file just written stays; none after an ``fdatasync``), and the call only starts their
writeback from the calling thread. So a source file's pages are dropped only where one is
clean (`drop_clean_cache`: every page that can be dropped still is), and the copies' own
pages, dirty when each is closed (unless flushed, ``--fsync each``: those are dropped at
once), have their writeback started in batches (`BatchedWriteback`), which keeps the flush
before the marker short as the per-file call did (benchmarks/notes.md item 4).
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading

from .platform import IS_LINUX, current_notices, degrade, drop_cache, syncfs

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
# Each thread's own `_Cachestat` (``.result``) and the call's arguments made once around it
# (``.args``), not two ``byref`` and a tuple a file: the look 0.78-0.82 -> 0.64-0.65 us.
_cachestat_local = threading.local()


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
    if _cachestat_works and _libc is not None:
        try:
            result, args = _cachestat_local.result, _cachestat_local.args
        except AttributeError:  # (this thread's first file)
            result = _cachestat_local.result = _Cachestat()
            args = _cachestat_local.args = (ctypes.byref(_WHOLE_FILE), ctypes.byref(result), 0)
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


#: Bytes of copies whose writeback `BatchedWriteback` starts together: what may still be
#: dirty when the final flush comes (64 MiB of 4.5 KiB files: a syncfs of about 0.1 s here).
WRITEBACK_BATCH = 64 * 1024 * 1024


class BatchedWriteback:
    """Start the writeback of the files written below one open folder in batches: one
    ``syncfs`` of its filesystem each `WRITEBACK_BATCH` bytes, from a thread of its own,
    instead of one call a file.

    Why it is safe: a copy's pages are dirty when its file is closed, and dirty pages are
    not dropped (``posix_fadvise(DONTNEED)`` on a file just written leaves all its pages
    resident: ``fincore`` before and after, 0 only after an ``fdatasync``). The per-file
    call therefore dropped nothing; what it gave was an early writeback, so that little was
    dirty when the flush before the marker came (benchmarks/notes.md item 4). That cost the
    copying thread 25-28 us a 4.5 KiB file (the page's writeback submitted in the caller's
    context), most of what `transfer.sync_file` saved a file without it (35-45 us). Batched,
    the kernel's flusher writes a batch at once, the copying thread waits for none of it,
    and at most about a batch is dirty at the final flush (which still flushes everything:
    nothing here is a durability step). Clean pages stay cached until the kernel reclaims
    them, as they did. A ``syncfs`` flushes the whole filesystem: on one shared with the
    acquisition, its dirty data too, a batch earlier than the kernel would. What changes:
    the writeback's work is done by the kernel's flusher threads (not done away with), at
    their I/O class rather than the copy's idle one; beside a writer flushing each file on
    the same disk, the writer was not measured slower (benchmarks/notes.md item 58).

    Where ``syncfs`` is not there (not Linux), `add` answers False: the caller starts each
    file's writeback itself. A ``syncfs`` that fails switches batching off, said once
    (`degrade`).

    Parameters
    ----------
    fd : int
        An open folder of the filesystem written to (duplicated: the thread owns its copy).
    batch : int
        Bytes between two batches.
    """

    def __init__(self, fd: int, batch: int = WRITEBACK_BATCH) -> None:
        self._on = IS_LINUX and _libc is not None and hasattr(_libc, "syncfs")
        self._fd = os.dup(fd) if self._on else -1
        self._batch = batch
        self._written = 0  # bytes since the last batch was started
        self._due = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._done = threading.Condition()
        #: Batches written back so far.
        self.batches = 0

    def add(self, nbytes: int) -> bool:
        """Count ``nbytes`` just written; False when batches are off (start this file's
        writeback by itself: `drop_cache`)."""
        if not self._on:
            return False
        # (Workers add without a lock: a count off by a file only moves a batch by a file.)
        self._written += nbytes
        if self._written >= self._batch:
            self._written = 0
            self._kick()
        return True

    def _kick(self) -> None:
        with self._start_lock:
            if self._closed:
                return
            if self._thread is None:
                run = current_notices().thread_target(self._run)  # (the copy's notices)
                self._thread = threading.Thread(target=run, name="softcopy-writeback", daemon=True)
                self._thread.start()
        self._due.set()

    def _run(self) -> None:
        try:
            while True:
                self._due.wait()
                self._due.clear()
                if self._closed:
                    return
                try:
                    syncfs(self._fd)
                except OSError as exc:
                    self._on = False
                    degrade(
                        "batched writeback of the copies",
                        f"syncfs failed ({exc.strerror}); each copy's writeback is started "
                        "by itself",
                    )
                    return
                with self._done:
                    self.batches += 1
                    self._done.notify_all()
        finally:
            os.close(self._fd)  # (here, not in `close`: never a syncfs on a number reused)

    def wait_for(self, batches: int, timeout: float) -> bool:
        """Whether ``batches`` batches were written back within ``timeout`` seconds."""
        with self._done:
            return self._done.wait_for(lambda: self.batches >= batches, timeout)

    def close(self) -> None:
        """Stop: a batch being written back finishes in the thread, which is not waited for
        (a hung network share must not hang the copy's end; the final flush waits)."""
        with self._start_lock:
            self._closed = True
            self._on = False
            thread = self._thread
        if thread is not None:
            self._due.set()  # (the thread closes its descriptor)
        elif self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
