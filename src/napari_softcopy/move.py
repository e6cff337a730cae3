"""Free the acquisition disk: delete the source of a verified copy, file by file, only what
was proven identical to its copy (``copy --move``; docs/move.md says exactly when).

`free_source` runs after the finish, once the destination holds the marker and the manifest
(`manifest.MANIFEST`), never during the acquisition: writers read chunks back (a partial
chunk is read, merged and rewritten; a shard grows), so a file that looks finished may be
needed again until the acquisition's end.

1. Every source file is hashed, and its copy read back from the destination with the page
   cache dropped (`manifest.read_back`); both must match the manifest. A copy that does not
   (damaged, missing, unreadable), or a source file of its copy's size and mtime but other
   content (the copy was damaged before the manifest vouched for it), stops everything:
   `MoveRefused`, nothing deleted. A source file changed after the copy, or not listed
   (written after the finish), is kept and reported.
2. The journal ``.softcopy/move.json`` at the destination says "freeing": a rerun after a
   crash finishes the deletion instead of copying again (`move_in_progress`).
3. Each checked file is deleted unless its inode, size, mtime or ctime changed since it was
   hashed (kept, reported); then the folders left empty, the source's marker last; all of it
   through directory descriptors opened without following links (``unlink(name, dir_fd=)``).
4. The journal says "freed", with the counts.

A rerun after ``kill -9`` repeats step 1 for what is left (nothing unverified is deleted) and
ends where an uninterrupted run would. The source's root folder stays, empty.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import blake3

from .destinations import Destination, copy_difference
from .manifest import Manifest, hash_workers, read_back, read_manifest
from .move_journal import JOURNAL, move_in_progress, write_journal
from .platform import open_folder_below

__all__ = [
    "JOURNAL",
    "FreeReport",
    "MoveRefused",
    "free_source",
    "move_in_progress",
]

log = logging.getLogger(__name__)

_BLOCK = 1 << 20
MAX_LISTED = 1000  # kept files listed; the count stays exact beyond it
# The source cannot be written: stop at the first such error, say so once.
_SOURCE_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


class MoveRefused(Exception):
    """The source was not freed. ``reason``: ``"destination"`` (its copy failed the content
    check: nothing was deleted), ``"source"`` (the source cannot be deleted from, such as a
    read-only mount) or ``"unverified"`` (the copy is not verified complete). The message is
    one line naming the path and the fix."""

    def __init__(self, reason: str, message: str, freed: FreeReport | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.freed = freed


@dataclass
class FreeReport:
    """What `free_source` did. ``kept``: ``(path, why)`` of source files left in place."""

    source: str
    files_freed: int = 0
    bytes_freed: int = 0
    folders_removed: int = 0
    files_checked: int = 0
    kept: list[tuple[str, str]] = field(default_factory=list)
    n_kept: int = 0
    seconds: float = 0.0
    check_s: float = 0.0  # (of `seconds`: reading both sides, before the first deletion)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def keep(self, rel: str, why: str) -> None:
        """Note a source file left in place, and why (called from the checking threads)."""
        with self._lock:
            self.n_kept += 1
            if len(self.kept) < MAX_LISTED:
                self.kept.append((rel, why))
        log.warning("%s: kept %s: %s", self.source, rel, why)

    @property
    def complete(self) -> bool:
        """True when the whole source was freed (no file kept)."""
        return self.n_kept == 0

    def summary(self) -> str:
        """``"freed 281.0 MiB from /data/acq.zarr (4,098 files, 33 folders)"`` (and what was
        kept)."""
        line = (
            f"freed {self.bytes_freed / 2**20:.1f} MiB from {self.source} "
            f"({self.files_freed:,} files, {self.folders_removed:,} folders)"
        )
        if self.n_kept:
            first = self.kept[0] if self.kept else ("", "")
            line += f"; kept {self.n_kept:,} files (first: {first[0]}: {first[1]})"
        return line

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "files_freed": self.files_freed,
            "bytes_freed": self.bytes_freed,
            "folders_removed": self.folders_removed,
            "files_checked": self.files_checked,
            "files_kept": self.n_kept,
            "kept": [list(k) for k in self.kept[:20]],
            "seconds": round(self.seconds, 3),
            "check_s": round(self.check_s, 3),
        }


@dataclass(slots=True)
class _Candidate:
    """A source file the manifest lists, and what it was when it was hashed."""

    rel: str
    folder: str
    name: str
    identity: tuple[int, int, int, int, int] | None = None  # dev, ino, size, mtime, ctime


def _identity(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _open_folder(root_fd: int, folder: str) -> int:
    """The folder ``folder`` below the source root, reached without following a link."""
    return open_folder_below(root_fd, folder)


def _walk(root_fd: int) -> Iterator[tuple[str, list[tuple[str, os.stat_result]], list[str]]]:
    """``(folder, files, subfolders)`` of the source tree, top down; links are entries, not
    followed (a link is listed among ``files`` with its own lstat)."""
    folders = [""]
    while folders:
        folder = folders.pop()
        try:
            fd = _open_folder(root_fd, folder)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                continue  # (gone, or replaced by a link: not ours to walk into)
            raise
        files, subs = [], []
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        subs.append(f"{folder}/{entry.name}" if folder else entry.name)
                    else:
                        files.append((entry.name, st))
        finally:
            os.close(fd)
        yield folder, files, subs
        folders.extend(subs)


def _hash_source(root_fd: int, cand: _Candidate) -> tuple[os.stat_result, str]:
    """The source file's stat (before the read, must equal after it) and BLAKE3 digest."""
    fd_dir = _open_folder(root_fd, cand.folder)
    try:
        fd = os.open(cand.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd_dir)
    finally:
        os.close(fd_dir)
    try:
        before = os.fstat(fd)
        h = blake3.blake3()
        while block := os.read(fd, _BLOCK):
            h.update(block)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if _identity(before) != _identity(after):
        raise _Changed("changed while it was checked")
    return before, h.hexdigest()


