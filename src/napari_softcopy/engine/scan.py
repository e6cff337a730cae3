"""The resume scan: walk the source against the destination once (`march.march`), queue what
is missing or stale, count what is already there, and notice changes that events missed."""

from __future__ import annotations

import logging
import os
import stat
import time
from functools import partial

from ..checks import free_space_warning
from ..destinations import NO_MTIME_NS, FileInfo, is_copy_of
from ..layout import METADATA_NAMES, is_metadata_name, is_own_temp_name, is_temp_name
from ..march import Folder, MarchHandler, march
from .state import EngineState, _Fatal

log = logging.getLogger(__package__)  # (one logger for the engine, as before the split)


class Scan(EngineState):
    """The whole-tree scan (at start, periodic, on lost events, deep after a failed
    verification)."""

    def _scan(self, *, initial: bool = False, deep: bool = False) -> None:
        """Walk the source; queue every file whose destination copy is missing or stale.

        At the first scan also remove our own temporary files left by a killed run, and count
        what is already at the destination (resume). Only a ``deep`` scan (when verification
        found more problems than it lists) also compares the source stamp recorded on files
        whose size and mtime match: three system calls a file, which would double the scan
        that resumes a copy of a million files. Other scans leave a rewrite with its size and
        mtime put back to verification, which compares every stamp before "verified".
        """
        t0 = time.monotonic()
        walk = _ScanWalk(self, initial=initial, deep=deep)
        # A periodic scan gives way to a finish, whose verification walks everything again
        # anyway: on a large archive the scan running at the marker would delay it.
        periodic = not (initial or deep)
        stop = self._stop

        def cancelled() -> bool:  # (a finish that waits for quiet wants this scan whole)
            return stop.is_set() or (
                periodic and self._finish_reason is not None and not self._finish_needs_quiet()
            )

        if not march(self._src, self._dest, walk, cancelled=cancelled):
            return  # cut short: keep the counts of the last whole scan
        self._scanned_changes(walk.newest, t0)
        with self._lock:
            c = self._counters
            c.scans += 1
            c.last_scan_s = time.monotonic() - t0
            c.temp_files = walk.temp
            c.files_at_destination = walk.files_dst
            c.bytes_at_destination = walk.bytes_dst
            c.chunks_at_destination = walk.chunks_dst
            self._arrays_dirty = True

    def _scanned_changes(self, newest_ctime_ns: int, started: float) -> None:
        """Count, as a change at the source, a ctime newer than any a whole scan found
        before, unless an event already told of it (see `SourceActivity.note`): events are
        lost on an overflow, or not given beyond the inotify watch limit. Also record when
        the last whole scan began: a requested finish waits for one after the last change."""
        if newest_ctime_ns > self._newest_ctime_ns:
            self._newest_ctime_ns = newest_ctime_ns
            # The file's clock to ours. (On a network source with a skewed clock a change
            # may be dated wrongly: one in the future counts as now; events do not depend
            # on it.)
            age = max(0.0, time.time() - newest_ctime_ns / 1e9)
            self._activity.note(time.monotonic() - age)
        self._last_scan_started = started


class _ScanWalk(MarchHandler):
    """One scan's handler of the walk: what it counts, queues and notices."""

    # (slots: a counter's increment, once a file of a million, costs no dict lookup)
    __slots__ = (
        "bytes_dst",
        "capabilities",
        "chunks_dst",
        "deep",
        "dest",
        "engine",
        "files_dst",
        "free",
        "initial",
        "marker",
        "marker_name",
        "marker_prefix",
        "newest",
        "same_is_copy",
        "temp",
        "to_copy",
    )

    def __init__(self, engine: Scan, *, initial: bool, deep: bool) -> None:
        self.engine = engine
        self.initial = initial
        self.deep = deep
        dest = engine._dest
        self.dest = dest
        self.capabilities = dest.capabilities
        self.marker = engine.options.marker
        # (compared by name first: a path is made only for a file that is queued)
        prefix, _, self.marker_name = self.marker.rpartition("/")
        self.marker_prefix = f"{prefix}/" if prefix else ""
        # Where the one rule (`is_copy_of`) is sure to call a file with the source's size
        # and exact mtime a copy (mtimes kept, no stamp read: not a deep scan), that common
        # case of a resume is answered here, one call instead of three; anything else asks
        # the rule.
        self.same_is_copy = not deep and self.capabilities.mtime_precision_ns < NO_MTIME_NS
        self.temp = self.files_dst = self.bytes_dst = self.chunks_dst = 0
        self.to_copy = 0
        self.newest = 0  # the latest ctime of a source folder or file: a change events missed?
        # At the first scan, warn as soon as more is found to copy than the destination has
        # free: before it fills up, not after the scan of a huge tree.
        self.free = dest.free_space() if initial else None

    def enter(self, folder: Folder) -> None:
        # A folder's ctime moves when a file is created, renamed or deleted in it (a writer's
        # temporary file too); a file's when it is written or renamed.
        self.newest = max(self.newest, os.fstat(folder.fd).st_ctime_ns)

    def folder_error(self, rel: str, exc: OSError) -> None:
        engine = self.engine
        if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
            if not rel:
                raise _Fatal(
                    f"source {engine.source} vanished; the destination {engine.destination} "
                    "is kept intact. Restore the source and run the same command again"
                ) from None
            return  # (removed by the writer since its parent was listed)
        if isinstance(exc, PermissionError):
            engine._error(rel, "cannot list this folder (permission denied); fix it")
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
                self.engine._error(
                    folder.prefix + name, "symbolic link in the source: not followed, not copied"
                )
                return False
            if is_temp_name(name):
                self.temp += 1
                return False
            if name == self.marker_name and folder.prefix == self.marker_prefix:
                if not self.engine._marker_seen:
                    self.engine._on_marker()
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
                self.same_is_copy
                and info.size == st.st_size
                and info.mtime_ns == st.st_mtime_ns
                and info.record is None
                and info.stamp is None
            ):
                return False
            rel = folder.prefix + name
            read_stamp = partial(self.dest.source_stamp, rel) if self.deep else None
            if is_copy_of(st, info, self.capabilities, read_stamp):
                return False
        engine = self.engine
        rel = folder.prefix + name
        self.to_copy += st.st_size
        if self.free is not None and self.to_copy > self.free:
            self.free = None
            warning = free_space_warning(engine.destination, self.to_copy)
            if warning:
                engine._error("", warning)
        engine._pending.add(rel, size=st.st_size)
        if engine._finish_reason is not None:
            engine._start_copy_helper_if_worth_it()
        engine._pending.wait_for_room(engine.tuning.pending_limit, engine._stop)
        return False

    def dst_only(self, folder: Folder, name: str, info: FileInfo) -> bool:
        if info.is_dir:
            return False  # (not entered: deletes are mirrored in the folders the source has)
        engine, marker = self.engine, self.marker
        rel = folder.prefix + name
        if is_own_temp_name(name):
            if self.initial:
                self.dest.unlink(rel)  # left by a killed run; we hold the lock
            return False
        if rel == marker:
            if self.initial and not (engine.source / marker).exists():
                # A marker here says "verified complete"; the source goes on, so it no
                # longer holds until we verify again.
                self.dest.unlink(rel)
            return False
        self.files_dst += 1
        self.bytes_dst += info.size
        self.chunks_dst += not is_metadata_name(name)
        engine._pending.add(rel)  # gone at the source: mirror the delete
        return False
