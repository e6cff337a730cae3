"""The folders below a local destination root, reached through its one open descriptor:
opened without following a link on the way, listed (each entry a `FileInfo`), created with
their parents, made durable (the folder side of `local.LocalDestination`)."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

from ..platform import IS_LINUX, get_xattr
from .base import SOURCE_STAMP, STATE_DIR, DestinationChanged, FileInfo, Lstat
from .beneath import open_dir_beneath
from .records import SourceRecords

#: Folders remembered as existing: about 150 bytes each; the folders being written are few.
KNOWN_FOLDERS = 1024


class Folders:
    """The folders below the root ``root_fd`` (not closed here), named ``path`` in messages."""

    def __init__(self, root_fd: int, path: Path) -> None:
        self.root_fd = root_fd
        self.path = path
        self._known: set[str] = {""}

    def open(self, rel_dir: str) -> int:
        """Open the folder ``rel_dir`` below the root, following no symbolic link on the way
        (a link there raises OSError ELOOP or ENOTDIR): nothing outside the root is reached.
        One call, not one per folder on the way (`beneath`: a round trip each on a share)."""
        return open_dir_beneath(self.root_fd, rel_dir)

    def names_in(self, rel_dir: str) -> list[str]:
        """The names in the folder ``rel_dir`` (none where it does not exist)."""
        try:
            fd = self.open(rel_dir)
        except OSError:
            return []
        try:
            return os.listdir(fd)
        finally:
            os.close(fd)

    def entries(
        self,
        rel_dir: str,
        cancelled: Callable[[], bool] | None,
        *,
        keep: Callable[[str], bool] | None,
        stamps: bool,
        records: SourceRecords | None,
    ) -> dict[str, FileInfo] | None:
        """`LocalDestination.listdir`: each entry of ``rel_dir`` but our state folder, with
        its recorded source stamp where ``stamps`` and its record where ``records`` are given
        (None: the destination keeps none)."""
        fd = self._open_listed(rel_dir)
        if fd is None:
            return {}
        folder_records = records.get(rel_dir) if records is not None else None
        if keep is None and not stamps and not folder_records:
            return _lstats(fd, rel_dir, cancelled, as_info=True)
        in_dir = f"/proc/self/fd/{fd}/" if IS_LINUX else None
        out: dict[str, FileInfo] = {}
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    if cancelled is not None and len(out) % 1000 == 999 and cancelled():
                        return None
                    name = entry.name
                    if keep is not None and not keep(name):
                        continue
                    if not rel_dir and name == STATE_DIR:
                        continue  # (ours, not part of the copy)
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    is_file = stat.S_ISREG(st.st_mode)
                    stamp = None
                    if stamps and is_file:
                        stamp = (
                            get_xattr(in_dir + name, SOURCE_STAMP)
                            if in_dir is not None
                            else get_xattr(name, SOURCE_STAMP, dir_fd=fd)
                        )
                    record = None
                    if folder_records and is_file:
                        record = records.trusted(folder_records.get(name), st.st_mtime_ns)
                    out[name] = FileInfo(
                        stat.S_ISDIR(st.st_mode), is_file, st.st_size, st.st_mtime_ns, stamp, record
                    )
        finally:
            os.close(fd)
        return out

    def lstats(self, rel_dir: str, cancelled: Callable[[], bool] | None) -> dict[str, Lstat] | None:
        """`LocalDestination.lstats`: each entry of ``rel_dir`` but our state folder as its
        `Lstat` (empty where the folder does not exist or is reached through a link; None
        when ``cancelled()`` turned true, asked every 1,000 entries)."""
        fd = self._open_listed(rel_dir)
        return {} if fd is None else _lstats(fd, rel_dir, cancelled)

    def _open_listed(self, rel_dir: str) -> int | None:
        """``rel_dir`` opened to be listed; None where it does not exist or is reached only
        through a link (listed as empty)."""
        try:
            return self.open(rel_dir)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return None
            raise

    def make(self, rel_dir: str) -> None:
        """Create ``rel_dir`` and its parents below the root."""
        if rel_dir in self._known:
            return
        parent = rel_dir.rpartition("/")[0]
        if parent not in self._known:
            self.make(parent)
        try:
            os.mkdir(rel_dir, dir_fd=self.root_fd)
        except FileExistsError:
            st = os.stat(rel_dir, dir_fd=self.root_fd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):  # never write through a link to elsewhere
                raise DestinationChanged(
                    errno.ENOTDIR,
                    f"destination {self.path / rel_dir} is a symbolic link or a file where "
                    "the archive has a folder; links are not followed. Remove it and run the "
                    "same command again",
                ) from None
        # Bounded memory on huge trees: a folder forgotten costs one mkdir (EEXIST) and one
        # stat again.
        if len(self._known) > KNOWN_FOLDERS:
            self._known = {""}
        self._known.add(rel_dir)

    def forget(self, rel_dir: str) -> None:
        """``rel_dir`` was removed behind our back: the next `make` creates it again."""
        self._known.discard(rel_dir)

    def fsync(self, rel_dir: str = "") -> None:
        """Make the directory entries of ``rel_dir`` durable."""
        fd = self.open(rel_dir)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _lstats(fd: int, rel_dir: str, cancelled, *, as_info: bool = False) -> dict | None:
    """The entries of the open folder ``fd`` (closed here) but our state folder, each as its
    `Lstat`, or with ``as_info`` its `FileInfo` (`Folders.entries` where only each entry's
    lstat is wanted; made in the loop: made from the tuples after, 100,000 entries took
    0.35-0.39 s of CPU against 0.33); None when ``cancelled()`` turned true (asked every
    1,000 entries)."""
    out: dict = {}
    is_dir, is_reg = stat.S_ISDIR, stat.S_ISREG
    n = 0
    try:
        with os.scandir(fd) as it:
            for entry in it:
                n += 1
                if cancelled is not None and not n % 1000 and cancelled():
                    return None
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                mode = st.st_mode
                if as_info:
                    out[entry.name] = FileInfo(
                        is_dir(mode), is_reg(mode), st.st_size, st.st_mtime_ns
                    )
                else:
                    out[entry.name] = (mode, st.st_size, st.st_mtime_ns)
    finally:
        os.close(fd)
    if not rel_dir:
        out.pop(STATE_DIR, None)  # (ours, not part of the copy)
    return out
