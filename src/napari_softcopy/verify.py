"""Verification: does the destination hold every source file, identical?

Every source file (writers' temporary files excluded) must have a copy at the destination by
the one rule (`destinations.copy_difference`: same size and mtime, and with ``stamps`` no stamp
of another version of the source file); the destination is read through its `Destination`
only. Zarr metadata files are compared by content; with ``checksum=True`` every
file's content is compared by an xxh3-128 hash. Files at the destination that the source does
not have are reported too.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import xxhash

from .checks import InputError, check_apart
from .destinations import (
    Destination,
    FileInfo,
    copy_difference,
    is_s3_url,
    open_destination,
)
from .layout import METADATA_NAMES, is_metadata_name, is_own_temp_name, is_temp_name
from .listing import ListingWriter, spool_folder
from .march import Folder, MarchHandler, march
from .verify_helpers import WalkHelper, start_helpers
from .verify_report import _INTERRUPTED, MAX_LISTED, VerifyReport

__all__ = ["MAX_LISTED", "VerifyReport", "WalkHelper", "recheck", "start_helpers", "verify_tree"]

log = logging.getLogger(__name__)

_APART_FIX = "compare the archive with its copy in a folder of its own"


def file_digest(path: str | os.PathLike, *, dir_fd: int | None = None) -> bytes:
    """xxh3-128 digest of a file's content (symlinks are not followed)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    with os.fdopen(fd, "rb", buffering=0) as f:
        return _digest(f)


def _digest(f: BinaryIO) -> bytes:
    h = xxhash.xxh3_128()
    while block := f.read(4 * 1024 * 1024):
        h.update(block)
    return h.digest()


def _same_content(src_path: str, dest: Destination, rel: str, checksum: bool) -> bool:
    """Whether the source file ``src_path`` and the destination's ``rel`` hold the same bytes
    (by their xxh3-128 digests with ``checksum``; small metadata files are compared whole)."""
    with open(src_path, "rb") as fa, dest.read(rel) as fb:
        if checksum:
            return _digest(fa) == _digest(fb)
        return fa.read() == fb.read()


def verify_tree(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    *,
    checksum: bool = False,
    marker: str | None = None,
    stop: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
    stamps: bool = False,
    processes: int = 1,
    helpers: list[WalkHelper] | None = None,
    listing: bool = False,
) -> VerifyReport:
    """Compare ``destination`` with ``source``.

    Parameters
    ----------
    source, destination : path
        Tree roots.
    checksum : bool
        Compare the content of every file (slow: reads both trees).
    marker : str, optional
        Name of the finish marker in the root: it is excluded from the comparison, because the
        engine writes it only after a successful verification.
    stop : threading.Event, optional
        Abandon early when set (the report is then incomplete and not ok).
    progress : callable, optional
        ``progress(files, bytes)`` called every 1,000 files (of this process's part).
    stamps : bool
        Where size and mtime match, also compare the source stamp the engine recorded on the
        copy (`SOURCE_STAMP`: the source's inode and ctime when it was copied): a source
        rewritten after its copy with its size and mtime put back is then mismatched. Off for
        a standalone check, where a ``chmod`` of the source since the copy would look alike.
    processes : int
        Walk in this many processes, each comparing the files whose name hashes to its part.
        A walk is system calls and interpreter time held to one core by the interpreter
        lock: threads only slow it down, processes do not (see `start_helpers`).
    helpers : list of WalkHelper, optional
        Processes from `start_helpers`, started earlier; they replace ``processes``.
    listing : bool
        Keep the files found identical, as listed at the destination, in the report's
        `VerifyReport.listing` (spool files: the caller discards it), for the manifest.

    Raises
    ------
    InputError
        ``source`` and ``destination`` are one folder (under any two paths: a symlink, a
        bind mount), or one is inside the other: a comparison would prove nothing.
    """
    # A tree compared with itself is "identical": the all-clear a user reads before deleting
    # the original. Refused for every caller, as `check_pair` refuses such a copy.
    try:
        check_apart(source, destination, fix=_APART_FIX)
    except InputError:
        for helper in helpers or ():
            helper.close()
        raise
    if helpers is None:
        helpers = start_helpers(processes - 1)
    options = {
        "source": os.fspath(Path(source)),
        # (pathlib would make s3://b/p s3:/b/p)
        "destination": str(destination) if is_s3_url(destination) else os.fspath(Path(destination)),
        "checksum": checksum,
        "marker": marker,
        "stamps": stamps,
        "parts": 1 + len(helpers),
        # (every part's spool in one folder: deleted whole with the listing, also what a
        # part that was stopped or failed left there)
        "listing": spool_folder() if listing else None,
    }
    try:
        for part, helper in enumerate(helpers, start=1):
            helper.send(options | {"part": part})
        report = _walk_part(options | {"part": 0}, stop, progress)
        for part, helper in enumerate(helpers, start=1):
            part_report = helper.result(stop)
            if stop is not None and stop.is_set():
                if ("unreadable", _INTERRUPTED) not in report._folder_problems:
                    report._add("unreadable", _INTERRUPTED)  # (its own walk was complete)
                break
            if part_report is None:  # (logged) walked here instead
                part_report = _walk_part(options | {"part": part}, stop)
            report._merge(part_report)
    except BaseException:
        if options["listing"] is not None:
            shutil.rmtree(options["listing"], ignore_errors=True)
        raise
    finally:
        for helper in helpers:
            helper.close()
    return report


