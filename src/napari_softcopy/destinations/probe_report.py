"""What a destination probe found (`DestinationProbe`), in the forms others read it: the
`Capabilities` the copy rule uses, the one-line summary (log, status, widget), the record at
the destination, and the notices for what does not apply.

The copy records what it found at the destination (`PROBE_RECORD` under `STATE_DIR`) so that
a later ``verify`` of the same pair judges with the same capabilities without writing anything
there. How it is found: `probe`.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field

from ..layout import OWN_TEMP_SUFFIX
from ..platform import degrade
from .base import NO_MTIME_NS, STATE_DIR, Capabilities

#: The record of the probe at the destination, below `STATE_DIR`.
PROBE_RECORD = "destination.json"

#: Filesystem types where each file operation is a round trip to another machine. FUSE ones
#: other than ``fuseblk`` (a daemon over a local block device: ntfs-3g, exfat-fuse) count too:
#: sshfs, rclone mount, smbnetfs, s3fs... each answer after the daemon asked its server.
NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "afs", "9p", "lustre", "gpfs")
NETWORK_FS += ("beegfs", "glusterfs", "fuse")


def precision_label(ns: int) -> str:
    """``1 ns``, ``100 ns``, ``1 us``, ``10 ms``, ``1 s``, ``2 s`` (``no mtime``)."""
    if ns >= NO_MTIME_NS:
        return "no mtime"
    for unit, size in (("s", 10**9), ("ms", 10**6), ("us", 10**3)):
        if ns >= size and ns % size == 0:
            return f"{ns // size} {unit}"
    return f"{ns} ns"


@dataclass(frozen=True)
class DestinationProbe:
    """What the probe found (see `probe`).

    Attributes
    ----------
    fs_type : str or None
        From ``/proc/self/mountinfo`` (``"xfs"``, ``"fuse.sshfs"``, ``"fuseblk"``...).
    mtime_precision_ns : int
        The granularity of the mtimes it keeps (`probe.PRECISIONS_NS`, or `NO_MTIME_NS`).
    xattrs : bool
        Extended attributes are kept (set and read back).
    xattrs_error : str
        Why not (``"EIO"``, ``"ENOTSUP"``...), empty when they are.
    atomic_replace, case_sensitive, copy_file_range, fsync : bool
        As in `Capabilities` (``copy_file_range``: between two files of the destination).
    max_name_bytes : int
        The longest name it took (ASCII, in bytes).
    invalid_chars : str
        The characters of `probe.WINDOWS_INVALID` a name cannot hold there (refused, or stored as
        another name).
    trailing_dot_space : bool
        A name ending in a dot or a space is kept as it is.
    stable_mtime : bool
        A file keeps the mtime it was given (False: `probe.MOVING_MTIME_FS`).
    free_bytes : int or None
        Free space when probed.
    """

    fs_type: str | None = None
    mtime_precision_ns: int = 1
    xattrs: bool = True
    xattrs_error: str = ""
    atomic_replace: bool = True
    case_sensitive: bool = True
    max_name_bytes: int = 255
    invalid_chars: str = ""
    trailing_dot_space: bool = True
    copy_file_range: bool = True
    fsync: bool = True
    stable_mtime: bool = True
    free_bytes: int | None = field(default=None, compare=False)

    @property
    def latency_bound(self) -> bool:
        """Whether it is a network share (`NETWORK_FS`): as `Capabilities.latency_bound`."""
        return (self.fs_type or "").split(".")[0] in NETWORK_FS

    def summary(self) -> str:
        """One line: ``fuse.sshfs, mtime to 1 s, no xattrs (ENOTSUP), case-sensitive``."""
        parts = [self.fs_type or "unknown filesystem"]
        parts.append(
            "no usable mtime"
            if self.mtime_precision_ns >= NO_MTIME_NS
            else f"mtime to {precision_label(self.mtime_precision_ns)}"
        )
        if self.latency_bound:
            parts.append("network share")
        if not self.stable_mtime:
            parts.append("mtimes move while it uploads")
        parts.append("xattrs" if self.xattrs else f"no xattrs ({self.xattrs_error or '?'})")
        parts.append("case-sensitive" if self.case_sensitive else "case-insensitive")
        if self.invalid_chars or not self.trailing_dot_space:
            parts.append("Windows names")
        if self.max_name_bytes < 255:
            parts.append(f"names up to {self.max_name_bytes} bytes")
        if not self.atomic_replace:
            parts.append("no rename over a file")
        if not self.fsync:
            parts.append("no fsync")
        if self.free_bytes is not None:
            free = self.free_bytes
            parts.append(
                f"{free / 2**30:.1f} GiB free" if free >= 2**30 else f"{free / 2**20:.0f} MiB free"
            )
        return ", ".join(parts)

    def capabilities(self) -> Capabilities:
        """The `Capabilities` this probe shows."""
        return Capabilities(
            mtime_precision_ns=self.mtime_precision_ns,
            xattrs=self.xattrs,
            atomic_replace=self.atomic_replace,
            case_sensitive=self.case_sensitive,
            max_name_bytes=self.max_name_bytes,
            copy_file_range=self.copy_file_range,
            fsync=self.fsync,
            invalid_chars=self.invalid_chars,
            trailing_dot_space=self.trailing_dot_space,
            stable_mtime=self.stable_mtime,
            latency_bound=self.latency_bound,
            lstat_listing=True,  # (a folder: `os.scandir` gives each entry's lstat)
        )

    def to_json(self) -> str:
        """The record kept at the destination (without the free space, which changes)."""
        data = asdict(self)
        data.pop("free_bytes")
        return json.dumps(data, sort_keys=True, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> DestinationProbe:
        """Read a record written by `to_json` (unknown keys ignored; ValueError if invalid)."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a probe record")
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def read_record(dir_fd: int) -> DestinationProbe | None:
    """The probe recorded at the destination by the copy (None: none, or unreadable)."""
    try:
        fd = os.open(f"{STATE_DIR}/{PROBE_RECORD}", os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "r", encoding="utf-8") as f:
            return DestinationProbe.from_json(f.read(1 << 16))
    except (OSError, ValueError, TypeError):
        return None


