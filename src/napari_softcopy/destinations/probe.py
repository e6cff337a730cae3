"""What a mounted destination really keeps, measured once when a copy starts.

A mount's type says little: exFAT through FUSE keeps whole seconds where the format keeps
10 ms, NTFS through ntfs-3g and SMB keep 100 ns, SFTP v3 whole seconds, FAT two; Samba behind
``rclone mount`` answers ``setxattr`` with EIO (not ENOTSUP). So the destination is asked, as
rclone asks a backend for its ``Precision()``: a probe file in the root is given an mtime with
odd nanoseconds and an odd second and read back; an extended attribute is set and read back;
it is renamed over another file; looked up in upper case; names with characters Windows
filesystems refuse, and the longest name, are created and listed. Everything is removed
afterwards: the probe files have the engine's own temporary suffix, so even a run killed
midway leaves nothing that the next start does not remove.

What a probe's moment cannot show is known by the filesystem type: ``rclone mount`` moves
a file's mtime by itself seconds after it was closed (with Samba behind it: a reader opening
the file while rclone uploads it makes it show the time of that open, then the time it was
given to the millisecond, then the server's 100 ns), so `Capabilities.stable_mtime` is False.

The result (`probe_report.DestinationProbe`) gives the destination's `Capabilities`; a copy
records it at the destination (`probe_report.PROBE_RECORD` under `STATE_DIR`) so that a later
``verify`` of the same pair judges with the same capabilities without writing anything there.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os

from ..layout import OWN_TEMP_SUFFIX
from ..platform import degrade
from ..platform import filesystem_type as platform_filesystem_type
from .base import NO_MTIME_NS, STATE_DIR
from .probe_report import DestinationProbe, read_record, say_degraded, write_record

log = logging.getLogger(__name__)

#: An mtime with an odd second and every digit of its nanoseconds set: a destination that keeps
#: less than nanoseconds shows which granularity it keeps, one that keeps even seconds (FAT)
#: shows that too.
PROBE_MTIME_NS = 1_600_000_001_123_456_789

#: The granularities destinations keep, finest first: 1 ns (ext4, xfs, btrfs, tmpfs), 100 ns
#: (NTFS, SMB), 1 us (NFSv3 servers on some filesystems), 1 ms (SMB through ``rclone mount``,
#: whose cache keeps milliseconds), 10 ms (exFAT), 1 s (SFTP v3 and exFAT through FUSE,
#: Lustre, ext3), 2 s (FAT).
PRECISIONS_NS = (1, 100, 1_000, 1_000_000, 10_000_000, 1_000_000_000, 2_000_000_000)

#: Filesystem types whose mtimes move by themselves after a file is closed (see the module
#: docstring): rclone's VFS reports the time of its cache, then of the remote.
MOVING_MTIME_FS = ("fuse.rclone",)

#: Characters Windows filesystems (exFAT, NTFS in Win32 names, FAT, SMB) refuse in a name.
WINDOWS_INVALID = ':*?"<>|\\'


def _errname(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def _create(name: str, dir_fd: int) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(name, flags, 0o644, dir_fd=dir_fd)


def _remove(name: str, dir_fd: int) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=dir_fd)


def _listdir(dir_fd: int) -> set[str]:
    """The names in the folder, listed through a new descriptor: btrfs lists, through a
    descriptor opened earlier, only what existed when it was opened."""
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        return set(os.listdir(fd))
    finally:
        os.close(fd)


def filesystem_type(dir_fd: int) -> str | None:
    """The type of the filesystem holding ``dir_fd`` (`platform.filesystem_type`; where the
    device number matches no mount, as on btrfs, whose subvolumes have their own, the mount
    whose mount point holds the folder's path)."""
    found = platform_filesystem_type(dir_fd)
    if found is not None:
        return found
    try:
        path = os.readlink(f"/proc/self/fd/{dir_fd}")
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            mounts = [line.split() for line in f]
    except OSError:
        return None
    best, best_len = None, -1
    for fields in mounts:
        if len(fields) < 5 or "-" not in fields:
            continue
        point = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= best_len:  # (the last of equal ones is on top)
            best, best_len = fields[fields.index("-") + 1], len(point)
    return best


def _names_kept(names: list[str], dir_fd: int, prefix: str) -> set[str]:
    """Create each of ``names``, and return those listed under exactly that name afterwards
    (a name refused, or stored as another, is not held); all are removed again."""
    made = []
    for name in names:
        try:
            os.close(_create(name, dir_fd))
        except OSError:
            continue
        made.append(name)
    try:
        listed = _listdir(dir_fd) if made else set()
    finally:
        for name in made:
            _remove(name, dir_fd)
        # (a name stored as another one: removed by the name it was stored as)
        for name in _listdir(dir_fd) if made else ():
            if name.startswith(prefix):
                _remove(name, dir_fd)
    return {name for name in made if name in listed}


def _mtime_precision(name: str, dir_fd: int) -> int:
    """Set `PROBE_MTIME_NS` on ``name`` (closed) and read it back by name."""
    os.utime(name, ns=(PROBE_MTIME_NS, PROBE_MTIME_NS), dir_fd=dir_fd, follow_symlinks=False)
    got = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mtime_ns
    diff = abs(got - PROBE_MTIME_NS)
    for precision in PRECISIONS_NS:
        # Kept to ``precision``: truncated or rounded to a multiple of it.
        if diff < precision and got % precision == 0:
            return precision
    return NO_MTIME_NS


def _longest_name(prefix: str, dir_fd: int, limit: int) -> int:
    """The longest ASCII name (up to ``limit`` bytes) that can be created: ``limit`` itself
    where it can (one try), else by bisection. Every name tried has the engine's own
    temporary suffix, so one left by a killed process is removed by the next start."""
    base = len(prefix) + len(OWN_TEMP_SUFFIX)

    def fits(n: int) -> bool:
        name = prefix + "x" * (n - base) + OWN_TEMP_SUFFIX
        try:
            os.close(_create(name, dir_fd))
        except OSError:
            return False
        _remove(name, dir_fd)
        return True

    if fits(limit):
        return limit
    lo, hi = base, limit - 1  # lo: assumed to fit (the probe's own names do)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _names(tag: str, dir_fd: int) -> tuple[str, bool, int]:
    """Which names the destination holds: the characters of `WINDOWS_INVALID` it refuses, a
    trailing dot or space kept, the longest name. Tried in a folder of their own below
    `STATE_DIR` (a name ending in a dot cannot carry the engine's temporary suffix: one left
    by a killed process must not stand beside the copy), removed afterwards."""
    made_state = False
    with contextlib.suppress(FileExistsError):
        os.mkdir(STATE_DIR, dir_fd=dir_fd)
        made_state = True
    folder = f"{STATE_DIR}/{tag}"
    os.mkdir(folder, dir_fd=dir_fd)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        odd = {c: f"{tag}-{c}x" for c in WINDOWS_INVALID}
        kept = _names_kept([*odd.values(), f"{tag}-x.", f"{tag}-x "], fd, tag)
        invalid = "".join(c for c, name in odd.items() if name not in kept)
        trailing = {f"{tag}-x.", f"{tag}-x "} <= kept
        try:
            limit = os.fstatvfs(fd).f_namemax or 255
        except OSError:
            limit = 255
        longest = _longest_name(tag, fd, min(limit, 1024))
    finally:
        for name in _listdir(fd):
            _remove(name, fd)
        os.close(fd)
        with contextlib.suppress(OSError):
            os.rmdir(folder, dir_fd=dir_fd)
        if made_state:
            with contextlib.suppress(OSError):  # (not empty: something of ours is there)
                os.rmdir(STATE_DIR, dir_fd=dir_fd)
    return invalid, trailing, longest


def probe(dir_fd: int) -> DestinationProbe:
    """Probe the destination whose root is the open folder ``dir_fd`` (see module docstring).

    Raises
    ------
    OSError
        The root refuses a new file (read-only, permissions, full): the caller decides.
    """
    tag = f".softcopy-probe-{os.urandom(4).hex()}"
    main = f"{tag}-a{OWN_TEMP_SUFFIX}"
    other = f"{tag}-b{OWN_TEMP_SUFFIX}"
    fd = _create(main, dir_fd)
    try:
        os.write(fd, b"softcopy probe\n")
        try:
            os.fsync(fd)
            fsync = True
        except OSError:
            fsync = False
        xattrs, xattrs_error = True, ""
        try:
            os.setxattr(fd, "user.softcopy.probe", b"1")
            xattrs = os.getxattr(fd, "user.softcopy.probe") == b"1"
            xattrs_error = "" if xattrs else "not kept"
        except OSError as exc:
            xattrs, xattrs_error = False, _errname(exc)
        except AttributeError:  # (no xattr calls on this platform)
            xattrs, xattrs_error = False, "ENOTSUP"
        copy_range = False
        if hasattr(os, "copy_file_range"):
            ofd = _create(other, dir_fd)
            try:
                copy_range = os.copy_file_range(fd, ofd, 4, 0, 0) == 4
            except OSError:
                copy_range = False
            finally:
                os.close(ofd)
    finally:
        os.close(fd)
    try:
        precision = _mtime_precision(main, dir_fd)
        # Rename over an existing file: what publishing a newer version of a file does.
        if not copy_range:
            os.close(_create(other, dir_fd))
        try:
            os.rename(main, other, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            atomic_replace = True
            main, other = other, main
        except OSError:
            atomic_replace = False
        # Case: the probe's name in upper case leads to the same file only where case folds.
        try:
            os.stat(main.upper(), dir_fd=dir_fd, follow_symlinks=False)
            case_sensitive = False
        except OSError:
            case_sensitive = True
        invalid, trailing, longest = _names(tag, dir_fd)
    finally:
        _remove(main, dir_fd)
        _remove(other, dir_fd)
    try:
        sv = os.fstatvfs(dir_fd)
        free = sv.f_bavail * sv.f_frsize
    except OSError:
        free = None
    fs_type = filesystem_type(dir_fd)
    return DestinationProbe(
        fs_type=fs_type,
        mtime_precision_ns=precision,
        xattrs=xattrs,
        xattrs_error=xattrs_error,
        atomic_replace=atomic_replace,
        case_sensitive=case_sensitive,
        max_name_bytes=longest,
        invalid_chars=invalid,
        trailing_dot_space=trailing,
        copy_file_range=copy_range,
        fsync=fsync,
        stable_mtime=fs_type not in MOVING_MTIME_FS,
        free_bytes=free,
    )


def probe_destination(dir_fd: int, path: object, *, probing: bool) -> DestinationProbe:
    """What the destination root ``dir_fd`` (named ``path`` in messages) keeps.

    ``probing`` (a copy starting): probe, log the summary, say what does not apply
    (`platform.degrade`) and record it at the destination where it matters for the rule.
    Otherwise (a verification, its helper processes, the chunk map): the recorded probe,
    else nanoseconds and xattrs, what the copy found where it recorded nothing (a tree
    another tool copied to a coarser destination then shows differences: never a false
    all-clear). Readers never probe: they run beside a copy, in processes that may be killed
    at any moment.
    """
    if not probing:
        return read_record(dir_fd) or DestinationProbe(max_name_bytes=_namemax(dir_fd))
    try:
        found = probe(dir_fd)
    except OSError as exc:
        degrade(
            "probing the destination",
            f"{path} takes no probe file ({exc.strerror}); nanosecond mtimes, xattrs and "
            "case-sensitive names are assumed",
        )
        return DestinationProbe(max_name_bytes=_namemax(dir_fd))
    log.info("destination: %s", found.summary())
    say_degraded(found, path)
    # Recorded where the rule depends on it (a plain local disk, nanoseconds and xattrs, is
    # left with nothing of ours on it; readers assume that), and only when it changed (a
    # rerun writes nothing): what reads this destination later judges alike.
    if found.mtime_precision_ns != 1 or not found.xattrs or not found.stable_mtime:
        write_record(dir_fd, found)
    return found


def _namemax(dir_fd: int) -> int:
    try:
        return os.fstatvfs(dir_fd).f_namemax or 255
    except OSError:
        return 255
