"""What the resume scan decides of each name (`ScanHandler`), and the helper process that
walks whole subtrees of a split scan (`ScanHelper`).

A scan is two ``fstatat`` a file (the source's and the copy's) and the interpreter's time,
held to one core by the interpreter lock (threads only slow it down). The system calls are
about 55 % of its CPU at a million files (sys 3.4 s, user 2.5-2.7 s with the imports); the
interpreter's share is kept down by deciding a folder's current copies whole
(`ScanHandler.lstat_names`: no object or call a name for them). From
`SPLIT_AFTER_S` into a scan (at once where the watcher found `SPLIT_AT_ONCE_FOLDERS` folders
at the start), where two cores are available, the engine's walk hands a helper
process the shallowest folder still to walk (`march`'s ``share``), takes the next one
itself, and so on until both are done: no work is walked twice, a small tree never starts
the helper, and the helper is held back by a full pipe when the engine is slow to take what
it found (so that a half-copied archive's files to copy are never held all at once).

The helper only reads: what it finds is sent to the engine as effects (queue a file, mirror
a delete, report an error, the acquisition's marker, remove our own temporary file or a
stale marker), which the engine applies as its own walk would, then the counts of the
subtree. A helper that fails (cannot start, dies, answers something unreadable) is logged
once and the subtree in work walked again by the engine: effects already applied are then
applied again, which queues nothing twice.
"""

from __future__ import annotations

import logging
import os
import signal
import stat
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from .destinations import (
    NO_MTIME_NS,
    Destination,
    FileInfo,
    LocalDestination,
    is_copy_of,
    same_version,
)
from .helper_process import HelperProcess, serve, setup_argument
from .layout import METADATA_NAMES, TEMP_ENDINGS, is_metadata_name, is_own_temp_name, is_temp_name
from .march import _CANCEL_EVERY, Folder, MarchHandler, lstat_info, march

if TYPE_CHECKING:
    from .destinations.base import Lstat

log = logging.getLogger("napari_softcopy.engine")  # (the scan is the engine's)

#: A scan that has walked this long starts its helper process: it takes about 0.15 s of CPU
#: to start (the interpreter and the package), which a shorter scan would not win back.
SPLIT_AFTER_S = 0.25
#: A first scan of a source where the watcher found at least this many folders at the start
#: starts its helper at once (not after `SPLIT_AFTER_S`): each folder costs the scan some
#: 20 us besides its files (two opens, two listings), so such a scan takes far longer than
#: the helper's start, and the engine's walk is alone only while the helper starts.
SPLIT_AT_ONCE_FOLDERS = 4096
#: Effects sent in one message by the helper (a few KiB).
_BATCH = 256
#: The effects a helper may ask for: `ScanHandler` methods of the same names.
EFFECTS = frozenset({"queue", "mirror_delete", "error", "marker", "own_temp", "stale_marker"})
_IFMT, _IFREG = 0o170000, stat.S_IFREG