def write_record(dir_fd: int, found: DestinationProbe) -> bool:
    """Record ``found`` at the destination, atomically, unless the same is recorded already
    (a rerun writes nothing). Returns whether anything was written."""
    if read_record(dir_fd) == found:
        return False
    with contextlib.suppress(FileExistsError):
        os.mkdir(STATE_DIR, dir_fd=dir_fd)
    temp = f"{STATE_DIR}/.{PROBE_RECORD}.{os.urandom(4).hex()}{OWN_TEMP_SUFFIX}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temp, flags, 0o644, dir_fd=dir_fd)
    try:
        os.write(fd, found.to_json().encode())
        os.close(fd)
        fd = -1
        os.rename(temp, f"{STATE_DIR}/{PROBE_RECORD}", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dir_fd)
        raise
    return True


def say_degraded(found: DestinationProbe, path: object) -> None:
    """Say once (`platform.degrade`: log, status notices, widget) what ``found`` shows does
    not apply at the destination ``path``."""
    where = f"{path} ({found.fs_type or 'unknown filesystem'})"
    if not found.xattrs:
        degrade(
            "source stamps at the destination",
            f"{where} keeps no extended attributes ({found.xattrs_error}); what each file "
            f"was copied from is recorded in {STATE_DIR}/ at the destination instead",
        )
    if found.mtime_precision_ns != 1:
        degrade(
            "nanosecond modification times at the destination",
            f"{where} keeps mtimes to {precision_label(found.mtime_precision_ns)}; "
            + (
                f"what each file was copied from is recorded in {STATE_DIR}/ there"
                if found.capabilities().records
                else "they are compared within that precision"
            ),
        )
    if not found.stable_mtime:
        degrade(
            "modification times as proof of a copy",
            f"{where} moves a file's mtime by itself while it uploads it; a copy is judged by "
            f"its size and the record in {STATE_DIR}/ of the source version it was copied "
            "from (a same-size change made there by another program is seen only by verify "
            "--checksum)",
        )
    if not found.copy_file_range:
        degrade(
            "zero-copy into the destination",
            f"{where} refuses copy_file_range; bytes are copied through sendfile or read/write",
        )
    if not found.fsync:
        degrade("fsync at the destination", f"{where} refuses fsync; only syncfs flushes")
