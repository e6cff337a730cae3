"""The folders below a local destination root, reached through its one open descriptor:
opened without following a link on the way, listed, created with their parents, made
durable (the folder side of `local.LocalDestination`)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .base import DestinationChanged
from .beneath import open_dir_beneath

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
