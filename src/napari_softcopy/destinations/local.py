"""The local filesystem (or any mounted one) as a `Destination`, reached through one open
directory descriptor.

A network mount that drops leaves an empty local mount point at the same path; filling the
local disk there is the classic disaster. Every operation here is relative to the directory
fd opened at start, so it keeps acting on the filesystem that was mounted then (or fails), and
`LocalDestination.check` notices when the path no longer leads to it.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from ..layout import OWN_TEMP_SUFFIX
from ..page_cache import BatchedWriteback
from ..platform import (
    default_workers,
    degrade,
    drop_cache,
    get_xattr,
    syncfs,
)
from .base import (
    SOURCE_STAMP,
    Destination,
    DestinationChanged,
    FileInfo,
    Lstat,
    SourceRecord,
    TempFile,
)
from .beneath import open_file_beneath
from .local_folders import Folders
from .names import NameGuard
from .probe import probe_destination
from .probe_report import DestinationProbe
from .records import SourceRecords

#: Copies in flight on a network share (`Capabilities.latency_bound`): each file costs a few
#: round trips (create, set times, rename, close) that wait on the server with the interpreter
#: lock released, so threads overlap them. Chosen by measurement on sshfs (benchmarks/notes.md
#: item 47): 8 were slower than 4 in every comparison in turns at the copy's idle priority on
#: a loaded machine (more threads hand the interpreter lock around more often, and a holder
#: preempted by busier processes stalls them all); a helper process with threads was no faster.
LATENCY_BOUND_COPIES = 4


@dataclass(slots=True)
class LocalTempFile(TempFile):
    """A temporary file of a `LocalDestination`: its descriptor, both names, the size it was
    announced with (`expect`) and whether it was flushed (``fsync``) before its rename."""

    rel: str
    temp_rel: str
    fd: int
    published: bool = False
    size: int = 0
    synced: bool = False

    def fileno(self) -> int:
        return self.fd

    def expect(self, size: int) -> None:
        self.size = size  # (what `LocalDestination.release` counts for its writeback)


class LocalDestination(Destination):
    """Operations below a destination root, all relative to one directory fd.

    Parameters
    ----------
    root : path
        Destination root; created (one level only) when missing and ``create``.
    fd : int, optional
        The root, already open (another process's, passed on): used instead of opening
        ``root``, which then only names it in messages. Closed by `close`.
    create : bool
        Create a missing root (a copy does; a verification does not: FileNotFoundError).
    xattrs : bool
        Whether to record and read source stamps (False: the caller knows there are none).
    probing : bool, optional
        Probe the destination (`probe.probe_destination`) and record what was found at it,
        so that a verification judges by the same capabilities. Default: when ``create`` and
        no ``fd`` is given (a copy starting). Otherwise the recorded probe is used, and
        where there is none, nanosecond mtimes and xattrs (what the copy found where it
        recorded nothing).
    probed : DestinationProbe, optional
        What a probe of this destination found already (the copy helper gets the engine's):
        no probing, no record read.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        fd: int | None = None,
        create: bool = True,
        xattrs: bool = True,
        probing: bool | None = None,
        probed: DestinationProbe | None = None,
    ) -> None:
        self.path = Path(root)
        if probing is None:  # (a copy starting: not a verification, not the copy helper)
            probing = create and fd is None
        if fd is None:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(self.path)
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.fd = fd
        st = os.fstat(self.fd)
        self.identity = (st.st_dev, st.st_ino)
        self._folders = Folders(self.fd, self.path)
        if probed is None:
            probed = probe_destination(self.fd, self.path, probing=probing)
        self.probed = probed
        self.capabilities = self.probed.capabilities()
        self._namemax = self.probed.max_name_bytes
        if not xattrs:
            self.capabilities = replace(self.capabilities, xattrs=False)
        self._records = SourceRecords(
            self.fd, writable=create or probing, stable_mtime=self.capabilities.stable_mtime
        )
        self._names = NameGuard(self.capabilities, self.path, self._folders.names_in)
        # Temporary names: a random part drawn once (unique across runs and processes) and a
        # counter (unique within this one), instead of a getrandom call per file.
        self._temp_prefix = os.urandom(4).hex()
        self._temp_counter = itertools.count()
        # The copies' writeback, started in batches (`_uncache`); a verification writes none.
        self._writeback = BatchedWriteback(self.fd) if create else None

    @property
    def summary(self) -> str:
        """One line: ``fuse.sshfs, mtime to 1 s, no xattrs (ENOTSUP), case-sensitive``."""
        return self.probed.summary()

    @property
    def stamps(self) -> bool:
        """Whether source stamps are recorded and read (`Capabilities.xattrs`)."""
        return self.capabilities.xattrs

    def fileno(self) -> int:
        """The root's descriptor, to pass to another process (`copy_helper`) only."""
        return self.fd

    def helper_setup(self) -> dict:
        """This destination as a helper process is handed it (`helper_process`: JSON), to
        be rebuilt there by `from_helper_setup`: the root's descriptor (pass `fileno` on in
        ``pass_fds``: the child reaches exactly this tree), its path (for messages), whether
        stamps are recorded and read, and what the probe found (not probed again)."""
        return {
            "fd": self.fd,
            "path": str(self.path),
            "stamps": self.stamps,
            "probed": self.probed.to_json(),
        }

    @classmethod
    def from_helper_setup(cls, setup: dict, *, writes: bool) -> LocalDestination:
        """In a helper process: the destination its parent's `helper_setup` describes, on
        the inherited root descriptor. ``writes``: it publishes files (the copy helper), and
        may compact the destination's record files as it reads them; a helper that only
        reads (the scan's) leaves every file as it is."""
        return cls(
            setup["path"],
            fd=setup["fd"],
            create=writes,  # (the root is open already: this says whether records are written)
            xattrs=setup["stamps"],
            probed=DestinationProbe.from_json(setup["probed"]),
        )

    def close(self) -> None:
        """Write the records still pending, close the root descriptor."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):  # (lost records: judged by size and mtime)
                self._records.flush()
            if self._writeback is not None:
                self._writeback.close()
            os.close(self.fd)
            self.fd = self._folders.root_fd = -1  # (a number reused by the next open)

    def check(self) -> None:
        """Raise `DestinationChanged` when the root path leads elsewhere (unmounted, replaced)."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise DestinationChanged(
                exc.errno or errno.ENOENT,
                f"destination {self.path} is gone ({exc.strerror}); nothing was written there. "
                "Remount or restore it and run the same command again",
            ) from exc
        if (st.st_dev, st.st_ino) != self.identity:
            raise DestinationChanged(
                errno.ESTALE,
                f"destination {self.path} is no longer the folder the copy started in "
                "(unmounted network drive?); nothing was written there. Remount it and run "
                "the same command again",
            )

    def free_space(self) -> int | None:
        """Bytes an unprivileged writer may still write on the root's filesystem."""
        try:
            sv = os.fstatvfs(self.fd)
        except OSError:
            return None
        return sv.f_bavail * sv.f_frsize

    def suggested_workers(self) -> int:
        """Copies in flight: `LATENCY_BOUND_COPIES` on a network share (the probe's
        `Capabilities.latency_bound`), else `platform.default_workers` (1 on a local disk,
        4 on a FUSE one over a local disk)."""
        if self.capabilities.latency_bound:
            return LATENCY_BOUND_COPIES
        return default_workers(self.fd)

    # -- reading -------------------------------------------------------------------------
    def stat(self, rel: str, *, stamp: bool = False) -> FileInfo | None:
        """The entry ``rel`` (lstat), None when it does not exist (under exactly that name:
        where case folds, ``A`` is not the entry of ``a``)."""
        if rel and self._names.held_by_another(rel):
            return None
        try:
            st = os.stat(rel or ".", dir_fd=self.fd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        is_file = stat.S_ISREG(st.st_mode)
        records = is_file and self.capabilities.records
        return FileInfo(
            stat.S_ISDIR(st.st_mode),
            is_file,
            st.st_size,
            st.st_mtime_ns,
            self.source_stamp(rel) if stamp and is_file else None,
            self._records.lookup(rel, st.st_mtime_ns) if records else None,
        )

    def source_stamp(self, rel: str) -> bytes | None:
        """The `SOURCE_STAMP` recorded on ``rel`` when it was copied (None: none recorded)."""
        if not self.capabilities.xattrs:
            return None
        return get_xattr(rel, SOURCE_STAMP, dir_fd=self.fd)

    def listdir(
        self,
        rel_dir: str,
        cancelled: Callable[[], bool] | None = None,
        *,
        keep: Callable[[str], bool] | None = None,
        stamps: bool = False,
    ) -> dict[str, FileInfo] | None:
        """Entries of the directory ``rel_dir`` (empty when it does not exist or is reached
        only through a symbolic link); None when ``cancelled()`` turned true meanwhile (it is
        asked every 1,000 entries: one folder may hold a million).

        ``keep(name)`` false: the entry is skipped unstat-ed (a part of a split walk).
        ``stamps``: each file's recorded source stamp is read too (one ``lgetxattr`` by its
        name in the open folder, through ``/proc/self/fd``).
        """
        return self._folders.entries(
            rel_dir,
            cancelled,
            keep=keep,
            stamps=stamps and self.capabilities.xattrs,
            records=self._records if self.capabilities.records else None,
        )

    def lstats(
        self, rel_dir: str, cancelled: Callable[[], bool] | None = None
    ) -> dict[str, Lstat] | None:
        """`listdir` as plain ``(st_mode, st_size, st_mtime_ns)`` tuples, no `FileInfo` made,
        no stamp or record read: for a walk that decides the one rule's common case itself
        (`march`'s ``lstats``, the resume scan: a million entries). Where the destination
        keeps records (`Capabilities.records`) they decide instead: use `listdir` there."""
        return self._folders.lstats(rel_dir, cancelled)

    def kinds(self, rel_dir: str) -> dict[str, bool]:
        """The names in the folder ``rel_dir``, each True where it is a regular file (by
        the type the folder's listing gives, no link followed; no entry stat-ed, no stamp
        read); empty where it does not exist or is reached only through a link."""
        try:
            fd = self._folders.open(rel_dir)
        except OSError:
            return {}
        try:
            with os.scandir(fd) as it:
                return {e.name: e.is_file(follow_symlinks=False) for e in it}
        finally:
            os.close(fd)

    def read(self, rel: str) -> BinaryIO:
        """Open ``rel`` for reading (no symlinks followed, not below the root either)."""
        return os.fdopen(open_file_beneath(self.fd, rel), "rb", buffering=0)

    # -- writing -------------------------------------------------------------------------
    def makedirs(self, rel_dir: str) -> None:
        """Create ``rel_dir`` and its parents below the root."""
        self._folders.make(rel_dir)

    def create_temp(self, rel: str) -> LocalTempFile:
        """Create a fresh temporary file beside ``rel`` (a name `layout.is_own_temp_name`
        recognises, so a killed run's are removed at the next start)."""
        parent, _, name = rel.rpartition("/")
        self._names.check(rel)
        self.makedirs(parent)
        unique = f"{self._temp_prefix}{next(self._temp_counter):x}{OWN_TEMP_SUFFIX}"
        temp_name = f".{name}.{unique}"
        if len(temp_name.encode("utf-8", "surrogateescape")) > self._namemax:
            temp_name = f".{unique}"  # (a name near the limit: the temporary one without it)
        temp_rel = f"{parent}/{temp_name}" if parent else temp_name
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(temp_rel, flags, 0o644, dir_fd=self.fd)
        except FileNotFoundError:
            self._folders.forget(parent)  # removed behind our back: create it again
            self.makedirs(parent)
            fd = os.open(temp_rel, flags, 0o644, dir_fd=self.fd)
        return LocalTempFile(rel, temp_rel, fd)

    def publish(
        self,
        temp: TempFile,
        *,
        mtime_ns: int | None = None,
        atime_ns: int | None = None,
        stamp: bytes | None = None,
        fsync: bool = False,
    ) -> None:
        """Set times and stamp on the open file, fsync it if asked, rename it into place."""
        assert isinstance(temp, LocalTempFile)
        fd = temp.fd
        if mtime_ns is not None:
            os.utime(fd, ns=(mtime_ns if atime_ns is None else atime_ns, mtime_ns))
        if stamp is not None and self.capabilities.xattrs:
            try:
                os.setxattr(fd, SOURCE_STAMP, stamp)
            except OSError as exc:
                if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise  # e.g. ENOSPC: the caller retries like any destination error
                # This filesystem keeps no xattrs: size and mtime decide from now on, and the
                # status says so (`platform.degraded`): a weaker rule, never a silent one.
                self.capabilities = replace(self.capabilities, xattrs=False)
                degrade(
                    "source stamps at the destination",
                    f"{self.path} keeps no extended attributes, so size and mtime alone "
                    "decide what is already copied (a source file rewritten with its size "
                    "and mtime put back is not seen)",
                )
        if fsync and self.capabilities.fsync:
            os.fsync(fd)
            temp.synced = True
        os.rename(temp.temp_rel, temp.rel, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        temp.published = True
        if mtime_ns is not None and self.capabilities.records:
            # After the rename, never before: a crash loses a record, never leaves one that
            # claims a file not yet there. Read back by name: what a later stat will see
            # (an fstat of the open file is cached, and on exfat-fuse and sshfs it is not
            # what a later stat shows: every copy judged stale; benchmarks/notes.md item 47).
            st = os.stat(temp.rel, dir_fd=self.fd, follow_symlinks=False)
            record = SourceRecord(st.st_size, mtime_ns, stamp)
            self._records.add(temp.rel, record, st.st_mtime_ns)

    def release(self, temp: TempFile, *, uncache: bool = False) -> None:
        """Drop the file's cached pages, or start their writeback (``uncache``: `_uncache`),
        close it, remove it if unpublished."""
        assert isinstance(temp, LocalTempFile)
        if temp.fd >= 0:
            if uncache and temp.published:  # (an unpublished one goes, its pages with it)
                self._uncache(temp)
            os.close(temp.fd)
            temp.fd = -1
        if not temp.published:
            with contextlib.suppress(OSError):
                self.unlink(temp.temp_rel)

    def _uncache(self, temp: LocalTempFile) -> None:
        """Keep a published copy out of the page cache's way. A copy flushed before its
        rename is clean: its pages are dropped now. Otherwise they are dirty and no call
        drops them yet; their writeback is started with the other copies' in a batch
        (`page_cache.BatchedWriteback`: one call a file was a fifth of a small file's CPU), or
        by the file's own call where batches are off."""
        if temp.synced or self._writeback is None or not self._writeback.add(temp.size):
            drop_cache(temp.fd)

    def unlink(self, rel: str) -> bool:
        """Remove a file; False when it was not there (or is reached only through a link)."""
        parent, _, name = rel.rpartition("/")
        try:
            fd = self._folders.open(parent)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return False
            raise
        try:
            os.unlink(name, dir_fd=fd)
            self._records.forget(rel)
            self._names.removed(rel)
            return True
        except FileNotFoundError:
            return False
        finally:
            os.close(fd)

    def fsync_dir(self, rel_dir: str = "") -> None:
        """Make the directory entries of ``rel_dir`` durable."""
        self._folders.fsync(rel_dir)

    def save_records(self) -> None:
        """Write the records of the files published so far (`SourceRecords.flush`)."""
        self._records.flush()

    def flush(self) -> None:
        """Make everything written to the destination filesystem durable (the records of
        what each file was copied from included)."""
        self._records.flush()
        syncfs(self.fd)
        self.fsync_dir()