class _Changed(Exception):
    pass


def free_source(
    source: str | os.PathLike,
    dest: Destination,
    manifest: Manifest | None = None,
    *,
    stop: threading.Event | None = None,
    deleted_log: str | os.PathLike | None = None,
    on_progress: Callable[[FreeReport], None] | None = None,
) -> FreeReport:
    """Delete the source of the verified copy at ``dest``: only files whose content equals
    their copy's, as the manifest records it and as read back from ``dest`` now.

    Parameters
    ----------
    source : path
        The acquisition's root folder (the folder itself stays, emptied).
    dest : Destination
        The verified copy (its marker and `manifest.MANIFEST` present).
    manifest : Manifest, optional
        The copy's manifest (None: read from ``dest``).
    stop : threading.Event, optional
        Set: stop between two files (resumable: the journal says "freeing").
    deleted_log : path, optional
        A file that gets one line per deleted source file (appended, each line flushed).
    on_progress : callable, optional
        Called with the report once every file is checked, before the first deletion.

    Raises
    ------
    MoveRefused
        Nothing (``"destination"``, ``"unverified"``) or not everything (``"source"``) was
        deleted; the message says why and what to do.
    """
    t0 = time.monotonic()
    src = os.path.abspath(source)
    report = FreeReport(src)
    if manifest is None:
        from .manifest import ManifestError

        try:
            manifest = read_manifest(dest)
        except ManifestError as exc:
            raise MoveRefused("unverified", f"{exc}; nothing deleted from {src}") from None
    marker = manifest.marker
    dest_marker = dest.stat(marker) if marker else None
    if marker and (dest_marker is None or not dest_marker.is_file):
        raise MoveRefused(
            "unverified",
            f"{dest.path} has no marker {marker!r}: the copy is not verified complete, so "
            f"nothing was deleted from {src}; run the copy to its end first",
        )
    try:
        root_fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise MoveRefused("source", f"source {src} does not exist; nothing to free") from None
    try:
        if os.fstatvfs(root_fd).f_flag & os.ST_RDONLY:
            raise MoveRefused(
                "source",
                f"source {src} is on a read-only filesystem: the copy is verified, nothing was "
                "deleted; remount it read-write and run the same command again to free it",
            )
        candidates, marker_cand, folders = _survey(root_fd, manifest, report)
        _check_content(root_fd, dest, manifest, candidates, marker_cand, report, stop)
        report.check_s = time.monotonic() - t0
        if stop is not None and stop.is_set():
            return report
        write_journal(dest, state="freeing", source=src, started=time.time())
        if on_progress is not None:
            on_progress(report)  # (checked; the deletion begins)
        log_file = open(deleted_log, "a", buffering=1) if deleted_log else None  # noqa: SIM115
        try:
            _delete(root_fd, candidates, marker_cand, folders, report, stop, log_file)
        finally:
            if log_file is not None:
                log_file.close()
        if stop is not None and stop.is_set():
            return report
    finally:
        os.close(root_fd)
    report.seconds = time.monotonic() - t0
    write_journal(dest, state="freed", finished=time.time(), **report.to_dict())
    log.info("%s", report.summary())
    return report


