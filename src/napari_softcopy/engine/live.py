"""The live copy: file events become hints, workers sync each pending path (copy it, or
mirror a writer's delete), and the destination's refusals are backed off from."""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import stat
import time

from ..destinations import DestinationChanged, UnholdableName
from ..destinations.away import CONNECTION_ERRNOS, RETRY_ERRNOS
from ..layout import NODE_NAMES, array_at, is_metadata_name
from ..march import is_private
from ..platform import lower_thread_priority
from ..status import JobState
from ..transfer import RACY_S, CopyResult, NotRegularFile, Stopped, settle_left, sync_file
from .state import EngineState

log = logging.getLogger(__package__)  # (one logger for the engine, as before the split)


class LiveCopy(EngineState):
    """Hints from the watcher, the workers and what they do to one path."""

    # ------------------------------------------------------------------ hints
    def _hint(self, rel: str, delay: float) -> None:
        if is_private(rel):
            return  # (a copy's records, in a copy copied on: not part of the archive)
        self._last_activity = self._last_event = time.monotonic()
        if rel == self.options.marker:
            if self._marker_event_changes is None:
                # Events come in the order of the changes: those counted until here were
                # made before the marker, the rest after it (`_source_changed`).
                self._marker_event_changes = self._activity.changes
            self._marker_event_seen = True
            self._on_marker()
            return
        self._activity.note()
        if self._proofs is not None:
            self._proofs.mark_files((rel,))  # (its folder's proof no longer stands)
        tuning = self.tuning
        if not self._pending.add(
            rel, delay=delay, limit=tuning.hint_limit, spill=tuning.hint_spill
        ):
            self._backlog_full()

    def _hints(self, hints: list[tuple[str, float]], touched: bool) -> None:
        """`_hint` for a batch of events (`SourceEventHandler.dispatch_many`): one change
        counted and one lock taken before the marker's event, one after it."""
        now = time.monotonic()
        self._last_activity = self._last_event = now
        marker = self.options.marker
        start = 0
        for i, (rel, _delay) in enumerate(hints):
            if rel == marker:
                self._add_hints(hints[start:i], touched)
                touched = False
                self._hint(rel, 0.0)  # (the changes counted until here came before it)
                start = i + 1
        self._add_hints(hints[start:] if start else hints, touched)

    def _add_hints(self, hints: list[tuple[str, float]], touched: bool) -> None:
        hints = [h for h in hints if not is_private(h[0])]
        if hints or touched:
            self._activity.note()
        if not hints:
            return
        if self._proofs is not None:
            self._proofs.mark_files(h[0] for h in hints)  # (their folders' proofs go)
        tuning = self.tuning
        if self._pending.add_hints(hints, limit=tuning.hint_limit, spill=tuning.hint_spill):
            self._backlog_full()

    def _backlog_full(self) -> None:
        """An event found the backlog full (`Tuning.hint_limit` entries and `hint_spill`
        compact paths): its file is left to a rescan, so that memory does not follow it."""
        if not self._hints_left_to_scans:
            self._hints_left_to_scans = True
            log.warning(
                "%s: %d files are waiting to be copied: the copy is far behind the writer; "
                "files of further events are found by a rescan (bounded memory)",
                self.source,
                self.tuning.hint_limit + self.tuning.hint_spill,
            )
        self._request_rescan()

    def _touched(self) -> None:
        """An event that is no hint (a writer's temporary file, a folder): still a change."""
        self._activity.note()

    def _on_marker(self) -> None:
        if not self._marker_seen:
            self._marker_seen = True
            self._marker_at = time.monotonic()
        self.finish("marker")

    def _on_overflow(self) -> None:
        self._lost_events()  # (any folder may have changed without an event: `Walks`)
        with self._lock:
            self._counters.event_overflows += 1
        self._request_rescan()

    def _request_rescan(self) -> None:
        self._rescan_requested = True
        self._wake.set()

    def _root_gone(self) -> None:
        self._wake.set()  # the status thread's identity check turns this into an error

    def _look_for_marker(self) -> None:
        """Notice the marker without its event, which may wait behind thousands of others
        (or be lost) while the writer's last files are reported."""
        if self._marker_seen or self._src_fd < 0:
            return
        with contextlib.suppress(OSError):  # absent, or the engine is ending
            os.stat(self.options.marker, dir_fd=self._src_fd, follow_symlinks=False)
            self._on_marker()

    def _copy_root_metadata(self) -> None:
        """Copy the root's node metadata before any chunk: a rerun recognises the
        destination as this archive's copy by it, so a copy stopped or killed early must
        never hold chunks without it. (A failure here is left to the workers' retries.)"""
        for name in NODE_NAMES:
            for _attempt in range(2):
                if self._src_lstat(name) is None:
                    break
                try:
                    delay = self._sync(name, force=False)
                except Stopped:  # (a stop during this copy: the run ends as "stopped")
                    return
                if delay is None or delay > RACY_S or self._stop.wait(delay):
                    break  # copied, or retried later by the workers

    def _worker(self) -> None:
        if self.options.low_priority:
            lower_thread_priority()
        while True:
            item = self._pending.take()
            if item is None:
                return
            path, force = item
            retry_after = None
            try:
                retry_after = self._sync(path, force)
            except Stopped:
                retry_after = None
            except Exception as exc:  # never let one file kill a worker
                log.exception("unexpected error syncing %s", path)
                self._error(path, f"unexpected error: {exc!r}")
            self._pending.done(path, retry_after=retry_after)

    def _wait_backoff(self) -> None:
        while not self._stop.is_set():
            left = self._backoff_until - time.monotonic()
            if left <= 0:
                return
            self._stop.wait(min(left, 0.5))

    def _src_lstat(self, rel: str) -> os.stat_result | None:
        """lstat of ``rel`` below the source root the copy started with (None if absent)."""
        try:
            return os.stat(rel or ".", dir_fd=self._src_fd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _src_readable(self, rel: str) -> bool:
        try:
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            os.close(os.open(rel, flags, dir_fd=self._src_fd))
            return True
        except OSError:
            return False

    def _sync(self, rel: str, force: bool) -> float | None:
        """Make the destination's ``rel`` match the source's. Returns a retry delay or None."""
        self._wait_backoff()
        if self._stop.is_set():
            return None
        dest = self._dest
        try:
            st = os.stat(rel, dir_fd=self._src_fd, follow_symlinks=False)
        except FileNotFoundError:
            return self._mirror_delete(rel)
        except NotADirectoryError:
            return None
        except PermissionError as exc:
            self._error(rel, f"cannot read: {exc.strerror}; fix its permissions")
            return None  # the next scan tries again
        if stat.S_ISLNK(st.st_mode):
            self._error(rel, "symbolic link in the source: not followed, not copied")
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        left = settle_left(st.st_mtime_ns)
        if left:
            return left
        try:
            synced = sync_file(
                rel,
                st,
                dest,
                force=force,
                stop=self._stop,
                src_dir_fd=self._src_fd,
                limiter=self._limiter,
                fsync=self.options.fsync == "each",
                uncache=self.options.drop_cache,
                digest=self._hash_as_copied(),
            )
        except FileNotFoundError as exc:
            if self._src_lstat(rel) is None:
                return self._mirror_delete(rel)
            if exc.filename == rel and exc.filename2 is None:
                # Its source was gone when opened and is back (zarr-python 3.0 deletes a
                # chunk and writes it anew): not the destination's fault; copy the new one.
                return 0.0
            return self._dest_error(rel, exc)
        except NotRegularFile as exc:
            self._error(rel, f"{exc.strerror}; not copied")
            return None
        except UnholdableName as exc:  # (refused before a byte was written; said once)
            if rel not in self._unholdable:
                self._unholdable.add(rel)
                self._error(rel, exc.strerror)
            return None
        except PermissionError as exc:
            if exc.filename == rel and not self._src_readable(rel):
                self._error(rel, f"cannot read: {exc.strerror}; fix its permissions")
                return None
            return self._dest_error(rel, exc)
        except OSError as exc:
            return self._dest_error(rel, exc)
        result, old = synced.copy, synced.previous
        if result is None:
            return None  # the copy is current
        if not result.committed:
            return 0.0  # changed while we read it: copy the new version
        self._copied(rel, result, None if old is None else old.size)
        return None

    def _copied(self, rel: str, result: CopyResult, old_size: int | None) -> None:
        # Every publish (the workers', the copy helper's) is booked here: its hash (made as it
        # was copied) recorded for the manifest, and an older hash of the path never reused.
        hashes = self._hashes
        if hashes is not None:
            hashes.published(rel, result.size, result.mtime_ns, result.stamp, result.digest)
        if self._proofs is not None:
            self._proofs.mark_copied(rel)  # (the copy changed: its folder is proven anew)
        now = time.monotonic()
        self._last_activity = now
        if self._backoff:
            self._destination_back()
        with self._lock:
            c = self._counters
            c.files_copied += 1
            c.bytes_copied += result.size
            second = float(int(now))
            if c.rate_window and c.rate_window[-1][0] == second:
                c.rate_window[-1][1] += 1
                c.rate_window[-1][2] += result.size
            else:
                c.rate_window.append([second, 1, result.size])
            c.bytes_at_destination += result.size - (old_size or 0)
            metadata = is_metadata_name(rel.rpartition("/")[2])
            if old_size is None:
                c.files_at_destination += 1
                if not metadata and rel != self.options.marker:  # (`_is_chunk`)
                    c.chunks_at_destination += 1
            if metadata:
                self._arrays_dirty = True

    def _dest_error(self, rel: str, exc: OSError) -> float:
        if not isinstance(exc, DestinationChanged) and self._dest is not None:
            # A share whose server died (sshfs: ENOTCONN) or a dropped mount fails every file
            # at once: ask the root first, so that is one error that stops, not one per file.
            try:
                self._dest.check()
            except DestinationChanged as gone:
                exc = gone
        if isinstance(exc, DestinationChanged):  # not a passing condition: stop, say why
            self._fail(exc.strerror)
            return 0.0
        if exc.errno not in RETRY_ERRNOS:
            self._error(rel, f"{exc.strerror or exc}; will retry")
            return 1.0
        now = time.monotonic()
        with self._lock:
            if now >= self._backoff_until:
                # One failed round doubles the delay once (not once per worker that failed
                # in it), and each kind of failure is said once in it: the files in flight
                # when a disk fills or a share drops all fail together.
                self._backoff = min(self.tuning.max_backoff_s, max(1.0, self._backoff * 2))
                self._backoff_until = now + self._backoff
                self._backoff_said.clear()
            left = max(0.0, self._backoff_until - now)
            said = exc.errno in self._backoff_said
            self._backoff_said.add(exc.errno)
        if exc.errno in CONNECTION_ERRNOS:
            what = f"lost the connection to the destination ({exc.strerror})"
            fix = "bring its server or network back"
        else:
            what = {
                errno.ENOSPC: "destination is full",
                errno.EDQUOT: "destination quota exceeded",
                errno.EROFS: "destination is read-only",
            }.get(exc.errno or 0, f"cannot write to the destination ({exc.strerror})")
            fix = "free space or fix the destination"
        message = (
            f"{what}: {self.destination}; retrying in {math.ceil(left)} s "
            f"({fix}, the copy then continues by itself)"
        )
        if said:
            log.info("%s: %s", rel, message)  # (its round's error already says it)
        else:
            self._away = (f"{what}: {self.destination}", now + left)
            self._error(rel, message)
        return left

    def _mirror_delete(self, rel: str) -> float | None:
        """Mirror a writer's delete of ``rel`` (a chunk that became the fill value).

        Only a chunk file of a known array, deleted inside a directory that still exists,
        next to array metadata that still exists, is a writer's delete. While the copy runs,
        the delete is mirrored only after `Tuning.delete_grace_s`: removing a whole tree deletes its
        files before their directories, and must delete nothing at the destination.
        """
        if self._state not in (JobState.FINISHING, JobState.VERIFYING):
            first = self._deletes_seen.setdefault(rel, time.monotonic())
            wait = first + self.tuning.delete_grace_s - time.monotonic()
            if wait > 0:
                return wait
        self._deletes_seen.pop(rel, None)
        if self._src_lstat(rel) is not None:
            return 0.0  # it came back meanwhile: sync it again
        with self._lock:
            if self._arrays_dirty:
                self._reload_arrays()
            array = array_at(self._arrays, rel)
        if array is None or array.chunk_index(rel) is None:
            return None
        # Looked up through the root fd: in a root deleted meanwhile nothing exists any more.
        parent = self._src_lstat(rel.rpartition("/")[0])
        prefix = f"{array.path}/" if array.path else ""
        metadata = (self._src_lstat(prefix + name) for name in NODE_NAMES)
        if not (
            parent is not None
            and stat.S_ISDIR(parent.st_mode)
            and any(m is not None and stat.S_ISREG(m.st_mode) for m in metadata)
        ):
            return None
        old = self._dest.stat(rel)
        if old is None or not old.is_file:
            return None
        if self._dest.unlink(rel):
            if self._proofs is not None:
                self._proofs.mark_files((rel,))
            with self._lock:
                self._counters.files_deleted += 1
                self._counters.files_at_destination -= 1
                self._counters.bytes_at_destination -= old.size
                if self._is_chunk(rel):
                    self._counters.chunks_at_destination -= 1
        return None
