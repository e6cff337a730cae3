"""The destination root, reached only through one open directory descriptor.

A network mount that drops leaves an empty local mount point at the same path; filling the
local disk there is the classic disaster. Every operation here is relative to the directory
fd opened at start, so it keeps acting on the filesystem that was mounted then (or fails), and
`Destination.check` notices when the path no longer leads to it.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .layout import OWN_TEMP_SUFFIX
from .platform import get_xattr, syncfs

#: Extended attribute on every copied file: the source file's inode number and inode change
#: time (ctime) when it was copied. A rewrite that puts size and mtime back (``os.utime``)
#: still changes the ctime, which no user call can set; so resume sees it.
SOURCE_STAMP = "user.softcopy.source"


def source_stamp(st: os.stat_result) -> bytes:
    """The stamp of a source file: ``b"<inode>:<ctime ns>"``."""
    return f"{st.st_ino}:{st.st_ctime_ns}".encode()


def copied_from_another_version(recorded: bytes | None, st: os.stat_result) -> bool:
    """True when a copy's ``recorded`` stamp names another version of the source file than
    ``st`` describes: it was rewritten after the copy, even with its size and mtime put back.
    No stamp recorded (or no extended attributes at the destination): False."""
    return recorded is not None and recorded != source_stamp(st)


class DestinationChanged(OSError):
    """The destination path no longer leads to the directory the copy started in."""


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What the engine needs to know about one directory entry."""

    is_dir: bool
    is_file: bool
    size: int
    mtime_ns: int


class Destination:
    """Operations below a destination root, all relative to one directory fd.

    Parameters
    ----------
    root : path
        Destination root; created (one level only) when missing.
    fd : int, optional
        The root, already open (another process's, passed on): used instead of opening
        ``root``, which then only names it in messages. Closed by `close`.
    """

    def __init__(self, root: str | os.PathLike, *, fd: int | None = None) -> None:
        self.path = Path(root)
        if fd is None:
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.path)
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.fd = fd
        st = os.fstat(self.fd)
        self.identity = (st.st_dev, st.st_ino)
        self._known_dirs: set[str] = {""}
        #: False once the filesystem refused an extended attribute (no stamps then).
        self.stamps = True
        # Temporary names: a random part drawn once (unique across runs and processes) and a
        # counter (unique within this one), instead of a getrandom call per file.
        self._temp_prefix = secrets.token_hex(4)
        self._temp_counter = itertools.count()

    def close(self) -> None:
        """Close the root descriptor."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

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

    # -- reading -------------------------------------------------------------------------
    def stat(self, rel: str) -> os.stat_result | None:
        """lstat of ``rel``, or None when it does not exist."""
        try:
            return os.stat(rel, dir_fd=self.fd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _open_dir(self, rel_dir: str) -> int:
        """Open the folder ``rel_dir`` below the root, following no symbolic link on the way
        (a link there raises OSError ELOOP or ENOTDIR): nothing outside the root is reached."""
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(".", flags, dir_fd=self.fd)
        try:
            for part in rel_dir.split("/") if rel_dir else ():
                child = os.open(part, flags, dir_fd=fd)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def listdir(
        self, rel_dir: str, cancelled: Callable[[], bool] | None = None
    ) -> dict[str, FileInfo] | None:
        """Entries of the directory ``rel_dir`` (empty when it does not exist or is reached
        only through a symbolic link); None when ``cancelled()`` turned true meanwhile (it is
        asked every 1,000 entries: one folder may hold a million)."""
        try:
            fd = self._open_dir(rel_dir)
        except (FileNotFoundError, NotADirectoryError):
            return {}
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return {}
            raise
        out: dict[str, FileInfo] = {}
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    if cancelled is not None and len(out) % 1000 == 999 and cancelled():
                        return None
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    out[entry.name] = FileInfo(
                        stat.S_ISDIR(st.st_mode),
                        stat.S_ISREG(st.st_mode),
                        st.st_size,
                        st.st_mtime_ns,
                    )
        finally:
            os.close(fd)
        return out

    def holds_copy_of(self, rel: str, copy: os.stat_result | None, st: os.stat_result) -> bool:
        """True when ``copy`` (the lstat of ``rel`` here, None if absent) is a copy of the
        source file ``st`` describes: same size and mtime, and no stamp of another version
        of it recorded."""
        return (
            copy is not None
            and copy.st_size == st.st_size
            and copy.st_mtime_ns == st.st_mtime_ns
            and not copied_from_another_version(self.source_stamp(rel), st)
        )

    def source_stamp(self, rel: str) -> bytes | None:
        """The `SOURCE_STAMP` recorded on ``rel`` when it was copied (None: none recorded)."""
        if not self.stamps:
            return None
        return get_xattr(rel, SOURCE_STAMP, dir_fd=self.fd)

    def open_read(self, rel: str) -> int:
        """Open ``rel`` for reading (no symlinks followed)."""
        return os.open(rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd)

    # -- writing -------------------------------------------------------------------------
    def makedirs(self, rel_dir: str) -> None:
        """Create ``rel_dir`` and its parents below the root."""
        if rel_dir in self._known_dirs:
            return
        parent = rel_dir.rpartition("/")[0]
        if parent not in self._known_dirs:
            self.makedirs(parent)
        try:
            os.mkdir(rel_dir, dir_fd=self.fd)
        except FileExistsError:
            st = os.stat(rel_dir, dir_fd=self.fd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):  # never write through a link to elsewhere
                raise DestinationChanged(
                    errno.ENOTDIR,
                    f"destination {self.path / rel_dir} is a symbolic link or a file where "
                    "the archive has a folder; links are not followed. Remove it and run the "
                    "same command again",
                ) from None
        if len(self._known_dirs) > 100_000:  # bounded memory on huge trees
            self._known_dirs = {""}
        self._known_dirs.add(rel_dir)

    def open_temp(self, rel: str) -> tuple[int, str]:
        """Create a fresh temporary file beside ``rel``; return ``(fd, temp_rel)``."""
        parent, _, name = rel.rpartition("/")
        self.makedirs(parent)
        temp_name = f".{name}.{self._temp_prefix}{next(self._temp_counter):x}{OWN_TEMP_SUFFIX}"
        temp_rel = f"{parent}/{temp_name}" if parent else temp_name
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(temp_rel, flags, 0o644, dir_fd=self.fd)
        except FileNotFoundError:
            self._known_dirs.discard(parent)  # removed behind our back: create it again
            self.makedirs(parent)
            fd = os.open(temp_rel, flags, 0o644, dir_fd=self.fd)
        return fd, temp_rel

    def commit(self, temp_rel: str, rel: str) -> None:
        """Atomically rename a finished temporary file to its final name."""
        os.rename(temp_rel, rel, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def unlink(self, rel: str) -> bool:
        """Remove a file; False when it was not there (or is reached only through a link)."""
        parent, _, name = rel.rpartition("/")
        try:
            fd = self._open_dir(parent)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return False
            raise
        try:
            os.unlink(name, dir_fd=fd)
            return True
        except FileNotFoundError:
            return False
        finally:
            os.close(fd)

    def fsync_dir(self, rel_dir: str = "") -> None:
        """Make the directory entries of ``rel_dir`` durable."""
        fd = self._open_dir(rel_dir)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def flush(self) -> None:
        """Make everything written to the destination filesystem durable."""
        syncfs(self.fd)
        self.fsync_dir()