def _survey(
    root_fd: int, manifest: Manifest, report: FreeReport
) -> tuple[list[_Candidate], _Candidate | None, list[str]]:
    """The source files the manifest lists, the source's marker (None: there is none) and
    the folders, deepest first; every other entry is kept and reported."""
    candidates, folders, marker_cand = [], [], None
    for folder, files, subs in _walk(root_fd):
        folders.extend(subs)
        for name, st in files:
            rel = f"{folder}/{name}" if folder else name
            if not stat.S_ISREG(st.st_mode):
                report.keep(rel, "not a regular file (links are never followed or deleted)")
            elif not folder and name == manifest.marker:
                marker_cand = _Candidate(rel, folder, name)
            elif rel not in manifest.entries:
                report.keep(rel, "not in the verified copy (written after its finish?)")
            else:
                candidates.append(_Candidate(rel, folder, name))
    folders.sort(key=lambda f: f.count("/"), reverse=True)
    return candidates, marker_cand, folders


def _check_content(
    root_fd: int,
    dest: Destination,
    manifest: Manifest,
    candidates: list[_Candidate],
    marker_cand: _Candidate | None,
    report: FreeReport,
    stop: threading.Event | None,
) -> None:
    """Hash every candidate at the source and read its copy back: set each one's identity,
    or keep it (the source differs); raise `MoveRefused` when a copy differs. The marker is
    compared with the destination's marker (which the manifest does not list)."""
    marker_digest: str | None = None
    if marker_cand is not None and manifest.marker:
        marker_digest = read_back(dest, manifest.marker)[1]
    bad_copies: list[str] = []

    def one(cand: _Candidate) -> None:
        if stop is not None and stop.is_set():
            return
        is_marker = cand is marker_cand
        expected = marker_digest if is_marker else manifest.entries[cand.rel].digest
        if not is_marker:
            try:
                _size, copy_digest = read_back(dest, cand.rel)
            except OSError as exc:
                bad_copies.append(f"{cand.rel} (cannot be read back: {exc.strerror or exc})")
                return
            if copy_digest != expected:
                bad_copies.append(f"{cand.rel} (its content differs from the manifest)")
                return
        try:
            st, digest = _hash_source(root_fd, cand)
        except FileNotFoundError:
            return  # (gone meanwhile: nothing to free)
        except (OSError, _Changed) as exc:
            report.keep(cand.rel, f"cannot be checked: {exc}")
            return
        if digest != expected:
            copy = None if is_marker else dest.stat(cand.rel)
            if copy is not None and copy_difference(st, copy, dest.capabilities) is None:
                # Same size and mtime as its copy (and no other version's stamp), other
                # content: the copy is wrong, not the source changed. The verification by
                # size and mtime passed it, so the manifest vouches for it: nothing goes.
                bad_copies.append(
                    f"{cand.rel} (its content differs from the source's, with the same size "
                    "and mtime: the copy was damaged after it was written)"
                )
                return
            report.keep(cand.rel, "differs from its verified copy (changed after the copy)")
            return
        cand.identity = _identity(st)

    with ThreadPoolExecutor(hash_workers(dest), thread_name_prefix="softcopy-free") as pool:
        for _ in pool.map(one, candidates if marker_cand is None else [*candidates, marker_cand]):
            pass
    report.files_checked = sum(c.identity is not None for c in candidates)
    if bad_copies:
        raise MoveRefused(
            "destination",
            f"the copy at {dest.path} fails the content check for {len(bad_copies)} file"
            f"{'s' * (len(bad_copies) != 1)} (first: {sorted(bad_copies)[0]}), so nothing was "
            f"deleted from {report.source}; `napari-softcopy verify --checksum "
            f"{report.source} {dest.path}` lists them: delete them at the destination and run "
            "the copy again",
        )


