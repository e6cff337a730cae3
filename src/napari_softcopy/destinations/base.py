"""What the engine needs of a destination, and the one rule "this file is a copy of that one".

Like zarr-python's ``abc.store.Store``: a small abstract surface (`Destination`) plus
capability flags (`Capabilities`), so a backend states what it can do instead of the engine
guessing. Like rclone's ``operations.Equal``: one rule (`copy_difference`) decides, for the
live copy, the resume scan, the verification and the chunk map alike, whether a destination
file is a copy of a source file.

Facts the rule depends on
-------------------------
- A copy is published with the source's mtime (to the destination's precision), so size and
  mtime equal means "copied from this version" unless the source was rewritten with its size
  and mtime put back (``os.utime``). That rewrite still changes the source's ctime, which no
  user call can set: the stamp recorded on the copy (`SOURCE_STAMP`, inode and ctime) tells
  it apart, where the destination keeps extended attributes.
- A destination without extended attributes, or keeping mtimes coarser than 1 us (SFTP and
  exFAT through FUSE: 1 s; FAT: 2 s), keeps a record of what it was copied from instead
  (`SourceRecord`, see `destinations.records`): with it the rule compares the source's own
  size, nanosecond mtime and stamp, so a same-size rewrite within the destination's
  granularity is still seen. A file without a record (copied by another tool, or the last
  records of a killed run) is compared by size and mtime within the precision, as rclone's
  per-backend precision and rsync's ``--modify-window`` do.
- Where the destination moves a file's mtime by itself (`Capabilities.stable_mtime` False:
  rclone's VFS while it uploads), a record is trusted whatever the copy's mtime: the copy's
  size and the recorded source version decide (a same-size change made there by another
  program is then seen only by ``verify --checksum``).
- A write landing in the same kernel clock tick as the previous one may leave size and mtime
  as they were: only a file older than the settle age (`transfer.RACY_S`) is copied.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

#: Extended attribute on every copied file: the source file's inode number and inode change
#: time (ctime) when it was copied. A rewrite that puts size and mtime back (``os.utime``)
#: still changes the ctime, which no user call can set; so resume sees it.
SOURCE_STAMP = "user.softcopy.source"

#: The folder at the destination root that holds napari-softcopy's own records (the manifest
#: of a verified copy, per-file records where the destination keeps no usable mtime or xattrs).
#: It is not part of the copy: walks and verification skip it, readers of the Zarr never look
#: there (no Zarr key starts with a dot).
STATE_DIR = ".softcopy"

#: `Capabilities.mtime_precision_ns` of a destination that keeps no mtime it is given: there
#: its mtimes say nothing about the source, and only a record can.
NO_MTIME_NS = 1 << 62

#: Coarser mtimes than this keep records (`Capabilities.records`): two writes of one chunk
#: are further apart than this (the settle age, `transfer.RACY_S`, is 30 ms), not than 1 s.
RECORDS_ABOVE_NS = 1_000


class SourceStat(Protocol):
    """What the rule reads of a source file (an ``os.stat_result`` has it)."""

    @property
    def st_size(self) -> int: ...
    @property
    def st_mtime_ns(self) -> int: ...
    @property
    def st_ino(self) -> int: ...
    @property
    def st_ctime_ns(self) -> int: ...


def source_stamp(st: SourceStat) -> bytes:
    """The stamp of a source file: ``b"<inode>:<ctime ns>"``."""
    return f"{st.st_ino}:{st.st_ctime_ns}".encode()


def copied_from_another_version(recorded: bytes | None, st: SourceStat) -> bool:
    """True when a copy's ``recorded`` stamp names another version of the source file than
    ``st`` describes: it was rewritten after the copy, even with its size and mtime put back.
    No stamp recorded (or no extended attributes at the destination): False."""
    return recorded is not None and recorded != source_stamp(st)


class DestinationChanged(OSError):
    """The destination path no longer leads to the directory the copy started in."""


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """What a destination recorded of the source version a file was copied from (where its
    own mtimes and xattrs cannot say it): the source's size, nanosecond mtime and stamp."""

    size: int
    mtime_ns: int
    stamp: bytes | None = None