class ScanHandler(MarchHandler):
    """The scan's decision for every name of the walk: count what is already at the
    destination, queue what is missing or stale, notice the latest change.

    Subclasses say what a decision does (the effects: `queue`, `mirror_delete`, `error`,
    `marker`, `own_temp`, `stale_marker`, `root_vanished`): the engine acts, a helper
    process sends them to the engine.
    """

    # (slots: a counter's increment, once a file of a million, costs no dict lookup)
    __slots__ = (
        "bytes_dst",
        "capabilities",
        "chunks_dst",
        "deep",
        "dest",
        "files_dst",
        "initial",
        "marker_name",
        "marker_path",
        "marker_prefix",
        "newest",
        "takes_lstats",
        "temp",
    )

    def __init__(self, dest: Destination, marker: str, *, initial: bool, deep: bool) -> None:
        self.dest = dest
        self.initial = initial
        self.deep = deep
        self.capabilities = dest.capabilities
        self.marker_path = marker
        # (compared by name first: a path is made only for a file that is queued)
        prefix, _, self.marker_name = marker.rpartition("/")
        self.marker_prefix = f"{prefix}/" if prefix else ""
        # (not a deep scan: no stamp is read, so the rule's common case, `same_version`,
        # answers a resume's files, one call instead of three; anything else asks the rule)
        # Where nothing but size and mtime can decide (no stamp read, no record kept, mtimes
        # kept), a folder is decided whole from the destination's plain lstats (`lstat_names`).
        self.takes_lstats = not deep and self.plain_listing_off() is None
        self.temp = self.files_dst = self.bytes_dst = self.chunks_dst = 0
        self.newest = 0  # the latest ctime of a source folder or file: a change events missed?

    def plain_listing_off(self) -> str | None:
        """Why this destination's folders cannot be decided whole from a plain listing
        (`takes_lstats`), so the scan asks the one rule name by name (the same answers,
        slower); None where they can."""
        c = self.capabilities
        if not c.lstat_listing:
            return "the destination offers no plain listing of its folders (object stores do not)"
        if c.records:  # (a copy's record, not its lstat, says whether it is current)
            return "the destination keeps records of its copies (no xattrs or coarse mtimes)"
        if c.mtime_precision_ns >= NO_MTIME_NS:
            return "the destination keeps no mtimes"
        return None

    # -- effects ---------------------------------------------------------------------------
    def queue(self, rel: str, size: int) -> None:
        """``rel`` (``size`` bytes at the source) is missing or stale at the destination."""
        raise NotImplementedError

    def mirror_delete(self, rel: str) -> None:
        """``rel`` is at the destination only: gone at the source."""
        raise NotImplementedError

    def error(self, rel: str, message: str) -> None:
        """Something at ``rel`` cannot be copied; ``message`` says what to do."""
        raise NotImplementedError

    def marker(self) -> None:
        """The acquisition's marker is at the source."""
        raise NotImplementedError

    def own_temp(self, rel: str) -> None:
        """Our own temporary file left by a killed run (at the first scan only)."""
        raise NotImplementedError

    def stale_marker(self, rel: str) -> None:
        """Our marker at the destination (at the first scan only): kept only where the
        source's marker is there too."""
        raise NotImplementedError

    def root_vanished(self) -> None:
        """The source root is gone."""
        raise FileNotFoundError("the source root is gone")

    def counts(self) -> tuple[int, int, int, int, int]:
        """``(temp, files_dst, bytes_dst, chunks_dst, newest)``, for `add_counts`."""
        return self.temp, self.files_dst, self.bytes_dst, self.chunks_dst, self.newest

    def add_counts(self, counts: tuple[int, int, int, int, int]) -> None:
        """Add a subtree's `counts` (walked by a helper) to this walk's."""
        temp, files, size, chunks, newest = counts
        self.temp += temp
        self.files_dst += files
        self.bytes_dst += size
        self.chunks_dst += chunks
        self.newest = max(self.newest, newest)

    # -- the walk's callbacks --------------------------------------------------------------
    def enter(self, folder: Folder) -> None:
        # A folder's ctime moves when a file is created, renamed or deleted in it (a writer's
        # temporary file too); a file's when it is written or renamed.
        self.newest = max(self.newest, os.fstat(folder.fd).st_ctime_ns)

    def folder_error(self, rel: str, exc: OSError) -> None:
        if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
            if not rel:
                self.root_vanished()
            return  # (removed by the writer since its parent was listed)
        if isinstance(exc, PermissionError):
            self.error(rel, "cannot list this folder (permission denied); fix it")
            return
        raise exc

    def src_only(self, folder: Folder, entry: os.DirEntry) -> bool:
        return self.match(folder, entry, None)

    def match(self, folder: Folder, entry: os.DirEntry, info: FileInfo | None) -> bool:
        # (the hot path of a resume: a million calls, most of them for a current copy)
        name = entry.name
        try:
            if entry.is_dir(follow_symlinks=False):
                return True
            if entry.is_symlink():
                self.error(
                    folder.prefix + name, "symbolic link in the source: not followed, not copied"
                )
                return False
            if is_temp_name(name):
                self.temp += 1
                return False
            if name == self.marker_name and folder.prefix == self.marker_prefix:
                self.marker()
                return False
            # (the entry is dropped once handled: its cached stat with it)
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(st.st_mode):
            return False
        if st.st_ctime_ns > self.newest:
            self.newest = st.st_ctime_ns
        if info is not None and info.is_file:
            self.files_dst += 1
            self.bytes_dst += info.size
            self.chunks_dst += name not in METADATA_NAMES  # (`is_metadata_name`, inline)
            if (
                not self.deep
                and info.stamp is None
                and same_version(info, st.st_size, st.st_mtime_ns, self.capabilities)
            ):
                return False
            rel = folder.prefix + name
            read_stamp = partial(self.dest.source_stamp, rel) if self.deep else None
            if is_copy_of(st, info, self.capabilities, read_stamp):
                return False
        self.queue(folder.prefix + name, st.st_size)
        return False

    def lstat_names(
        self,
        folder: Folder,
        entries: Iterable[os.DirEntry],
        dst: dict[str, Lstat],
        cancelled: Callable[[], bool] | None,
    ) -> list[tuple[str, bool]] | None:
        # (the hot loop of a resume: a million names, nearly all of them a current copy)
        # A source regular file whose copy is a regular file of exactly its size and mtime is
        # a copy by the one rule here (`same_version`: no stamp is read, no record kept, see
        # `takes_lstats`): counted, as `match` counts it. Anything else (a folder, a link, a
        # writer's temporary name or one like it, the marker's name, a file missing or
        # different at the destination) goes to `match` / `src_only` as before.
        pop, match, src_only = dst.pop, self.match, self.src_only
        endings, marker_name, metadata = TEMP_ENDINGS, self.marker_name, METADATA_NAMES
        newest = self.newest
        files = size = chunks = 0
        found: list[tuple[str, bool]] = []
        try:
            for n, entry in enumerate(entries, 1):
                if cancelled is not None and not n % _CANCEL_EVERY and cancelled():
                    return None
                name = entry.name
                copy = pop(name, None)
                if copy is not None and not name.endswith(endings) and name != marker_name:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        pass  # (`match` says what a vanished entry is)
                    else:
                        if (
                            st.st_mode & _IFMT == _IFREG
                            and copy[0] & _IFMT == _IFREG
                            and copy[1] == st.st_size
                            and copy[2] == st.st_mtime_ns
                        ):
                            if st.st_ctime_ns > newest:
                                newest = st.st_ctime_ns
                            files += 1
                            size += copy[1]
                            chunks += name not in metadata
                            continue
                if copy is None:
                    if src_only(folder, entry) and entry.is_dir(follow_symlinks=False):
                        found.append((name, False))
                else:
                    info = lstat_info(copy)
                    if match(folder, entry, info) and entry.is_dir(follow_symlinks=False):
                        found.append((name, info.is_dir))
        finally:  # (what was decided here counts, also in a walk cut short)
            self.newest = max(self.newest, newest)
            self.files_dst += files
            self.bytes_dst += size
            self.chunks_dst += chunks
        return found

    def dst_only(self, folder: Folder, name: str, info: FileInfo) -> bool:
        if info.is_dir:
            return False  # (not entered: deletes are mirrored in the folders the source has)
        rel = folder.prefix + name
        if is_own_temp_name(name):
            if self.initial:
                self.own_temp(rel)
            return False
        if rel == self.marker_path:
            if self.initial:
                self.stale_marker(rel)
            return False
        self.files_dst += 1
        self.bytes_dst += info.size
        self.chunks_dst += not is_metadata_name(name)
        self.mirror_delete(rel)
        return False


