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
gives every file in walk order (`journal_records.path_key`: each folder listed sorted by
name, a folder's content where its name comes), merging the parts' blocks folder by folder.

A folder proven during the copy may also have its manifest lines made then (`proofs`): a
listing of the finish's walk holds where those are (`ProvenLines`), and `Listing.files` leaves
those folders out; the manifest takes their lines whole after the files it lists, in the order
they were proven. Where another part of the listing (a recheck) lists such a folder too, its
rows are given instead, merged with that part's.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import pickle
import shutil
import tempfile
import threading
from array import array
from collections.abc import Iterator, Mapping

from .destinations import FileInfo
from .temp_folders import process_temp_folder

__all__ = ["Listing", "ListingWriter", "ProvenLines", "spool_folder"]

#: One file: name in its folder, size, mtime_ns, stamp (as listed; None: none).
Row = tuple[str, int, int, "bytes | None"]


class ProvenLines:
    """The manifest lines of the folders a finish's walk vouched for by their proofs, each
    made when its folder was proven (`proofs.ProofSpool`: ``lines_path``), and the proofs
    themselves (``proofs``: a folder's rows, where another part lists it too). Not changed
    once the walk is done: what a listing takes out of it is the listing's (`Listing.given`).

    Held: 16 bytes a folder (where its lines are) and its name, as `Listing` holds a folder
    of rows."""

    def __init__(self, rows_path: str, lines_path: str, proofs: Mapping) -> None:
        self.rows_path = rows_path
        self.lines_path = lines_path
        self.proofs = proofs
        self.folders: list[str] = []
        self.spans = array("q")  # (offset, length) of each folder's lines
        self.files = 0
        self.bytes = 0

    def add(self, folder: str, proof) -> None:
        """Vouch for ``folder`` by its `proofs.Proof` ``proof`` (one with lines)."""
        self.folders.append(folder)
        self.spans.extend((proof.lines_at, proof.lines))
        self.files += proof.files
        self.bytes += proof.bytes

    def rows_of(self, folders: list[str]) -> tuple[str, list[str], array]:
        """A listing part of the proofs' rows of ``folders`` (some it holds)."""
        spans = array("q")
        for folder in folders:
            proof = self.proofs[folder]
            spans.extend((proof.offset, proof.length))
        return self.rows_path, folders, spans

    def counts(self, given: set[str]) -> tuple[int, int]:
        """Files and bytes of the lines held, but those of the folders ``given``."""
        files, nbytes = self.files, self.bytes
        for folder in given:
            proof = self.proofs[folder]
            files -= proof.files
            nbytes -= proof.bytes
        return files, nbytes

    def ranges(self, given: set[str]) -> Iterator[tuple[int, int]]:
        """``(offset, length)`` in ``lines_path`` of every line held but those of the folders
        ``given``, in the file's order, neighbours joined (a day's proofs lie end to end: a
        few long reads)."""
        folders, spans = self.folders, self.spans
        order = sorted(
            (i for i in range(len(folders)) if not given or folders[i] not in given),
            key=lambda i: spans[2 * i],
        )
        start = end = -1
        for i in order:
            offset, length = spans[2 * i], spans[2 * i + 1]
            if offset != end:
                if end > start:
                    yield start, end - start
                start = offset
            end = offset + length
        if end > start:
            yield start, end - start


class Listing:
    """Files found identical by a verification, in spools (`ListingWriter`); picklable.

    Held per block of rows (a folder's, in one spool): its folder's path and two integers,
    about 90 bytes (100,000 folders: 9 MB; dicts of tuples took 31).

    Attributes
    ----------
    parts : list
        ``(spool path, folder of each block, (offset, length) of each block)`` per spool.
    folder : str or None
        The temporary folder of the spools (`spool_folder`), deleted whole by `discard`.
    borrowed : tuple of str
        Spools read but not owned (`proofs.ProofSpool`'s, kept for the next finish):
        `discard` leaves them.
    proven : ProvenLines or None
        The folders vouched for whose manifest lines were made when proven: not given by
        `files` (but where another part lists them too).
    """

    def __init__(
        self,
        parts: list[tuple[str, list[str], array]] | None = None,
        folder: str | None = None,
        borrowed: tuple[str, ...] = (),
        proven: ProvenLines | None = None,
    ) -> None:
        self.parts = parts or []
        self.folder = folder
        self.borrowed = borrowed
        self.proven = proven

    @property
    def spools(self) -> list[str]:
        """The spool files it reads."""
        return [path for path, _, _ in self.parts]

    def merged(self, other: Listing) -> Listing:
        """A listing of both (``other``: another part of the same walk, or the files a
        `verify.recheck` found identical since)."""
        return Listing(
            self.parts + other.parts,
            self.folder or other.folder,
            self.borrowed + other.borrowed,
            self.proven or other.proven,  # (at most one has any: the proofs' part)
        )

    def files(
        self, stop: threading.Event | None = None, given: list[str] | None = None
    ) -> Iterator[tuple[str, FileInfo]]:
        """Every file, in `journal_records.path_key` order, with its `FileInfo` as listed,
        but those of the folders `proven` holds (their lines are taken whole: the caller
        takes them after these, `ProvenLines.ranges`), save those `given` (worked out here
        unless the caller did already). Stops early (incomplete) when ``stop`` is set: the
        caller checks it.

        The blocks are taken in their folders' order (a folder before what is below it,
        siblings by name): a stack of the folders on the way down holds each one's rows not
        given yet, the rows of a folder that sort before its next subfolder are given before
        that subfolder's. Held: the blocks' order, and one folder's rows per level.
        """
        parts = self.parts
        if given is None:
            given = self.given()
        if given:  # (first: the rows of a later part, a recheck's, are kept)
            parts = [self.proven.rows_of(given), *parts]
        # (path_key order is the order of the paths with "/" made the lowest character: no
        # name holds a NUL, so "a/b" sorts before "a.b", as ("a", "b") before ("a.b",))
        order = sorted(
            ((p << 32) | i for p, (_, folders, _) in enumerate(parts) for i in range(len(folders))),
            key=lambda n: parts[n >> 32][1][n & 0xFFFFFFFF].replace("/", "\0"),
        )
        with contextlib.ExitStack() as stack:
            spools = [stack.enter_context(open(path, "rb")) for path, _, _ in parts]
            # (folder, prefix of its paths, its rows, the next row to give)
            down: list[list] = []
            k = 0
            while k < len(order):
                if stop is not None and stop.is_set():
                    return
                p, i = order[k] >> 32, order[k] & 0xFFFFFFFF
                rel = parts[p][1][i]
                here = []  # (this folder's blocks: one per part that listed files here)
                while k < len(order) and parts[order[k] >> 32][1][order[k] & 0xFFFFFFFF] == rel:
                    here.append(order[k])
                    k += 1
                blocks = []
                for n in here:
                    p, i = n >> 32, n & 0xFFFFFFFF
                    spans, f = parts[p][2], spools[p]
                    f.seek(spans[2 * i])
                    blocks.append(pickle.loads(f.read(spans[2 * i + 1])))
                # (a walk and its rechecks list a path once: one name twice would be a
                # mistake, and the later block, a recheck's, is kept)
                rows = blocks[0] if len(blocks) == 1 else _last_of_each(blocks)
                while down and not _below(rel, down[-1][0]):
                    yield from _rest(down.pop())
                if down:  # what the folder above has before this folder's name
                    top = down[-1]
                    name = rel[len(top[0]) + 1 if top[0] else 0 :].partition("/")[0]
                    yield from _rest(top, until=name)
                down.append([rel, f"{rel}/" if rel else "", rows, 0])
            while down:
                yield from _rest(down.pop())

    def given(self) -> list[str]:
        """The folders `proven` holds that another part lists too (a recheck): `files` gives
        their proof's rows, merged with that part's (the later kept); their lines are not to
        be taken (`ProvenLines.ranges`, `ProvenLines.counts`)."""
        if self.proven is None:
            return []
        listed = {f for _, folders, _ in self.parts for f in folders}
        return [f for f in self.proven.folders if f in listed] if listed else []

    def discard(self) -> None:
        """Delete the spools (and their folder, with whatever a part cut short left there)."""
        for path in self.spools:
            if path in self.borrowed:
                continue
            with contextlib.suppress(OSError):
                os.unlink(path)
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.parts = []
        self.folder = None


def _below(rel: str, folder: str) -> bool:
    """Whether ``rel`` is below ``folder`` (``""``: the root)."""
    return not folder or rel.startswith(folder + "/")


def _rest(level: list, until: str | None = None) -> Iterator[tuple[str, FileInfo]]:
    """The rows of a folder on the way down (`Listing.files`) not given yet, up to the name
    ``until`` (a subfolder's: no file has it), or all."""
    _folder, prefix, rows, n = level
    while n < len(rows) and (until is None or rows[n][0] < until):
        name, size, mtime_ns, stamp = rows[n]
        yield prefix + name, FileInfo(False, True, size, mtime_ns, stamp)
        n += 1
    level[3] = n


def _last_of_each(blocks: list[list[Row]]) -> list[Row]:
    """The rows of several blocks of one folder, merged by name, the later block's row kept
    where a name is in two."""
    out: list[Row] = []
    for row in heapq.merge(*blocks, key=_name):  # (stable: the later block's comes last)
        if out and out[-1][0] == row[0]:
            out[-1] = row
        else:
            out.append(row)
    return out


def spool_folder() -> str:
    """A new temporary folder for a walk's spools (each part's `ListingWriter` writes there;
    `Listing.discard` deletes it, or the next one made once this process is gone:
    `temp_folders`)."""
    return process_temp_folder("softcopy-listing-")


def _name(row: Row) -> str:
    return row[0]


class ListingWriter:
    """Rows of a walk (or a recheck), a folder at a time, into one spool file in ``folder``
    (`spool_folder`)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        fd, self.path = tempfile.mkstemp(prefix="part-", dir=folder)
        self._file = os.fdopen(fd, "wb")
        self._folders: list[str] = []
        self._spans = array("q")  # (offset, length) of each block
        self._current: str | None = None
        self._rows: list[Row] = []

    def add(self, folder: str, name: str, info: FileInfo) -> None:
        """The file ``name`` of ``folder`` is identical, ``info`` as listed."""
        if folder != self._current:
            self._flush()
            self._current = folder
        self._rows.append((name, info.size, info.mtime_ns, info.stamp))

    def _flush(self) -> None:
        if not self._rows:
            return
        self._rows.sort(key=_name)
        data = pickle.dumps(self._rows, pickle.HIGHEST_PROTOCOL)
        self._spans.extend((self._file.tell(), len(data)))
        self._file.write(data)
        self._folders.append(self._current)
        self._rows = []

    def close(self) -> Listing:
        """The listing of what was added (its spool closed; the caller discards it)."""
        try:
            self._flush()
        finally:
            self._file.close()
        return Listing([(self.path, self._folders, self._spans)], self.folder)

    def abandon(self) -> None:
        """Close and delete the spool (a walk that failed)."""
        self._file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
