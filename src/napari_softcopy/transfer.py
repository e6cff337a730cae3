"""Copying one file safely: temporary name, zero-copy, re-check, rename into place.

The final name only ever appears by an atomic rename of a complete temporary file, so a crash
at any moment leaves either the previous version or the new one, never a truncated file. A
source that changes while it is read is not committed (the caller copies it again).

This module moves the bytes (``copy_file_range``, ``sendfile`` or read/write, the bandwidth
cap, dropping cached pages) into the temporary file the `Destination` hands out (into its
descriptor; where it has none, an object store, through `TempFile.write`), hashing them on
the way where the manifest wants it (``digest=True``: read/write through Python, BLAKE3 over
each block; `hashes` says why the bytes as copied, not a read back); the
destination names, stamps, flushes and publishes it (`Destination.publish`). `sync_file`
decides by the one rule (`destinations.is_copy_of`) whether a copy is needed at all, and
`settle_left` is the one settle check.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from dataclasses import dataclass

import blake3

from .destinations import Destination, FileInfo, TempFile, is_copy_of, source_stamp
from .page_cache import drop_clean_cache

#: A file modified less than this long ago is copied a moment later: a second write in the
#: same kernel clock tick would leave size and mtime unchanged and go unnoticed.
RACY_S = 0.03

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


# Not frozen (as `destinations.FileInfo`): a frozen dataclass sets each field through
# object.__setattr__, and the copy makes one of these and one `CopyResult` a file (1.8-2.2
# us for a frozen `CopyResult`, 0.14-0.48 us for a plain one). Nothing changes them after.
@dataclass(slots=True)
class SyncOutcome:
    """What `sync_file` did with one path."""

    #: The copy's outcome; None where the copy was current (nothing copied).
    copy: CopyResult | None
    #: What was at the destination before (None: nothing).
    previous: FileInfo | None


@dataclass(slots=True)
class CopyResult:
    """Outcome of `copy_file`.

    ``committed`` is False when the source changed during the copy (nothing was renamed into
    place); ``created`` says the final name did not exist before. ``stamp``: the stamp of the
    source version copied (`destinations.source_stamp`); ``digest``: where the copy was
    hashed (``copy_file(digest=True)``), the BLAKE3 hex digest of the bytes written.
    """

    committed: bool
    size: int
    mtime_ns: int
    created: bool
    digest: str = ""
    stamp: str = ""


def settle_left(mtime_ns: int, settle_s: float = RACY_S) -> float:
    """The one settle check: seconds until a source file last modified at ``mtime_ns`` is
    old enough to copy (0.0: now). A write landing in place while it is read may leave size
    and mtime as they were when we looked, so only its age shows that it could be torn. An
    mtime in the future (a skewed clock) counts as settled, as it always did: waiting for it
    could take forever."""
    age = time.time() - mtime_ns / 1e9
    return settle_s - age if 0 <= age < settle_s else 0.0


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
            _pwrite_all(fd_out, data, offset)
            return len(data)
        except OSError as exc:
            if exc.errno in _FALLBACK_ERRNOS and len(_methods) > 1 and method != "readwrite":
                _methods.remove(method)  # this kernel/filesystem cannot; fall back for good
                continue
            raise


def _stream_range(fd_in: int, temp: TempFile, offset: int, count: int, hasher) -> int:
    """Read ``count`` bytes at ``offset`` and hand them to ``temp`` (`TempFile.write`)."""
    data = os.pread(fd_in, count, offset)
    if data:
        if hasher is not None:
            hasher.update(data)
        temp.write(data)
    return len(data)


def _hashed_range(fd_in: int, fd_out: int, offset: int, count: int, hasher) -> int:
    """`_copy_range` through Python, the bytes hashed between the read and the write (what is
    written is exactly what was hashed). A chunk file is one read, one hash, one write."""
    data = os.pread(fd_in, count, offset)
    hasher.update(data)
    _pwrite_all(fd_out, data, offset)
    return len(data)


def _pwrite_all(fd_out: int, data: bytes, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (a ``pwrite`` may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.pwrite(fd_out, view, offset + len(data) - len(view)) :]


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
    digest: bool = False,
) -> CopyResult:
    """Copy ``source_path`` to ``rel`` below ``dest`` atomically, with the source's mtime
    and its stamp (`destinations.source_stamp`, where the destination keeps xattrs).

    With ``src_dir_fd``, ``source_path`` is relative to that open directory (the source root
    as it was when the copy started: an archive re-created at the same path is never read).
    A source modified less than ``settle_s`` before the copy starts is not copied (returns
    ``committed=False``): a write landing in place while we read it may leave size and
    mtime as they were when we looked, so only its age shows that it could be torn.
    ``dest_exists`` says whether ``rel`` exists at the destination, when the caller knows
    (it is looked up otherwise); it only decides `CopyResult.created`. ``digest``: hash the
    bytes as they are copied (`CopyResult.digest`).

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
    temp = None
    try:
        before = os.fstat(fd_in)
        if not stat.S_ISREG(before.st_mode):
            raise NotRegularFile(errno.EINVAL, "not a regular file", source_path)
        if settle_s and settle_left(before.st_mtime_ns, settle_s):
            return CopyResult(False, before.st_size, before.st_mtime_ns, False)
        size = before.st_size
        temp = dest.create_temp(rel)
        temp.expect(size)  # (before reading: an object store may make a large file wait)
        fd_out = temp.fileno()
        hasher = blake3.blake3() if digest else None
        offset = 0
        while offset < size:
            if stop.is_set():
                raise Stopped
            count = min(BLOCK, size - offset)
            if limiter is not None:
                limiter.take(count, stop)
            if fd_out is None:  # (no descriptor: an object store takes a byte stream)
                done = _stream_range(fd_in, temp, offset, count, hasher)
            elif hasher is not None:
                done = _hashed_range(fd_in, fd_out, offset, count, hasher)
            else:
                done = _copy_range(fd_in, fd_out, offset, count)
            if done == 0:
                break  # the source shrank under us; caught below
            offset += done
        after = os.fstat(fd_in)
        if offset != size or identity(after) != identity(before):
            return CopyResult(False, size, before.st_mtime_ns, False)
        if dest_exists is None:
            dest_exists = dest.stat(rel) is not None
        stamp = source_stamp(before)
        dest.publish(
            temp,
            mtime_ns=before.st_mtime_ns,
            atime_ns=before.st_atime_ns,
            stamp=stamp,
            fsync=fsync,
        )
        digest_hex = "" if hasher is None else hasher.hexdigest()
        return CopyResult(
            True, size, before.st_mtime_ns, not dest_exists, digest_hex, stamp.decode("ascii")
        )
    finally:
        if temp is not None:
            dest.release(temp, uncache=uncache)  # (removed unless published)
        if uncache:
            drop_clean_cache(fd_in)  # (a source still dirty: nothing to drop, `page_cache`)
        os.close(fd_in)