# ------------------------------------------------------------------- the helper's side
class ScanHelper:
    """The engine's side of a split scan's helper process (see the module's docstring).

    Parameters
    ----------
    source : path
        The source root, as the engine's own walk opens it (by its path: both walk the
        same tree).
    dest : LocalDestination
        The destination (its root descriptor and its probe passed on: the same folder and
        the same capabilities).
    marker : str
        The acquisition's marker (`CopyOptions.marker`).
    initial : bool
        The engine's first scan (own temporary files and a stale marker are reported).
    """

    _MAIN = "from napari_softcopy.scan_walk import _helper_main; _helper_main()"

    def __init__(
        self, source: str | os.PathLike, dest: LocalDestination, marker: str, *, initial: bool
    ) -> None:
        setup = {
            "source": os.fspath(source),
            "destination": dest.helper_setup(),
            "marker": marker,
            "initial": initial,
        }
        self.process = HelperProcess(
            self._MAIN,
            name="scan helper",
            fallback="its part of the scan is walked here",
            setup=setup,
            pass_fds=(dest.fileno(),),
            logger=log,
        )

    def send(self, rel: str) -> bool:
        """Walk the folder ``rel`` and what is in it; False when the helper is gone."""
        return self.process.send(rel)

    def ready(self) -> bool:
        """Whether a part of the answer waits to be read (`receive` returns at once)."""
        return self.process.ready()

    def receive(self, handler: ScanHandler, stop=None) -> bool | None:
        """Read one message and apply its effects through ``handler``: True when the
        subtree is done (its counts added), False when more is coming, None when the helper
        failed or ``stop`` was set (it is then closed)."""
        ok, message = self.process.receive(stop)
        if not ok:
            return None
        try:
            for kind, *args in message["effects"]:
                if kind not in EFFECTS:
                    raise ValueError(f"unknown effect {kind!r}")
                getattr(handler, kind)(*args)
            if "counts" not in message:
                return False
            counts = message["counts"]
            if counts is None:  # (interrupted: by a stop, which the caller sees)
                self.close()
                return None
            handler.add_counts(counts)
        except (TypeError, KeyError, ValueError) as exc:
            self.process.fail(f"unreadable answer: {exc!r}")
            return None
        return True

    def close(self) -> None:
        """End the helper process: killed unless it ends at once (it only reads, so nothing
        is left unfinished; one blocked on a full pipe must not hold up a stop)."""
        self.process.close(timeout=0.2)


