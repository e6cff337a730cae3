"""One walk of two trees at once: a source folder and a `Destination` (rclone's ``fs/march``).

The resume scan, the verification (each part of it) and the chunk map all ask the same
question of every name: is it at the source only, at the destination only, or at both? `march`
walks both trees once, folder by folder, and calls its handler (`MarchHandler`) for each name:
``src_only``, ``dst_only`` or ``match``. The handler's answer decides whether a folder is
entered; what is compared, counted or copied is the handler's business.

Facts the walk depends on
-------------------------
- Folder at a time, by hashed name matching: a folder's destination entries are listed into a
  dict (`Destination.listdir`), then its source entries are read as they are listed and each
  is looked up and popped; what is left is at the destination only. Neither tree is ever held
  whole: at most one folder's destination entries, and (in a part of a split walk) one
  folder's source entries. A folder of a million chunks is read from the source as a stream.
- Links are never followed: source folders are opened below the root's descriptor with
  ``O_NOFOLLOW`` and an entry is a folder only by ``lstat`` (``DirEntry.is_dir(follow_symlinks
  =False)``); the destination follows none either (`Destination.listdir`). A link is passed to
  the handler as the entry it is.
- `STATE_DIR` (``.softcopy``) at the root of either tree is napari-softcopy's own folder, not
  part of the archive (no Zarr key starts with a dot): it is neither compared nor entered, so
  a copy of a copy never carries the first copy's records into the second's.
- A split walk (``keep``): every part enters every source folder, and compares only the names
  ``keep`` accepts. A folder at the destination only is entered by the part whose name it is.
  To know which destination names are source folders before it lists the destination (so
  that it stats only its own share there), such a part lists a source folder before it
  matches it.
- Where the handler decides a folder at both sides whole (`MarchHandler.takes_lstats`: the
  resume scan) and the destination offers a plain listing (`Capabilities.lstat_listing`: a
  folder) and keeps no records, its entries are listed as plain ``lstat`` tuples
  (`Destination.lstats`) and the folder's
  source entries handed to `MarchHandler.lstat_names` in one call: a `FileInfo` is made only
  for a name the handler does not decide there itself (it then calls its own ``match`` or
  ``src_only``), and for what is left at the destination only. The per-name calls and
  objects were a sixth of a resume scan's user-space instructions (28,600 -> 23,600 a file,
  callgrind); its two ``fstatat`` a file, the kernel's, are the rest of its floor.
- A caller may vouch for a folder at both sides (``vouch``: the periodic rescan, for a folder
  proven during the copy and unchanged since): its own names are then not handed to the
  handler, and only the subfolders ``vouch`` names are walked, as at both sides (a
  destination folder that is gone lists as empty: its source files are then source-only).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from .destinations import STATE_DIR, FileInfo

if TYPE_CHECKING:
    from .destinations import Destination
    from .destinations.base import Lstat

__all__ = ["Folder", "MarchHandler", "is_private", "lstat_info", "march"]

#: The source root as the user named it (a link to it is followed, as ``cp -r`` does).
_ROOT_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
#: Every folder below it: never through a link.
_DIR_FLAGS = _ROOT_FLAGS | os.O_NOFOLLOW
#: Source entries read between two asks of ``cancelled`` (a folder may hold a million).
_CANCEL_EVERY = 1000
_PRIVATE_PREFIX = STATE_DIR + "/"


def lstat_info(st: Lstat) -> FileInfo:
    """The `FileInfo` of a destination entry listed as an `Lstat` (`Destination.lstats`)."""
    mode, size, mtime_ns = st
    return FileInfo(stat.S_ISDIR(mode), stat.S_ISREG(mode), size, mtime_ns)


def is_private(rel: str) -> bool:
    """Whether the path ``rel`` is in `STATE_DIR` at the root: napari-softcopy's own, not
    part of the archive (the walk skips it; a file event there is no hint either)."""
    return rel.startswith(_PRIVATE_PREFIX) or rel == STATE_DIR


class Folder:
    """The folder being walked, as the handler's callbacks see it.

    Attributes
    ----------
    rel : str
        Its path below the roots, ``/``-separated (``""``: the root).
    prefix : str
        What makes an entry's name its path: ``rel + "/"`` (``""`` at the root).
    fd : int or None
        The source folder's descriptor, open while its entries are handled (None: the folder
        is at the destination only). Stat an entry by name through it (`lstat`), not through
        its ``DirEntry``: an entry keeps its stat result, a part's listed folder keeps its
        entries (50,000 files: 65 -> 40 MiB).
    """

    __slots__ = ("fd", "prefix", "rel")

    def __init__(self, rel: str, fd: int | None) -> None:
        self.rel = rel
        self.prefix = f"{rel}/" if rel else ""
        self.fd = fd

    def lstat(self, name: str) -> os.stat_result:
        """The source entry ``name`` of this folder (links not followed)."""
        return os.stat(name, dir_fd=self.fd, follow_symlinks=False)


class MarchHandler:
    """What `march` calls for each name; a folder is entered when the call returns True.

    Override the three name callbacks (rclone's ``SrcOnly``/``DstOnly``/``Match``); `enter`
    and `folder_error` have defaults. A callback's ``entry`` is the source's ``os.DirEntry``
    (a folder: ``entry.is_dir(follow_symlinks=False)``), ``info`` the destination's
    `FileInfo`. Returning True for anything but a folder changes nothing.
    """

    __slots__ = ()  # (a handler with slots of its own has no instance dict)

    #: True where the handler decides a folder at both sides whole from the destination's
    #: plain ``lstat`` tuples (`lstat_names`); `march` then uses them where it can.
    takes_lstats = False

    def src_only(self, folder: Folder, entry: os.DirEntry) -> bool:
        """``entry`` is at the source only. Return True to enter it (a folder)."""
        raise NotImplementedError

    def dst_only(self, folder: Folder, name: str, info: FileInfo) -> bool:
        """``name`` is at the destination only. Return True to enter it (a folder): its
        whole content is then passed to `dst_only` as well."""
        raise NotImplementedError

    def match(self, folder: Folder, entry: os.DirEntry, info: FileInfo) -> bool:
        """``entry`` is at both (of any kinds: a file at one, a folder at the other). Return
        True to enter it (a source folder; its content is matched with the destination's
        only where ``info`` is a folder too)."""
        raise NotImplementedError

    def lstat_names(
        self,
        folder: Folder,
        entries: Iterable[os.DirEntry],
        dst: dict[str, Lstat],
        cancelled: Callable[[], bool] | None,
    ) -> list[tuple[str, bool]] | None:
        """Every source entry of ``folder`` (below the root, at both sides), ``dst`` its
        destination entries as `Lstat` tuples (`Destination.lstats`), when
        `takes_lstats`. Pop each source name's entry from ``dst`` (what is left is handed to
        `dst_only`); a name not decided here goes to `match` (its `lstat_info`) or
        `src_only` as one at a time would. Return the subfolders to enter, each ``(name,
        at the destination too)``, or None when ``cancelled()`` turned true (asked every
        1,000 entries)."""
        raise NotImplementedError

    def enter(self, folder: Folder) -> None:
        """A source folder was opened (``folder.fd``), before any of its names is handled."""

    def folder_error(self, rel: str, exc: OSError) -> None:
        """The folder ``rel`` could not be opened or listed, on either side (the source root
        too: then nothing is walked), or a callback raised ``exc`` while handling its names:
        the rest of it is skipped. Raise to end the walk; by default, ``exc`` is raised."""
        raise exc


def march(
    source: str | os.PathLike | None,
    dest: Destination | None,
    handler: MarchHandler,
    *,
    start: str = "",
    keep: Callable[[str], bool] | None = None,
    stamps: bool = False,
    cancelled: Callable[[], bool] | None = None,
    share: Callable[[list[tuple[str, bool, bool]]], None] | None = None,
    vouch: Callable[[str], tuple[str, ...] | None] | None = None,
) -> bool:
    """Walk ``source`` and ``dest`` together, calling ``handler`` for every name.

    Parameters
    ----------
    source : path or None
        The source root (None: there is no source tree, every name is at the destination
        only). Opened once, as named; every folder below it without following a link.
    dest : Destination or None
        The destination (None: it does not exist, every name is at the source only).
    handler : MarchHandler
        Called for every name; decides which folders are entered.
    start : str
        Walk only the folder ``start`` (``/``-separated, below both roots) and what is in it.
    keep : callable, optional
        A part of a split walk: only the files and destination-only folders whose name
        ``keep(name)`` accepts are handled (source folders always are, in every part).
    stamps : bool
        Read each destination file's recorded source stamp with its listing
        (`FileInfo.stamp`), in the folders at both sides (elsewhere it decides nothing).
    cancelled : callable, optional
        Asked before each folder and every 1,000 source entries; True ends the walk.
    share : callable, optional
        Called before each folder with the folders still to walk, ``(rel, at the source, at
        the destination)``, the next one last. It may take entries out (the first ones are
        the shallowest: whole subtrees), which this walk then leaves to whoever took them
        (another process walking each with ``start``: a split resume scan).
    vouch : callable, optional
        Asked before each folder at both sides: None walks it; the names of its subfolders
        mean the caller vouches for its own names, which are not handed to the handler (nor
        `MarchHandler.enter` called), and only those subfolders are walked.

    Returns
    -------
    bool
        True when the walk went through both trees, False when ``cancelled`` ended it.

    Raises
    ------
    Exception
        What the handler raises (`MarchHandler.folder_error` raises the ``OSError`` it is
        given by default: the source root that cannot be opened, too).
    """
    root_fd = None
    if source is not None:
        try:
            root_fd = os.open(source, _ROOT_FLAGS)
        except OSError as exc:
            handler.folder_error(start, exc)
            return True  # (nothing to walk: the handler has said so)
    try:
        walk = _March(root_fd, dest, handler, keep, stamps, cancelled, share, vouch)
        if (
            handler.takes_lstats
            and not stamps
            and keep is None
            and dest is not None
            and dest.capabilities.lstat_listing
            and not dest.capabilities.records  # (records decide there: `copy_difference`)
        ):
            walk.lstats = dest.lstats
        return walk.run(start, source_there=root_fd is not None, dest_there=dest is not None)
    finally:
        if root_fd is not None:
            os.close(root_fd)


class _March:
    """One `march`: a stack of folders still to walk, each walked by `_folder`."""

    def __init__(
        self,
        root_fd: int | None,
        dest: Destination | None,
        handler: MarchHandler,
        keep: Callable[[str], bool] | None,
        stamps: bool,
        cancelled: Callable[[], bool] | None,
        share: Callable[[list[tuple[str, bool, bool]]], None] | None = None,
        vouch: Callable[[str], tuple[str, ...] | None] | None = None,
    ) -> None:
        self.root_fd = root_fd
        self.dest = dest
        self.handler = handler
        self.keep = keep
        self.stamps = stamps
        self.cancelled = cancelled
        self.share = share
        self.vouch = vouch
        # (rel, at the source, at the destination): depth first, as each folder is found
        self.stack: list[tuple[str, bool, bool]] = []
        #: The destination's plain listing where the handler takes folders whole (`march`).
        self.lstats: Callable[[str, Callable[[], bool] | None], dict | None] | None = None

    def run(self, start: str, *, source_there: bool, dest_there: bool) -> bool:
        self.stack.append((start, source_there, dest_there))
        cancelled, share, stack, vouch = self.cancelled, self.share, self.stack, self.vouch
        while stack:
            if cancelled is not None and cancelled():
                return False
            if share is not None:
                share(stack)
                if not stack:
                    break
            rel, at_source, at_dest = stack.pop()
            if vouch is not None and at_source and at_dest:
                subfolders = vouch(rel)
                if subfolders is not None:  # (its names vouched for: only its subfolders)
                    prefix = f"{rel}/" if rel else ""
                    stack.extend((prefix + name, True, True) for name in subfolders)
                    continue
            if not self._folder(rel, at_source, at_dest):
                return False
        return True

    def _folder(self, rel: str, at_source: bool, at_dest: bool) -> bool:
        """Walk the folder ``rel``; False when cancelled."""
        handler = self.handler
        fd = None
        if at_source:
            try:
                fd = os.open(rel or ".", _DIR_FLAGS, dir_fd=self.root_fd)
            except OSError as exc:
                handler.folder_error(rel, exc)
                return True
        try:
            folder = Folder(rel, fd)
            if fd is not None:
                handler.enter(folder)
            return self._names(folder, at_dest)
        except OSError as exc:
            handler.folder_error(rel, exc)
            return True
        finally:
            if fd is not None:
                os.close(fd)  # (the handler stats through it: closed only now)

    def _names(self, folder: Folder, at_dest: bool) -> bool:
        """Hand every name of ``folder`` to the handler; False when cancelled."""
        rel, fd, keep = folder.rel, folder.fd, self.keep
        listdir = None if not at_dest or self.dest is None else self.dest.listdir
        if fd is None:  # the destination's only: its whole content is that part's
            dst = listdir(rel, self.cancelled) if listdir else {}  # (no stamp to compare)
            if dst is None:
                return False
            self._dst_only(folder, dst)
            return True
        if self.lstats is not None and at_dest and rel:  # (the root: `_src` skips our folder)
            return self._lstat_names(folder)
        if keep is None:
            # The source is read as it is listed: a folder of a million chunks is never
            # held in memory as a list (the destination's side is: one dict).
            dst = listdir(rel, self.cancelled, stamps=self.stamps) if listdir else {}
            if dst is None:
                return False
            with os.scandir(fd) as it:
                if not self._src(folder, it, dst):
                    return False
        else:
            # A part keeps only the entries it looks at: its own names, and every source
            # folder with what stands at the destination in its place.
            with os.scandir(fd) as it:
                entries = [e for e in it if e.is_dir(follow_symlinks=False) or keep(e.name)]
            dst = {}
            if listdir is not None:
                folders = {e.name for e in entries if e.is_dir(follow_symlinks=False)}
                dst = listdir(
                    rel,
                    self.cancelled,
                    keep=lambda n: n in folders or keep(n),
                    stamps=self.stamps,
                )
                if dst is None:
                    return False
            if not self._src(folder, entries, dst):
                return False
        self._dst_only(folder, dst)
        return True

    def _lstat_names(self, folder: Folder) -> bool:
        """`_names` where the handler takes the folder whole (`MarchHandler.lstat_names`)."""
        dst = self.lstats(folder.rel, self.cancelled)
        if dst is None:
            return False
        with os.scandir(folder.fd) as it:
            found = self.handler.lstat_names(folder, it, dst, self.cancelled)
        if found is None:
            return False
        prefix, push = folder.prefix, self.stack.append
        for name, at_dest in found:
            push((prefix + name, True, at_dest))
        if dst:
            self._dst_only(folder, {name: lstat_info(st) for name, st in dst.items()})
        return True

    def _src(self, folder: Folder, entries, dst: dict[str, FileInfo]) -> bool:
        """Hand the source ``entries`` of ``folder`` to the handler, popping each one's
        destination entry from ``dst``; False when cancelled."""
        handler, cancelled, push = self.handler, self.cancelled, self.stack.append
        src_only, match = handler.src_only, handler.match
        prefix, at_root, asks = folder.prefix, not folder.rel, cancelled is not None
        for n, entry in enumerate(entries, 1):  # (the hot loop: a million entries a folder)
            if asks and not n % _CANCEL_EVERY and cancelled():
                return False
            name = entry.name
            info = dst.pop(name, None)
            if at_root and name == STATE_DIR:
                continue
            if info is None:
                if src_only(folder, entry) and entry.is_dir(follow_symlinks=False):
                    push((prefix + name, True, False))
            elif match(folder, entry, info) and entry.is_dir(follow_symlinks=False):
                push((prefix + name, True, info.is_dir))
        return True

    def _dst_only(self, folder: Folder, dst: dict[str, FileInfo]) -> None:
        """Hand what is left in ``dst`` (at the destination only) to the handler."""
        dst_only, push, prefix = self.handler.dst_only, self.stack.append, folder.prefix
        at_root = not folder.rel
        for name, info in dst.items():
            if at_root and name == STATE_DIR:
                continue
            if dst_only(folder, name, info) and info.is_dir:
                push((prefix + name, False, True))