#: Threads deleting, a folder each: on this machine one thread took 3.6-6.3 s to unlink the
#: light-sheet archive's 4,098 files (each unlink waits on the filesystem's journal), four
#: took 0.2-0.3 s.
DELETE_THREADS = 4


class _Deleter:
    """Unlinks the checked files of one folder per thread; counts and lists under a lock."""

    def __init__(self, root_fd: int, report: FreeReport, log_file: TextIO | None) -> None:
        self.root_fd = root_fd
        self.report = report
        self.log_file = log_file
        self.lock = threading.Lock()

    def folder(self, folder: str, cands: list[_Candidate], stopped: Callable[[], bool]) -> None:
        fd = _open_folder(self.root_fd, folder)
        try:
            for cand in cands:
                if stopped():
                    return
                self.unlink(fd, cand)
        finally:
            os.close(fd)

    def unlink(self, fd: int, cand: _Candidate) -> None:
        report = self.report
        try:
            st = os.stat(cand.name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if _identity(st) != cand.identity:
            with self.lock:
                report.keep(cand.rel, "changed after it was verified (size, mtime or ctime)")
            return
        try:
            os.unlink(cand.name, dir_fd=fd)
        except FileNotFoundError:
            return
        except OSError as exc:
            with self.lock:
                if exc.errno in _SOURCE_READ_ONLY:
                    raise MoveRefused(
                        "source",
                        f"cannot delete {Path(report.source) / cand.rel} ({exc.strerror}): "
                        f"{report.summary()} before it; the copy is verified, fix the source's "
                        "permissions or mount and run the same command again",
                        report,
                    ) from None
                report.keep(cand.rel, f"cannot be deleted: {exc.strerror}")
            return
        with self.lock:
            report.files_freed += 1
            report.bytes_freed += st.st_size
            log.info("deleted %s", cand.rel)
            if self.log_file is not None:
                self.log_file.write(f"{cand.rel}\n")


def _delete(
    root_fd: int,
    candidates: list[_Candidate],
    marker: _Candidate | None,
    folders: list[str],
    report: FreeReport,
    stop: threading.Event | None,
    log_file: TextIO | None,
) -> None:
    """Unlink each verified, unchanged file, then the folders left empty, the marker last."""
    by_folder: dict[str, list[_Candidate]] = {}
    for cand in candidates:
        if cand.identity is not None:
            by_folder.setdefault(cand.folder, []).append(cand)
    deleter = _Deleter(root_fd, report, log_file)
    halt = threading.Event()  # one refusal (a read-only source) ends the other threads too

    def stopped() -> bool:
        return halt.is_set() or (stop is not None and stop.is_set())

    def one(item: tuple[str, list[_Candidate]]) -> None:
        try:
            deleter.folder(*item, stopped)
        except BaseException:
            halt.set()
            raise

    with ThreadPoolExecutor(DELETE_THREADS, thread_name_prefix="softcopy-delete") as pool:
        for _ in pool.map(one, by_folder.items()):
            pass
    if stopped():
        return
    for folder in folders:
        parent, _, name = folder.rpartition("/")
        try:
            fd = _open_folder(root_fd, parent)
        except OSError:
            continue
        try:
            os.rmdir(name, dir_fd=fd)
            report.folders_removed += 1
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT, errno.ENOTDIR):
                raise
        finally:
            os.close(fd)
    if marker is not None and marker.identity is not None:
        deleter.unlink(root_fd, marker)
