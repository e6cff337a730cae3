"""Opening a path below a destination root in one call, never through a symbolic link.

`LocalDestination` reaches nothing outside its root: a folder was opened one name at a time
(`platform.open_folder_below`), each with ``O_NOFOLLOW``. On a network mount every one of
those opens is a round trip (sshfs sends an SFTP ``OPENDIR`` and ``CLOSE`` for each folder),
so reading back a chunk four folders deep cost six round trips before its first byte.
Linux 5.6's ``openat2`` walks the whole path in the kernel, through its cache of names, with
the same guarantees (``RESOLVE_BENEATH``: nothing outside the root; ``RESOLVE_NO_SYMLINKS``:
a link anywhere on the way is refused with ELOOP, as ``O_NOFOLLOW`` did). Where the kernel
has no ``openat2`` (ENOSYS) or a sandbox refuses it (EPERM), the walk one name at a time is
used, said once (`platform.degrade`).
"""

from __future__ import annotations

import ctypes
import errno
import os

from ..platform import DIR_FLAGS, IS_LINUX, degrade, open_folder_below

#: ``openat2``'s number: the same on every Linux architecture (the generic syscall table).
_NR_OPENAT2 = 437
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True) if IS_LINUX else None
_usable = _libc is not None and hasattr(_libc, "syscall")


def _openat2(dir_fd: int, rel: str, flags: int, mode: int = 0) -> int | None:
    """``openat2`` beneath ``dir_fd`` with no symbolic link followed; None where the kernel
    cannot (then never tried again)."""
    global _usable
    if not _usable:
        return None
    how = _OpenHow(flags | os.O_CLOEXEC, mode, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS)
    path = os.fsencode(rel)
    while True:
        fd = _libc.syscall(  # (ctypes lets go of the interpreter lock while it waits)
            ctypes.c_long(_NR_OPENAT2),
            ctypes.c_int(dir_fd),
            ctypes.c_char_p(path),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err != errno.EINTR:  # (a signal during an open on a network mount: try again,
            break  # as os.open does by itself since PEP 475)
    if err in (errno.ENOSYS, errno.EPERM, errno.E2BIG):
        _usable = False
        degrade(
            "one-call path resolution at the destination",
            f"openat2 is refused here ({errno.errorcode.get(err, err)}); folders are opened "
            "one name at a time (a round trip each on a network mount)",
        )
        return None
    raise OSError(err, os.strerror(err), rel)


def open_dir_beneath(root_fd: int, rel_dir: str) -> int:
    """A descriptor of the folder ``rel_dir`` (``""``: the root) below ``root_fd``, reached
    without following a symbolic link (one on the way: OSError ELOOP or ENOTDIR)."""
    fd = _openat2(root_fd, rel_dir or ".", DIR_FLAGS)
    return open_folder_below(root_fd, rel_dir) if fd is None else fd


def open_file_beneath(root_fd: int, rel: str, flags: int = os.O_RDONLY) -> int:
    """Open the file ``rel`` below ``root_fd`` with ``flags``, no symbolic link followed on
    the way or at the end (OSError ELOOP)."""
    fd = _openat2(root_fd, rel, flags | os.O_NOFOLLOW)
    if fd is not None:
        return fd
    parent, _, name = rel.rpartition("/")
    dir_fd = open_folder_below(root_fd, parent)
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
