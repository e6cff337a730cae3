"""Copying one file safely: temporary name, zero-copy, re-check, rename into place.

The final name only ever appears by an atomic rename of a complete temporary file, so a crash
at any moment leaves either the previous version or the new one, never a truncated file. A
source that changes while it is read is not committed (the caller copies it again).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
import time
from dataclasses import dataclass

from .destination import SOURCE_STAMP, Destination, source_stamp
from .platform import drop_cache

BLOCK = 8 * 1024 * 1024  # bytes per copy call: the granularity of stop checks and the cap

# Filesystems or kernels that refuse a zero-copy call answer with one of these; we then use
# the next method for the rest of the process.
_FALLBACK_ERRNOS = {
    errno.EXDEV,
    errno.EINVAL,
    errno.ENOSYS,
    errno.EOPNOTSUPP,
    errno.EBADF,
    errno.ENOTSOCK,
}
_methods = ["copy_file_range", "sendfile", "readwrite"]
if not hasattr(os, "copy_file_range"):
    _methods.remove("copy_file_range")


class Stopped(Exception):
    """The copy was abandoned because the engine is stopping."""


class NotRegularFile(OSError):
    """The source path is a symlink, directory or special file."""


class RateLimiter:
    """A bandwidth cap shared by all workers (a virtual-clock token bucket).

    Parameters
    ----------
    mb_per_s : float
        Cap in MB/s (10**6 bytes).
    """

    def __init__(self, mb_per_s: float) -> None:
        self.bytes_per_s = mb_per_s * 1e6
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def take(self, nbytes: int, stop: threading.Event) -> None:
        """Wait until ``nbytes`` may be sent; return early (raising `Stopped`) on stop."""
        with self._lock:
            now = time.monotonic()
            start = max(self._next, now - 0.2)  # allow a 0.2 s burst after idling
            self._next = start + nbytes / self.bytes_per_s
        delay = start - now
        if delay > 0 and stop.wait(delay):
            raise Stopped


@dataclass(frozen=True, slots=True)
class CopyResult:
    """Outcome of `copy_file`.

    ``committed`` is False when the source changed during the copy (nothing was renamed into
    place); ``created`` says the final name did not exist before.
    """

    committed: bool
    size: int
    mtime_ns: int
    created: bool


def identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """What must not change while a file is copied: inode, size, mtime and ctime."""
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _copy_range(fd_in: int, fd_out: int, offset: int, count: int) -> int:
    while True:
        method = _methods[0]
        try:
            if method == "copy_file_range":
                return os.copy_file_range(fd_in, fd_out, count, offset, offset)
            if method == "sendfile":
                os.lseek(fd_out, offset, os.SEEK_SET)
                return os.sendfile(fd_out, fd_in, offset, count)
            data = os.pread(fd_in, count, offset)
            view = memoryview(data)
            while view:
                written = os.pwrite(fd_out, view, offset + len(data) - len(view))
                view = view[written:]
            return len(data)
        except OSError as exc:
            if exc.errno in _FALLBACK_ERRNOS and len(_methods) > 1 and method != "readwrite":
                _methods.remove(method)  # this kernel/filesystem cannot; fall back for good
                continue
            raise


def copy_file(
    source_path: str,
    dest: Destination,
    rel: str,
    *,
    stop: threading.Event,
    limiter: RateLimiter | None = None,
    fsync: bool = False,
    uncache: bool = True,
    src_dir_fd: int | None = None,
    settle_s: float = 0.0,
    dest_exists: bool | None = None,
) -> CopyResult:
    """Copy ``source_path`` to ``rel`` below ``dest`` atomically, with the source's mtime.

    With ``src_dir_fd``, ``source_path`` is relative to that open directory (the source root
    as it was when the copy started: an archive re-created at the same path is never read).
    A source modified less than ``settle_s`` before the copy starts is not copied (returns
    ``committed=False``): a write landing in place while we read it may leave size and
    mtime as they were when we looked, so only its age shows that it could be torn.
    ``dest_exists`` says whether ``rel`` exists at the destination, when the caller knows
    (it is looked up otherwise); it only decides `CopyResult.created`.

    Raises
    ------
    FileNotFoundError
        The source vanished before it was opened.
    NotRegularFile
        The source is not a regular file (symlinks are never followed).
    Stopped
        ``stop`` was set; the temporary file was removed.
    OSError
        A read or write error (e.g. ENOSPC); the temporary file was removed.
    """
    try:
        fd_in = os.open(source_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegularFile(errno.ELOOP, "symbolic link not followed", source_path) from exc
        raise
    temp_rel = None
    fd_out = -1
    try:
        before = os.fstat(fd_in)
        if not stat.S_ISREG(before.st_mode):
            raise NotRegularFile(errno.EINVAL, "not a regular file", source_path)
        if settle_s and 0 <= time.time() - before.st_mtime_ns / 1e9 < settle_s:
            return CopyResult(False, before.st_size, before.st_mtime_ns, False)
        size = before.st_size
        fd_out, temp_rel = dest.open_temp(rel)
        offset = 0
        while offset < size:
            if stop.is_set():
                raise Stopped
            count = min(BLOCK, size - offset)
            if limiter is not None:
                limiter.take(count, stop)
            done = _copy_range(fd_in, fd_out, offset, count)
            if done == 0:
                break  # the source shrank under us; caught below
            offset += done
        after = os.fstat(fd_in)
        if offset != size or identity(after) != identity(before):
            return CopyResult(False, size, before.st_mtime_ns, False)
        os.utime(fd_out, ns=(before.st_atime_ns, before.st_mtime_ns))
        if dest.stamps:
            try:
                os.setxattr(fd_out, SOURCE_STAMP, source_stamp(before))
            except OSError as exc:
                if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise  # e.g. ENOSPC: the caller retries like any destination error
                dest.stamps = False  # this filesystem keeps no xattrs: size + mtime only
        if fsync:
            os.fsync(fd_out)
        if dest_exists is None:
            dest_exists = dest.stat(rel) is not None
        dest.commit(temp_rel, rel)
        temp_rel = None
        return CopyResult(True, size, before.st_mtime_ns, not dest_exists)
    finally:
        if fd_out >= 0:
            if uncache:
                drop_cache(fd_out)
            os.close(fd_out)
        if temp_rel is not None:
            with contextlib.suppress(OSError):
                dest.unlink(temp_rel)
        if uncache:
            drop_cache(fd_in)
        os.close(fd_in)


def write_file(dest: Destination, rel: str, data: bytes, *, mtime_ns: int | None = None) -> None:
    """Write small ``data`` to ``rel`` atomically and durably (used for the marker)."""
    fd, temp_rel = dest.open_temp(rel)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if mtime_ns is not None:
            os.utime(fd, ns=(mtime_ns, mtime_ns))
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        dest.unlink(temp_rel)
        raise
    os.close(fd)
    dest.commit(temp_rel, rel)
    dest.fsync_dir(rel.rpartition("/")[0])
