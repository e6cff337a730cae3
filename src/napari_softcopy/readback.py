"""Reading a copy back from its destination for the manifest (`manifest`): each file's size
and BLAKE3 hash as the destination's storage returns it, with its cached pages dropped."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import blake3

from .destinations import Destination
from .platform import drop_cache, open_folder_below

__all__ = ["FolderCache", "hash_workers", "read_back", "read_fd"]

_BLOCK = 1 << 20  # bytes per read: large enough that blake3 hashes without the GIL


def read_back(dest: Destination, rel: str) -> tuple[int, str]:
    """Size and BLAKE3 hex digest of ``rel`` as the destination's storage holds it.

    Its cached pages are dropped before the read (``posix_fadvise(DONTNEED)``: the bytes come
    from the disk, not from the copy's own writes still in memory; pages not yet written back
    stay, which is why the manifest is made after the flush) and again after it (checking a
    copy must not push the acquisition's data out of the cache).
    """
    with dest.read(rel) as f:
        fd = _fileno(f)
        if fd is not None:
            return read_fd(fd)
        h = blake3.blake3()
        size = 0
        while block := f.read(_BLOCK):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def read_fd(fd: int, expected: int = -1) -> tuple[int, str]:
    """`read_back` of an open file: size and BLAKE3 hex digest, its cached pages dropped
    before and after. A file of the ``expected`` size up to a block is read in one call (a
    chunk file mostly is: one ``read`` instead of two, one hash call); the caller checks
    the size with ``fstat`` after the read (a read one byte longer that returns exactly
    ``expected`` bytes ends at the end of a file of that size)."""
    drop_cache(fd)
    try:
        if 0 <= expected < _BLOCK:
            data = os.read(fd, expected + 1)
            if len(data) == expected:
                return expected, blake3.blake3(data).hexdigest()
            h = blake3.blake3(data)  # (a short read, or a longer file: read on to the end)
            size = len(data)
        else:
            h = blake3.blake3()
            size = 0
        while block := os.read(fd, _BLOCK):
            h.update(block)
            size += len(block)
        return size, h.hexdigest()
    finally:
        drop_cache(fd)


def _fileno(f: object) -> int | None:
    """The descriptor behind a destination's reader (None for a network stream)."""
    try:
        return f.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None


def _hash_all(
    dest: Destination,
    paths: Iterable[str],
    workers: int,
    stop: threading.Event | None,
    on_file: Callable[[str, int], None] | None = None,
) -> Iterator[tuple[str, int, str] | tuple[str, OSError]]:
    """Read back every path (`read_back`) on ``workers`` threads: ``(path, size, digest)``, or
    ``(path, error)`` for one that could not be read."""

    def one(rel: str):
        if stop is not None and stop.is_set():
            return None
        try:
            size, digest = read_back(dest, rel)
        except OSError as exc:
            return rel, exc
        if on_file is not None:
            on_file(rel, size)
        return rel, size, digest

    with ThreadPoolExecutor(workers, thread_name_prefix="softcopy-hash") as pool:
        for result in pool.map(one, paths):
            if result is not None:
                yield result


def hash_workers(dest: Destination) -> int:
    """Threads reading the destination back: two on a local disk (one hashes while the other
    waits on the disk), the copy's own count on a network (latency, not bandwidth, bounds)."""
    return max(2, min(8, dest.suggested_workers()))


class FolderCache:
    """The descriptor of the folder last read from, below a local destination's root: the
    hasher takes the files of a folder one after the other, as the copy publishes them, and
    opens each by name in it (`platform.open_folder_below`: no link followed on the way)."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self.rel: str | None = None
        self.fd = -1

    def open(self, rel: str) -> int:
        if rel != self.rel:
            self.close()
            self.fd = open_folder_below(self.root_fd, rel)
            self.rel = rel
        return self.fd

    def close(self) -> None:
        if self.rel is not None:
            self.rel = None
            os.close(self.fd)
