"""The files the final verification found identical, as it listed them at the destination:
what the manifest is assembled from (`assembly.assemble`), so that the finish walks the
destination once, not once to verify and once more to list it for the manifest.

Why the verification's listing may stand for the destination when the manifest is made: the
manifest is made after the final verification found the destination identical (and after the
flush), and only the copy writes there. Each row is a file the verification compared and
found to be a copy of the source's current version: its size, mtime and recorded stamp as
listed. A file copied again after it was listed (a copy in flight beside the walk) is of the
same source version (a change at the source cancels the marker), and the hash journal's
latest record of its path matches the row only if it is of a file of that very size, mtime
and stamp (`assembly._reusable`); any other is read back and hashed when the manifest is made.

The walk (each part of a split walk, each in its process) meets a folder's files one after
the other (`march`): each folder's rows are sorted by name and pickled as one block into a
spool file in a temporary folder of the walk's own (`spool_folder`: deleted whole with the
listing, so that a part cut short leaves nothing behind), at most one folder's rows held. A
`Listing` is the spools and, per folder, where its blocks are; it is small (a few tens of
bytes per folder), is sent back from a helper process with its part's report, and `Listing.files`
gives every file in the manifest's order (`hashes.path_key`: each folder listed sorted by
name, a folder's content where its name comes), merging the parts' blocks folder by folder.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import pickle
import shutil
import tempfile
import threading
from collections.abc import Iterator

from .destinations import FileInfo

__all__ = ["Listing", "ListingWriter", "spool_folder"]

#: One file: name in its folder, size, mtime_ns, stamp (as listed; None: none).
Row = tuple[str, int, int, "bytes | None"]


class Listing:
    """Files found identical by a verification, in spools (`ListingWriter`); picklable.

    Attributes
    ----------
    spools : list of str
        The spool files it reads (delete them with `discard` once used).
    folder : str or None
        The temporary folder they are in (`spool_folder`), deleted whole by `discard`.
    blocks : dict
        Folder (``/``-separated, ``""``: the root) -> ``(spool index, offset, length)`` of each
        block of its rows.
    """

    def __init__(
        self,
        spools: list[str] | None = None,
        blocks: dict[str, list[tuple[int, int, int]]] | None = None,
        folder: str | None = None,
    ) -> None:
        self.spools = spools or []
        self.blocks = blocks or {}
        self.folder = folder

    def merged(self, other: Listing) -> Listing:
        """A listing of both (``other``: another part of the same walk, or the files a
        `verify.recheck` found identical since)."""
        shift = len(self.spools)
        blocks = {rel: list(found) for rel, found in self.blocks.items()}
        for rel, found in other.blocks.items():
            blocks.setdefault(rel, []).extend((i + shift, o, n) for i, o, n in found)
        return Listing(self.spools + other.spools, blocks, self.folder or other.folder)

    def files(self, stop: threading.Event | None = None) -> Iterator[tuple[str, FileInfo]]:
        """Every file, in `hashes.path_key` order, with its `FileInfo` as listed. Stops
        early (incomplete) when ``stop`` is set: the caller checks it."""
        children: dict[str, set[str]] = {}
        for rel in self.blocks:
            while rel:  # (a folder holding only folders has no block: its children say it)
                parent, _, name = rel.rpartition("/")
                below = children.setdefault(parent, set())
                if name in below:
                    break
                below.add(name)
                rel = parent
        with contextlib.ExitStack() as stack:
            files = [stack.enter_context(open(path, "rb")) for path in self.spools]

            def rows(rel: str) -> Iterator[Row]:
                streams = []
                for i, offset, length in self.blocks.get(rel, ()):
                    files[i].seek(offset)
                    streams.append(pickle.loads(files[i].read(length)))
                # (stable: of one name in two blocks, a walk's and a later recheck's, the
                # later comes last; `folder` keeps it. A walk and its rechecks list a path
                # once: this only keeps a mistake there from listing a path twice)
                return heapq.merge(*streams, key=_name)

            def folder(rel: str) -> Iterator[tuple[str, FileInfo]]:
                if stop is not None and stop.is_set():
                    return
                prefix = f"{rel}/" if rel else ""
                subfolders = ((n, None, 0, None) for n in sorted(children.get(rel, ())))
                held = None
                for row in heapq.merge(rows(rel), subfolders, key=_name):
                    if held is not None and held[0] != row[0]:
                        yield prefix + held[0], FileInfo(False, True, held[1], held[2], held[3])
                        held = None
                    if row[1] is None:
                        yield from folder(prefix + row[0])
                    else:
                        held = row
                if held is not None:
                    yield prefix + held[0], FileInfo(False, True, held[1], held[2], held[3])

            yield from folder("")

    def discard(self) -> None:
        """Delete the spools (and their folder, with whatever a part cut short left there)."""
        for path in self.spools:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.spools = []
        self.blocks = {}
        self.folder = None


def spool_folder() -> str:
    """A new temporary folder for a walk's spools (each part's `ListingWriter` writes there)."""
    return tempfile.mkdtemp(prefix="softcopy-listing-")


def _name(row: Row) -> str:
    return row[0]


class ListingWriter:
    """Rows of a walk (or a recheck), a folder at a time, into one spool file in ``folder``
    (`spool_folder`)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        fd, self.path = tempfile.mkstemp(prefix="part-", dir=folder)
        self._file = os.fdopen(fd, "wb")
        self._blocks: dict[str, list[tuple[int, int, int]]] = {}
        self._folder: str | None = None
        self._rows: list[Row] = []

    def add(self, folder: str, name: str, info: FileInfo) -> None:
        """The file ``name`` of ``folder`` is identical, ``info`` as listed."""
        if folder != self._folder:
            self._flush()
            self._folder = folder
        self._rows.append((name, info.size, info.mtime_ns, info.stamp))

    def _flush(self) -> None:
        if not self._rows:
            return
        self._rows.sort()
        data = pickle.dumps(self._rows, pickle.HIGHEST_PROTOCOL)
        offset = self._file.tell()
        self._file.write(data)
        self._blocks.setdefault(self._folder, []).append((0, offset, len(data)))
        self._rows = []

    def close(self) -> Listing:
        """The listing of what was added (its spool closed; the caller discards it)."""
        try:
            self._flush()
        finally:
            self._file.close()
        return Listing([self.path], self._blocks, self.folder)

    def abandon(self) -> None:
        """Close and delete the spool (a walk that failed)."""
        self._file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