def _walk_part(
    options: dict,
    stop: threading.Event | None,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Walk the part of `verify_tree` that ``options`` describe, here or in a helper."""
    report = VerifyReport(options["source"], options["destination"], options["checksum"])
    writer = ListingWriter(options["listing"]) if options.get("listing") else None
    try:
        _Comparison(
            report,
            options["checksum"],
            options["marker"],
            progress,
            options["stamps"],
            part=options["part"],
            parts=options["parts"],
            listing=writer,
        ).run(stop)
    except BaseException:
        if writer is not None:
            writer.abandon()
        raise
    if writer is not None:
        report.listing = writer.close()
    return report


def recheck(
    report: VerifyReport,
    *,
    marker: str | None = None,
    stop: threading.Event | None = None,
    stamps: bool = False,
) -> VerifyReport | None:
    """Compare again only the files ``report`` found missing, mismatched or extra.

    Every other file was found identical by the walk behind ``report``, and only the copy
    writes to the destination: once the listed files are copied again, comparing them again
    finishes the verification without a second walk of the whole tree. The new report counts
    the whole tree, with these files as they are now.

    Returns None where only a walk can tell: ``report`` left problems unlisted, could not
    read something, or lists a folder. Where ``report`` has a `VerifyReport.listing`, the new
    one has it too, with the files found identical now.
    """
    counted = report._counted
    if not report.fully_listed or report.n_unreadable:
        return None
    if len(counted) != len(report.missing) + len(report.mismatched):
        return None  # a folder is listed (the walk counts no size for it)
    new = VerifyReport(
        report.source,
        report.destination,
        report.checksum,
        files_checked=report.files_checked - len(counted),
        bytes_checked=report.bytes_checked - sum(counted.values()),
        metadata_files=report.metadata_files - sum(_is_metadata(rel) for rel in counted),
    )
    writer = None
    if report.listing is not None and report.listing.folder is not None:
        writer = ListingWriter(report.listing.folder)
    comparison = _Comparison(new, report.checksum, marker, None, stamps, listing=writer)
    comparison.dest = _open_destination(report.destination)
    try:
        for rel in report.problem_paths():
            if stop is not None and stop.is_set():
                new._add("unreadable", _INTERRUPTED)
                break
            src_path = f"{report.source}/{rel}"
            try:
                st = os.lstat(src_path)
            except FileNotFoundError:
                st = None
            except OSError as exc:
                new._add("unreadable", (rel, exc.strerror or str(exc)))
                continue
            dest = comparison.dest
            info = None if dest is None else dest.stat(rel, stamp=stamps)
            if (st is not None and stat.S_ISDIR(st.st_mode)) or (info is not None and info.is_dir):
                if writer is not None:
                    writer.abandon()
                    writer = None
                return None
            if st is None:
                if info is not None:
                    new._add("extra", rel)
            elif not stat.S_ISREG(st.st_mode):
                new._add("unreadable", (rel, "not a regular file (symlinks are not copied)"))
            else:
                comparison._compare(rel, st, info, src_path)
    except BaseException:
        if writer is not None:
            writer.abandon()
        raise
    finally:
        if comparison.dest is not None:
            comparison.dest.close()
    if writer is not None:
        new.listing = report.listing.merged(writer.close())
    return new


def _open_destination(path: str) -> Destination | None:
    """The destination tree to compare, never created (None: it does not exist)."""
    try:
        return open_destination(path, create=False)
    except FileNotFoundError:
        return None


def _split(rel: str) -> tuple[str, str]:
    """``rel``'s folder and name."""
    folder, _, name = rel.rpartition("/")
    return folder, name


def _is_metadata(rel: str) -> bool:
    return is_metadata_name(rel.rpartition("/")[2])


@dataclass
class _Comparison(MarchHandler):
    """One `verify_tree` walk (`march.march`): the options, and the report it fills.

    Split in ``parts``, each walk enters every source folder but compares only the entries
    whose name hashes to its ``part`` (`_mine`, the walk's ``keep``). What concerns a folder
    as a whole is reported by part 0 and kept aside by every part (`VerifyReport._merge` adds
    what part 0 did not see: a helper that could not list a folder never leaves its files
    uncounted unnoticed).
    """

    report: VerifyReport
    checksum: bool
    marker: str | None
    progress: Callable[[int, int], None] | None
    stamps: bool
    part: int = 0
    parts: int = 1
    listing: ListingWriter | None = field(default=None, repr=False)
    dest: Destination | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._src_prefix = f"{self.report.source}/"

    def _mine(self, name: str) -> bool:
        """Whether this part compares the file ``name`` (crc32: the same in every process)."""
        return (
            self.parts == 1
            or zlib.crc32(name.encode("utf-8", "surrogateescape")) % self.parts == self.part
        )

    def _add_folder_problem(self, kind: str, item) -> None:
        self.report._folder_problems.append((kind, item))
        if self.part == 0:
            self.report._add(kind, item)

    def run(self, stop: threading.Event | None) -> None:
        report = self.report
        self.dest = _open_destination(report.destination)
        try:
            done = march(
                report.source,
                self.dest,
                self,
                keep=None if self.parts == 1 else self._mine,
                stamps=self.stamps,
                cancelled=None if stop is None else stop.is_set,
            )
        finally:
            if self.dest is not None:
                self.dest.close()
                self.dest = None
        if not done:
            self._add_folder_problem("unreadable", _INTERRUPTED)

    # -- the walk's callbacks ----------------------------------------------------------
    def enter(self, folder: Folder) -> None:
        if self.part == 0:  # (every part enters every source folder)
            self.report.folders_walked += 1

    def folder_error(self, rel: str, exc: OSError) -> None:
        self._add_folder_problem("unreadable", (rel or ".", exc.strerror or str(exc)))

    def src_only(self, folder: Folder, entry: os.DirEntry) -> bool:
        return self.match(folder, entry, None)

    def match(self, folder: Folder, entry: os.DirEntry, info: FileInfo | None) -> bool:
        name = entry.name
        rel = folder.prefix + name
        if entry.is_dir(follow_symlinks=False):
            if info is not None and not info.is_dir:
                # a link (or file) where the source has a folder: never looked through
                self._add_folder_problem("mismatched", (rel, "not a folder at the destination"))
                return False
            return True
        skipped = is_temp_name(name) or (self.marker and rel == self.marker)
        if not skipped:
            # Stat-ed by name in its folder, not through its entry: a part's folder keeps its
            # entries until its last file is compared, each with its stat result.
            try:
                st = os.stat(name, dir_fd=folder.fd, follow_symlinks=False)  # (`Folder.lstat`)
            except FileNotFoundError:
                skipped = True  # deleted by the writer while we looked
            else:
                if stat.S_ISREG(st.st_mode):
                    self._compare(rel, st, info, self._src_prefix + rel)
                    return False
                self.report._add(
                    "unreadable", (rel, "not a regular file (symlinks are not copied)")
                )
        if info is not None:  # (what the source has not as a file is no copy of it)
            self.dst_only(folder, name, info)
        return False

    def dst_only(self, folder: Folder, name: str, info: FileInfo) -> bool:
        rel = folder.prefix + name
        if is_own_temp_name(name) or (self.marker and rel == self.marker):
            return False
        if info.is_dir:
            return True  # (each file below it is extra)
        self.report._add("extra", rel)
        return False

    def _compare(self, rel: str, st: os.stat_result, copy: FileInfo | None, src_path: str) -> None:
        """Count the source file ``rel`` (``st``) and compare its copy (``copy``, None when
        there is none) by the one rule, then by content where asked."""
        # (once a file of every archive, in every walk: kept to the few steps it needs)
        report = self.report
        report.files_checked += 1
        report.bytes_checked += st.st_size
        metadata = rel.rpartition("/")[2] in METADATA_NAMES
        report.metadata_files += metadata
        if self.progress is not None and report.files_checked % 1000 == 0:
            self.progress(report.files_checked, report.bytes_checked)
        if copy is None:
            kind, item = "missing", rel
        else:  # (listed at the destination: it exists)
            # (the stamps, where compared, were read with the listing: `FileInfo.stamp`)
            why = copy_difference(st, copy, self.dest.capabilities)
            if why is not None:
                kind, item = "mismatched", (rel, why)
            elif not (self.checksum or metadata):
                if self.listing is not None:
                    self.listing.add(*_split(rel), copy)
                return  # a copy
            else:
                try:
                    same = _same_content(src_path, self.dest, rel, self.checksum)
                except OSError as exc:
                    report._add("unreadable", (rel, exc.strerror or str(exc)))
                    return
                if same:
                    if self.listing is not None:
                        self.listing.add(*_split(rel), copy)
                    return
                kind, item = "mismatched", (rel, "content differs")
        report._add(kind, item)
        if len(report._counted) < 2 * MAX_LISTED:
            report._counted[rel] = st.st_size  # (both kinds listed in full fit)