#: An entry's ``lstat`` as `Destination.lstats` gives it: ``(st_mode, st_size, st_mtime_ns)`` (a
#: tuple: a third of an ``os.stat_result``'s memory, made in a tenth of a `FileInfo`'s time).
Lstat = tuple[int, int, int]


# Not frozen: a frozen dataclass sets each field through object.__setattr__, and a listing
# or a verification walk makes one of these per file (50,000 in one folder).
@dataclass(slots=True)
class FileInfo:
    """One entry at the destination (what ``os.stat_result`` was, for any backend).

    Attributes
    ----------
    is_dir, is_file : bool
        A folder; a regular file (neither: a link or something else, never followed).
    size : int
        Bytes.
    mtime_ns : int
        Modification time, to the destination's `Capabilities.mtime_precision_ns`.
    stamp : bytes or None
        The `SOURCE_STAMP` recorded on the file, where it was asked for and is recorded
        (reading it costs a system call or a request: it is read only where it decides).
    record : SourceRecord or None
        The destination's record of the source version this file was copied from, where it
        keeps records (`Capabilities.records`) and the file is still as it was published.
    """

    is_dir: bool
    is_file: bool
    size: int
    mtime_ns: int
    stamp: bytes | None = None
    record: SourceRecord | None = None


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a destination can do (rclone's ``Precision``/``Features``, zarr's ``supports_*``).

    Attributes
    ----------
    mtime_precision_ns : int
        The granularity of the mtimes it keeps: 1 on ext4, xfs, btrfs, tmpfs; 2 s on FAT.
        Two mtimes less than this apart are equal (`mtime_matches`).
    xattrs : bool
        It keeps extended attributes, so copies carry their source stamp (`SOURCE_STAMP`).
        Turns False once the filesystem refused one.
    atomic_replace : bool
        A rename over an existing file replaces it atomically (no moment without either).
    case_sensitive : bool
        ``a`` and ``A`` are two names.
    max_name_bytes : int
        The longest name of a file or folder, in bytes (a file's temporary name leaves the
        final name out where both would not fit).
    copy_file_range : bool
        Bytes can be copied in the kernel (``copy_file_range``/``sendfile``) into its files.
    fsync : bool
        A file can be made durable on its own (`Destination.publish` with ``fsync``); False
        where only `Destination.flush` makes anything durable.
    invalid_chars : str
        Characters a name cannot hold there (``:*?"<>|\\`` on exFAT, NTFS, FAT, SMB).
    trailing_dot_space : bool
        A name may end in a dot or a space (False where Windows drops them).
    stable_mtime : bool
        A file's mtime stays what it was given until the file is written again. False where
        the filesystem moves it by itself (``rclone mount``: while it uploads a closed file,
        a reader's open shows the time of that open, and the upload ends with the server's
        finer time): there a copy's record (`SourceRecord`) is trusted whatever its mtime.
    verified_upload_digest : bool
        `Destination.acknowledged_digest` gives the BLAKE3 of each file a copy published,
        hashed on the way and acknowledged by a server that checked the bytes' checksum on
        arrival (S3 with CRC64NVME), so the manifest needs no read back of it, and the copy
        no hash journal (`hashes`).
    latency_bound : bool
        Every file operation waits on another machine, or on a FUSE daemon that asks one
        (NFS, SMB, sshfs, rclone mount...): one copy at a time leaves the link idle, so the
        engine keeps several in flight (`LocalDestination.suggested_workers`).
    lstat_listing : bool
        Its folders can be listed as plain ``lstat`` tuples (`Destination.lstats`), so a walk
        that decides the one rule's common case itself (the resume scan) makes no
        `FileInfo` a name. Where it keeps records (`records`), those decide instead.
    """

    mtime_precision_ns: int = 1
    xattrs: bool = True
    atomic_replace: bool = True
    case_sensitive: bool = True
    max_name_bytes: int = 255
    copy_file_range: bool = True
    fsync: bool = True
    invalid_chars: str = ""
    trailing_dot_space: bool = True
    stable_mtime: bool = True
    verified_upload_digest: bool = False
    latency_bound: bool = False
    lstat_listing: bool = False

    @property
    def records(self) -> bool:
        """Whether it keeps a `SourceRecord` per copied file: without xattrs, or with mtimes
        coarser than `RECORDS_ABOVE_NS` (a rewrite within them would go unseen)."""
        return not self.xattrs or self.mtime_precision_ns > RECORDS_ABOVE_NS


def mtime_matches(copy_mtime_ns: int, source_mtime_ns: int, precision_ns: int) -> bool:
    """Whether a copy's mtime is the source's, kept to ``precision_ns``."""
    return abs(copy_mtime_ns - source_mtime_ns) < precision_ns


def copy_difference(
    source: SourceStat,
    copy: FileInfo | None,
    capabilities: Capabilities,
    read_stamp: Callable[[], bytes | None] | None = None,
) -> str | None:
    """The one rule: why ``copy`` is not a copy of the source file ``source`` (None: it is).

    A copy is a regular file of the source's size, with its mtime (within the destination's
    `Capabilities.mtime_precision_ns`), and no stamp of another version of the source file
    recorded on it (`copied_from_another_version`). Where the destination recorded the source
    version it was copied from (`FileInfo.record`), that record decides instead, to the
    nanosecond. Used by the live copy, the resume scan, the verification and the chunk map.

    Parameters
    ----------
    source : os.stat_result or SourceStat
        The source file (a regular file).
    copy : FileInfo or None
        The destination's entry of that name (None: there is none).
    capabilities : Capabilities
        The destination's.
    read_stamp : callable, optional
        Reads the copy's recorded stamp when ``copy.stamp`` is None, called only where size
        and mtime match (the stamp is the last thing to decide, and costs a call to read).
        None: the stamp in ``copy`` is all there is (no stamp: size and mtime decide).

    Returns
    -------
    str or None
        A short reason (``"missing"``, ``"size 3 != 4"``...), or None for a copy.
    """
    if copy is None:
        return "missing"
    if not copy.is_file:
        return "not a regular file at the destination"
    if copy.size != source.st_size:
        return f"size {copy.size} != {source.st_size}"
    record = copy.record
    if record is not None:
        if record.size != source.st_size or record.mtime_ns != source.st_mtime_ns:
            return "source changed since it was copied (recorded size and mtime differ)"
        if copied_from_another_version(record.stamp, source):
            return "source rewritten after it was copied"
        return None
    if capabilities.mtime_precision_ns >= NO_MTIME_NS:
        return "no record of the source version it was copied from"
    if not mtime_matches(copy.mtime_ns, source.st_mtime_ns, capabilities.mtime_precision_ns):
        return "modification time differs"
    stamp = copy.stamp
    if stamp is None and read_stamp is not None and capabilities.xattrs:
        stamp = read_stamp()
    if copied_from_another_version(stamp, source):
        return "source rewritten after it was copied"
    return None


def same_version(copy: FileInfo, size: int, mtime_ns: int, capabilities: Capabilities) -> bool:
    """The one rule's common case, answered without its parts (a resume scan or a manifest
    asks it of every file): ``copy`` is a regular file of exactly ``size`` and ``mtime_ns``,
    with no record of its own to decide, on a destination that keeps mtimes. Then
    `copy_difference` calls it a copy of that source version unless a stamp recorded on it
    names another one: the caller compares the stamp (or has none to compare)."""
    return (
        copy.is_file
        and copy.record is None
        and copy.size == size
        and copy.mtime_ns == mtime_ns
        and capabilities.mtime_precision_ns < NO_MTIME_NS
    )


def is_copy_of(
    source: SourceStat,
    copy: FileInfo | None,
    capabilities: Capabilities,
    read_stamp: Callable[[], bytes | None] | None = None,
) -> bool:
    """True when ``copy`` is a copy of ``source`` (`copy_difference` finds no reason)."""
    return copy_difference(source, copy, capabilities, read_stamp) is None


class TempFile(abc.ABC):
    """A file being written under a temporary name beside its final name ``rel``.

    Created by `Destination.create_temp`; ended by `Destination.publish` (the final name
    appears, complete) and in every case by `Destination.release` (a file never published
    is removed). Bytes go in through `write`, or straight into ``fileno()`` where the
    destination has a descriptor (`transfer` then copies in the kernel: ``copy_file_range``).
    """

    rel: str

    @abc.abstractmethod
    def fileno(self) -> int | None:
        """The descriptor the bytes can be written to; None where there is none (an object
        store: everything goes through `write`)."""

    def expect(self, size: int) -> None:
        """``size`` bytes are about to be written (before any is read): a destination that
        holds them in memory may wait here for room (`s3_objects.S3TempFile`)."""
        return None  # (a file on a disk takes the bytes as they come)

    def write(self, data: bytes | memoryview) -> None:
        """Append all of ``data`` (the byte-stream path, for any destination)."""
        fd = self.fileno()
        assert fd is not None, "a temporary file without a descriptor overrides write"
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]


class Destination(abc.ABC):
    """A destination root: everything the engine, the copy helper, the verification and the
    chunk map do below it goes through these calls (no path or descriptor of it elsewhere).

    Paths ``rel`` are relative to the root, ``/``-separated, never ``..``; ``""`` is the root.
    A backend states what it can do in `capabilities`; `tests/destination_tests.py` holds the
    conformance tests every backend passes (`DestinationTests`).
    """

    path: Path  # the root as the user named it (for messages)
    capabilities: Capabilities

    # -- the root ------------------------------------------------------------------------
    @abc.abstractmethod
    def close(self) -> None:
        """Let go of the root; no call but `close` works afterwards."""

    @abc.abstractmethod
    def check(self) -> None:
        """Raise `DestinationChanged` when the root path leads elsewhere (unmounted,
        replaced): the copy must not go on writing, nor mark, somewhere else."""

    @abc.abstractmethod
    def free_space(self) -> int | None:
        """Bytes an unprivileged writer may still write (None where unknown)."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Make everything written so far durable (before the marker)."""

    @property
    def summary(self) -> str:
        """One line saying what the destination keeps (``fuse.sshfs, mtime to 1 s, no
        xattrs, case-sensitive``), for the log, the CLI, the status and the widget."""
        c = self.capabilities
        return (
            f"mtime to {c.mtime_precision_ns} ns, {'xattrs' if c.xattrs else 'no xattrs'}, "
            f"{'case-sensitive' if c.case_sensitive else 'case-insensitive'}"
        )

    def save_records(self) -> None:
        """Write down what is held in memory about the files copied (where the destination
        keeps records), so that another reader of the destination sees it."""
        return None  # (a destination that keeps none has nothing to write)

    def suggested_workers(self) -> int:
        """Copy threads worth running against this destination (more where each call waits
        on a network)."""
        return 4

    def walk_helpers_help(self) -> bool:
        """Whether the final verification's walk is worth splitting across helper processes
        (`verify.start_helpers`): each lists its part of the destination again. False where
        a verification in the copy's process reads the destination from what the copy
        holds in memory and a helper would have to list it whole (an object store)."""
        return True

    # -- reading -------------------------------------------------------------------------
    @abc.abstractmethod
    def stat(self, rel: str, *, stamp: bool = False) -> FileInfo | None:
        """The entry ``rel`` (links not followed), None when it does not exist; with
        ``stamp`` its recorded source stamp too."""

    @abc.abstractmethod
    def source_stamp(self, rel: str) -> bytes | None:
        """The `SOURCE_STAMP` recorded on ``rel`` (None: none recorded, or no xattrs)."""

    @abc.abstractmethod
    def listdir(
        self,
        rel_dir: str,
        cancelled: Callable[[], bool] | None = None,
        *,
        keep: Callable[[str], bool] | None = None,
        stamps: bool = False,
    ) -> dict[str, FileInfo] | None:
        """Entries of the folder ``rel_dir`` (empty when it does not exist or is reached only
        through a link); None when ``cancelled()`` turned true meanwhile.

        Only the names ``keep(name)`` accepts are looked at (a part of a split walk); with
        ``stamps``, each file's recorded source stamp is read too (`FileInfo.stamp`)."""

    def lstats(
        self, rel_dir: str, cancelled: Callable[[], bool] | None = None
    ) -> dict[str, Lstat] | None:
        """`listdir` as plain ``(st_mode, st_size, st_mtime_ns)`` tuples, no `FileInfo` made,
        no stamp or record read; None when ``cancelled()`` turned true meanwhile. Only where
        `Capabilities.lstat_listing` says so (the default has none)."""
        raise NotImplementedError(f"{type(self).__name__} has no plain lstat listing")

    def kinds(self, rel_dir: str) -> dict[str, bool] | None:
        """The names in the folder ``rel_dir``, each True where it is a regular file, from
        the folder's listing alone (nothing stat-ed, no stamp read); None where this
        destination has no such cheaper listing than `listdir` (the default)."""
        return None

    @abc.abstractmethod
    def read(self, rel: str) -> BinaryIO:
        """Open ``rel`` for reading back (checksums, metadata comparison); links are not
        followed."""

    # -- writing -------------------------------------------------------------------------
    @abc.abstractmethod
    def makedirs(self, rel_dir: str) -> None:
        """Create the folder ``rel_dir`` and its parents (never through a link)."""

    @abc.abstractmethod
    def create_temp(self, rel: str) -> TempFile:
        """A fresh temporary file that will become ``rel`` (parents created)."""

    @abc.abstractmethod
    def publish(
        self,
        temp: TempFile,
        *,
        mtime_ns: int | None = None,
        atime_ns: int | None = None,
        stamp: bytes | None = None,
        fsync: bool = False,
    ) -> None:
        """Give ``temp`` its times and stamp (a stamp is dropped, and `capabilities` says
        ``xattrs=False`` from then on, where the destination refuses it), make it durable
        with ``fsync``, and rename it atomically to its final name."""

    def acknowledged_digest(self, rel: str, info: FileInfo) -> str | None:
        """The BLAKE3 (hex) of ``rel``'s bytes as they were sent and checked by the server
        on arrival, where the destination still holds the version ``info`` lists; None
        where not known (the default; `assembly.assemble` then takes the hash journal's)."""
        return None

    @abc.abstractmethod
    def release(self, temp: TempFile, *, uncache: bool = False) -> None:
        """End ``temp``: drop its cached pages with ``uncache``, close it, remove it when it
        was not published. Never raises for a file already gone."""

    @abc.abstractmethod
    def unlink(self, rel: str) -> bool:
        """Remove the file ``rel``; False when it was not there."""

    @abc.abstractmethod
    def fsync_dir(self, rel_dir: str = "") -> None:
        """Make the entries of the folder ``rel_dir`` durable."""

    # -- whole files ---------------------------------------------------------------------
    def write_file(self, rel: str, data: bytes, *, mtime_ns: int | None = None) -> None:
        """Publish small ``data`` as ``rel`` atomically and durably (the marker)."""
        temp = self.create_temp(rel)
        try:
            temp.write(data)
            self.publish(temp, mtime_ns=mtime_ns, atime_ns=mtime_ns, fsync=True)
        finally:
            self.release(temp)
        self.fsync_dir(rel.rpartition("/")[0])
