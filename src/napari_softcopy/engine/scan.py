"""The resume scan: walk the source against the destination once, queue what is missing
or stale, count what is already there, and notice changes that events missed."""

from __future__ import annotations

import logging
import os
import stat
import time
from functools import partial

from ..checks import free_space_warning
from ..destinations import is_copy_of
from ..layout import is_metadata_name, is_own_temp_name, is_temp_name
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
        dest = self._dest
        capabilities = dest.capabilities
        stamp_of = dest.source_stamp
        marker = self.options.marker
        temp = files_dst = bytes_dst = chunks_dst = 0
        to_copy = 0
        newest = 0  # the latest ctime of a source folder or file: a change events missed?
        # At the first scan, warn as soon as more is found to copy than the destination has
        # free: before it fills up, not after the scan of a huge tree.
        free = dest.free_space() if initial else None
        # A periodic scan gives way to a finish, whose verification walks everything again
        # anyway: on a large archive the scan running at the marker would delay it.
        periodic = not (initial or deep)

        def finishing() -> bool:  # (a finish that waits for quiet wants this scan whole)
            return periodic and self._finish_reason is not None and not self._finish_needs_quiet()

        cut_short = False
        stack = [""]
        while stack and not self._stop.is_set() and not cut_short:
            rel_dir = stack.pop()
            try:
                # Listed by descriptor: each entry's stat is then an fstatat in its folder,
                # not a walk of the whole path (the descriptor stays open while they run).
                dir_fd = os.open(
                    f"{self._src}/{rel_dir}" if rel_dir else self._src,
                    os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC,
                )
            except (FileNotFoundError, NotADirectoryError):
                if not rel_dir:
                    raise _Fatal(
                        f"source {self.source} vanished; the destination {self.destination} "
                        "is kept intact. Restore the source and run the same command again"
                    ) from None
                continue
            except PermissionError:
                self._error(rel_dir, "cannot list this folder (permission denied); fix it")
                continue
            try:
                # A folder's ctime moves when a file is created, renamed or deleted in it (a
                # writer's temporary file too); a file's when it is written or renamed.
                newest = max(newest, os.fstat(dir_fd).st_ctime_ns)
                # The source is read as it is listed: a folder of a million chunks is never
                # held in memory as a list (each entry keeps its stat once asked for it).
                existing = dest.listdir(rel_dir, cancelled=finishing)
                if existing is None:
                    cut_short = True
                    break
                with os.scandir(dir_fd) as it:
                    for entry in it:
                        if finishing():
                            cut_short = True  # (one folder may hold a million chunks)
                            break
                        name = entry.name
                        rel = f"{rel_dir}/{name}" if rel_dir else name
                        existing_info = existing.pop(name, None)
                        try:
                            if entry.is_dir(follow_symlinks=False):
                                stack.append(rel)
                                continue
                            if entry.is_symlink():
                                self._error(
                                    rel, "symbolic link in the source: not followed, not copied"
                                )
                                continue
                            if is_temp_name(name):
                                temp += 1
                                continue
                            if rel == marker:
                                if not self._marker_seen:
                                    self._on_marker()
                                continue
                            st = entry.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue
                        if not stat.S_ISREG(st.st_mode):
                            continue
                        newest = max(newest, st.st_ctime_ns)
                        if existing_info is not None and existing_info.is_file:
                            files_dst += 1
                            bytes_dst += existing_info.size
                            chunks_dst += not is_metadata_name(name)
                            if is_copy_of(
                                st,
                                existing_info,
                                capabilities,
                                partial(stamp_of, rel) if deep else None,
                            ):
                                continue
                        to_copy += st.st_size
                        if free is not None and to_copy > free:
                            free = None
                            warning = free_space_warning(self.destination, to_copy)
                            if warning:
                                self._error("", warning)
                        self._pending.add(rel, size=st.st_size)
                        if self._finish_reason is not None:
                            self._start_copy_helper_if_worth_it()
                        self._pending.wait_for_room(self.tuning.pending_limit, self._stop)
                if cut_short:
                    break
                for name, info in existing.items():
                    rel = f"{rel_dir}/{name}" if rel_dir else name
                    if info.is_dir:
                        continue
                    if is_own_temp_name(name):
                        if initial:
                            dest.unlink(rel)  # left by a killed run; we hold the lock
                        continue
                    if rel == marker:
                        if initial and not (self.source / marker).exists():
                            # A marker here says "verified complete"; the source goes on, so it
                            # no longer holds until we verify again.
                            dest.unlink(rel)
                        continue
                    files_dst += 1
                    bytes_dst += info.size
                    chunks_dst += not is_metadata_name(name)
                    self._pending.add(rel)  # gone at the source: mirror the delete
            finally:
                os.close(dir_fd)
        if stack or cut_short:
            return  # cut short: keep the counts of the last whole scan
        self._scanned_changes(newest, t0)
        with self._lock:
            c = self._c
            c.scans += 1
            c.last_scan_s = time.monotonic() - t0
            c.temp_files = temp
            c.files_at_destination = files_dst
            c.bytes_at_destination = bytes_dst
            c.chunks_at_destination = chunks_dst
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