def sync_file(
    rel: str,
    st: os.stat_result,
    dest: Destination,
    *,
    force: bool,
    stop: threading.Event,
    src_dir_fd: int,
    limiter: RateLimiter | None = None,
    fsync: bool = False,
    uncache: bool = True,
    settle_s: float = RACY_S,
    digest: bool = False,
) -> SyncOutcome:
    """Copy the settled regular source file ``rel`` (``st``, its lstat below ``src_dir_fd``)
    unless its copy is current by the one rule (`destinations.is_copy_of`; ``force``: copy
    anyway). The engine's workers and the copy helper both sync through this; ``digest``:
    hash the bytes as copied (`CopyResult.digest`).

    Returns
    -------
    SyncOutcome
        The copy's outcome (None: the copy was current, nothing copied) and what was at the
        destination before.

    Raises
    ------
    As `copy_file`.
    """
    old = dest.stat(rel)
    if not force and is_copy_of(st, old, dest.capabilities, lambda: dest.source_stamp(rel)):
        return SyncOutcome(None, old)
    result = copy_file(
        rel,
        dest,
        rel,
        stop=stop,
        limiter=limiter,
        fsync=fsync,
        uncache=uncache,
        src_dir_fd=src_dir_fd,
        settle_s=settle_s,  # re-checked on the opened file: it may have changed since
        dest_exists=old is not None,  # only this engine writes there (it holds the lock)
        digest=digest,
    )
    return SyncOutcome(result, old)


def write_file(dest: Destination, rel: str, data: bytes, *, mtime_ns: int | None = None) -> None:
    """Write small ``data`` to ``rel`` atomically and durably (used for the marker)."""
    dest.write_file(rel, data, mtime_ns=mtime_ns)