class _PartWalk(ScanHandler):
    """The helper's handler: every effect is sent to the engine, a batch at a time."""

    __slots__ = ("batch", "send")

    def __init__(self, dest: Destination, marker: str, *, initial: bool, send) -> None:
        super().__init__(dest, marker, initial=initial, deep=False)
        self.send = send
        self.batch: list[tuple] = []

    def _effect(self, *effect: Any) -> None:
        self.batch.append(effect)
        if len(self.batch) >= _BATCH:
            self.send({"effects": self.batch})
            self.batch = []

    def queue(self, rel: str, size: int) -> None:
        self._effect("queue", rel, size)

    def mirror_delete(self, rel: str) -> None:
        self._effect("mirror_delete", rel)

    def error(self, rel: str, message: str) -> None:
        self._effect("error", rel, message)

    def marker(self) -> None:
        self._effect("marker")

    def own_temp(self, rel: str) -> None:
        self._effect("own_temp", rel)

    def stale_marker(self, rel: str) -> None:
        self._effect("stale_marker", rel)


def _helper_main() -> None:
    """Body of a `ScanHelper` process: each request a folder to walk, each answer the last
    of its effects and its counts (None: the walk was interrupted)."""
    setup = setup_argument()
    dest = LocalDestination.from_helper_setup(setup["destination"], writes=False)
    source = setup["source"]

    def answer(rel: str, stop, send) -> dict:
        walk = _PartWalk(dest, setup["marker"], initial=setup["initial"], send=send)
        whole = march(source, dest, walk, start=rel, cancelled=stop.is_set)
        return {"effects": walk.batch, "counts": walk.counts() if whole else None}

    # (it writes nothing: an orphan is simply killed with its parent)
    serve(answer, parent_death=signal.SIGKILL, stream=True)
