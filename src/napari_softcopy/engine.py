"""The copy engine: mirror a Zarr tree that is still being written, then prove the copy.

Threads, all at idle IO priority and a raised nice value:

- *control*: start-up, scans (at start, periodic, on overflow), a requested finish's wait
  for the source to stay quiet (`quiet`), the finish sequence (whose verification is the
  final walk; a change at the source before the marker is written cancels it);
- *status*: every ``status_interval`` s writes the status file and checks that the source
  and the destination are still the folders the copy started with; every `MARKER_POLL_S`
  looks for the marker;
- *workers*: take paths from the `PendingSet` and sync them (copy, or mirror a deletion);
- the watcher (`napari_softcopy.watcher`), whose file events become hints in the pending set
  (and changes counted by `quiet.SourceActivity`).

The engine keeps no record per copied file: the destination itself (size and mtime equal to
the source's) is the record, so memory does not grow with the archive.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import stat
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from .checks import InputError, check_pair, free_space_warning
from .copy_helper import BATCH, COPIED, CURRENT, UNTRIED, CopyHelper
from .destinations import Destination, DestinationChanged, LocalDestination, is_copy_of
from .jobs import DestinationLock
from .layout import (
    NODE_NAMES,
    ArrayLayout,
    array_at,
    find_arrays,
    is_metadata_name,
    is_own_temp_name,
    is_temp_name,
    node_kind,
)
from .options import CopyOptions
from .pending import PendingSet
from .platform import available_cores, degraded, lower_thread_priority
from .quiet import PAUSE_FACTOR, SourceActivity
from .readiness import SourceEventHandler
from .status import FINAL_STATES, Status, write_status_file
from .transfer import (
    RACY_S,
    CopyResult,
    NotRegularFile,
    RateLimiter,
    Stopped,
    settle_left,
    sync_file,
    write_file,
)
from .verify import VerifyReport, WalkHelper, recheck, start_helpers, verify_tree
from .watcher import start_watching

log = logging.getLogger(__name__)

#: Scans stop adding work while this many paths are pending (bounded memory on huge trees).
PENDING_LIMIT = 20_000
#: Errors that mean "the destination cannot take data right now": retried with backoff.
_DEST_RETRY_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.EIO,
    errno.ESTALE,
    errno.ETIMEDOUT,
    errno.EAGAIN,
}
MAX_BACKOFF_S = 30.0
#: Least seconds between two rescans requested by lost events (see `CopyEngine._loop`).
RESCAN_SPACING_S = 1.0
#: Before verifying, the finish waits until no event has come for this long (events are
#: delivered at thousands per second while a backlog lasts), but no longer than the maximum.
SETTLE_S = 0.1
SETTLE_MAX_S = 5.0
#: The verification walk starts while this many files are still being copied: it finds
#: them missing, and only they are compared again once copied (`verify.recheck`). The walk
#: then overlaps the writer's last copies instead of following them.
VERIFY_BESIDE_PENDING = 1000
#: From this many files on, the verification walk is split between two processes where two
#: cores are available (`verify.start_helpers`; below it, starting one costs more than it
#: saves).
PARALLEL_VERIFY_FILES = 10_000
#: From this many files pending at a finish (a finished archive, a backlog at the marker),
#: a second process copies beside the engine's workers where two cores are available
#: (`copy_helper`; below it, starting one costs more than it saves).
COPY_HELPER_FILES = 2_000
#: Seconds between two looks for the marker (one ``fstatat``): its event may wait behind
#: thousands of others, or be lost.
MARKER_POLL_S = 0.1
#: `CopyEngine._finish_wait`'s answer "quiet by the events: a scan must confirm it".
_CONFIRM_BY_SCAN = "scan"
#: Seconds a source file must stay deleted (its directory still there) before the delete is
#: mirrored at the destination.
DELETE_GRACE_S = 2.0


class _Fatal(Exception):
    """Ends the engine in the ``failed`` state with a one-line message."""


@dataclass
class _Counters:
    files_copied: int = 0
    bytes_copied: int = 0
    files_deleted: int = 0
    files_at_destination: int = 0
    bytes_at_destination: int = 0
    chunks_at_destination: int = 0
    temp_files: int = 0
    event_overflows: int = 0
    scans: int = 0
    last_scan_s: float = 0.0
    error_count: int = 0
    errors: deque = field(default_factory=lambda: deque(maxlen=50))
    # [whole second, files, bytes] buckets of the last few seconds: the recent rate
    rate_window: deque = field(default_factory=lambda: deque(maxlen=8))


class CopyEngine:
    """Mirror ``source`` into ``destination`` while it is written, then verify.

    Parameters
    ----------
    source, destination : path
        The Zarr archive being acquired and where its copy goes.
    options : CopyOptions, optional
        How to copy.

    Examples
    --------
    >>> engine = CopyEngine("/data/acq.zarr", "/mnt/cluster/acq.zarr")
    >>> engine.start()
    >>> engine.wait()  # returns True once the copy is verified complete
    """

    def __init__(
        self,
        source: str | os.PathLike,
        destination: str | os.PathLike,
        options: CopyOptions | None = None,
    ) -> None:
        self.options = options or CopyOptions()
        self.source = Path(os.path.abspath(os.fspath(source)))
        self.destination = Path(os.path.abspath(os.fspath(destination)))
        self._src = os.fspath(self.source)
        self._pending = PendingSet()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._finish_reason: str | None = None
        self._rescan_requested = False
        self._lock = threading.Lock()
        self._c = _Counters()
        self._state = "starting"
        self._message = ""
        self._started_at = 0.0
        self._t0 = 0.0
        self._marker_seen = False
        # The marker's own event has been delivered: every event queued before it has been
        # handled too (one inotify queue, delivered in order), so no settling is needed.
        self._marker_event_seen = False
        self._marker_at: float | None = None
        self._marker_to_verified: float | None = None
        self._verification: dict | None = None
        self._arrays: list[ArrayLayout] = []
        self._arrays_dirty = True
        self._last_activity = time.monotonic()
        self._last_event = 0.0  # monotonic time of the last event
        self._deletes_seen: dict[str, float] = {}  # path -> when its delete was first seen
        self._backoff_until = 0.0
        self._backoff = 0.0
        self._source_identity: tuple[int, int] | None = None
        # The source root, held open: files are read relative to it, so an archive deleted
        # and created again at the same path (zarr-python overwrite=True) is never mixed into
        # this copy, and its inode number cannot be reused for the new root meanwhile.
        self._src_fd = -1
        self._dest: Destination | None = None
        self._dest_lock = DestinationLock(self.destination)
        self._limiter = (
            RateLimiter(self.options.bandwidth_mb_s) if self.options.bandwidth_mb_s else None
        )
        self._threads: list[threading.Thread] = []
        self._control: threading.Thread | None = None
        self._copy_helper: CopyHelper | None = None
        self._copy_helper_decided = False  # started one, or cannot have one
        self._final_walk = False  # the finish's verification walk has begun
        self._report: VerifyReport | None = None
        self._notices: list[str] = []  # what does not apply here (status, log: once each)
        # What the writer does: a requested finish waits for the source to stay quiet, and
        # any change between the verification and the marker cancels the marker.
        self._activity = SourceActivity()
        self._force_finish = False  # SIGUSR2: no wait for quiet (a change still cancels)
        self._finish_cancelled = False  # a change cancelled a marker: wait for quiet again
        self._waiting_for: str | None = None
        self._newest_ctime_ns = 0  # the newest change time a whole scan found in the source
        self._marker_event_changes: int | None = None  # changes counted at the marker's event
        self._marker_before_walk = False  # the marker was seen before this finish's walk
        self._last_scan_started = -math.inf  # monotonic start of the last whole scan

    # ------------------------------------------------------------------ public API
    def start(self) -> None:
        """Validate the input, then start copying in background threads.

        Raises
        ------
        InputError
            Bad input (one line naming the path and the fix); nothing was written.
        """
        if self._control is not None:
            raise RuntimeError("engine already started")
        check_pair(
            self.source,
            self.destination,
            force=self.options.force,
            wait_for_source=self.options.wait_for_source,
        )
        self._dest_lock.acquire()
        self._started_at = time.time()
        self._t0 = time.monotonic()
        self._control = threading.Thread(target=self._run, name="softcopy-control", daemon=True)
        self._control.start()
        status = threading.Thread(target=self._status_loop, name="softcopy-status", daemon=True)
        status.start()
        self._threads.append(status)

    def finish(self, reason: str = "request", force: bool = False) -> None:
        """Finish: copy the rest, verify (re-copying what differs), then write the marker.

        A requested finish (``reason="request"``) that the acquisition's marker has not
        confirmed first waits until the source has been quiet for longer than its longest
        pause between writes so far (at least `CopyOptions.finish_quiet` s, at most
        `CopyOptions.finish_quiet_max` s), a scan found no writer's temporary file, and
        `Status.waiting_for` says so meanwhile. Copying goes on during the wait.

        Any change seen at the source from the start of the finish (of its verification, on
        the acquisition's marker) until the marker is written cancels the marker, forced or
        not: the copy goes on, and the finish is tried again after the next quiet period (or
        on the acquisition's marker; `stop` ends it).

        Parameters
        ----------
        reason : str
            Why: ``"request"`` (a person or a script), or the engine's own ``"marker"``,
            ``"idle"``, ``"already-complete"``. The first reason given is kept.
        force : bool
            Do not wait for quiet: finish even if the acquisition may still be writing
            (``SIGUSR2``). A change during the finish still cancels the marker, and the
            force is then spent.
        """
        # No lock: the CLI calls this from a signal handler, which runs in the main thread
        # between two of its steps, perhaps while that thread holds the engine's lock (in
        # `status`). Two plain assignments need none.
        if self._finish_reason is None:
            self._finish_reason = reason
        if force:
            self._force_finish = True
        self._wake.set()

    def stop(self) -> None:
        """Stop promptly; nothing partial is left and a rerun resumes."""
        self._stop.set()
        self._pending.close()
        self._wake.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the engine to end; True when the destination is verified complete."""
        if self._control is None:
            return False
        self._control.join(timeout)
        if self._control.is_alive():
            return False
        for thread in self._threads:
            thread.join(5.0)
        return self._state == "verified"

    @property
    def state(self) -> str:
        """Current state (see `Status`)."""
        return self._state

    @property
    def report(self) -> VerifyReport | None:
        """The last verification report (None before the finish)."""
        return self._report

    def status(self) -> Status:
        """A consistent snapshot of the copy (cheap; safe from any thread)."""
        n_pending, bytes_pending, lag = self._pending.snapshot()
        now = time.monotonic()
        with self._lock:
            c = self._c
            window = list(c.rate_window)
            if self._arrays_dirty and self._state not in FINAL_STATES:
                self._reload_arrays()
            expected = sum(a.n_chunks for a in self._arrays)
            errors = list(c.errors)
            snap = Status(
                source=os.fspath(self.source),
                destination=os.fspath(self.destination),
                state=self._state,
                started_at=self._started_at,
                updated_at=time.time(),
                elapsed_s=round(now - self._t0, 3) if self._t0 else 0.0,
                files_copied=c.files_copied,
                bytes_copied=c.bytes_copied,
                files_deleted=c.files_deleted,
                files_pending=n_pending,
                bytes_pending=bytes_pending,
                files_at_destination=c.files_at_destination,
                bytes_at_destination=c.bytes_at_destination,
                chunks_expected=expected,
                chunks_at_destination=c.chunks_at_destination,
                lag_s=round(lag, 3) if n_pending else 0.0,
                temp_files=c.temp_files,
                event_overflows=c.event_overflows,
                scans=c.scans,
                last_scan_s=round(c.last_scan_s, 4),
                marker_seen=self._marker_seen,
                finish_reason=self._finish_reason,
                marker_to_verified_s=self._marker_to_verified,
                error_count=c.error_count,
                errors=errors,
                verification=self._verification,
                message=self._message,
                notices=self._notices + degraded(),
                waiting_for=self._waiting_for,
            )
        recent = [(t, f, b) for t, f, b in window if now - t < 5.0]
        if recent:
            span = min(5.0, max(now - recent[0][0], 1.0))
            snap.rate_files_s = round(sum(f for _, f, _ in recent) / span, 2)
            snap.rate_bytes_s = round(sum(b for _, _, b in recent) / span, 1)
        return snap

    # ------------------------------------------------------------------ bookkeeping
    def _set_state(self, state: str, message: str | None = None) -> None:
        with self._lock:
            if self._state in FINAL_STATES:
                return  # (a failure found by another thread stands)
            if message is not None or state != self._state:
                self._message = message or ""  # (a message belongs to the state it came with)
            self._state = state

    def _error(self, path: str, message: str) -> None:
        log.warning("%s: %s", path or self.source, message)
        with self._lock:
            self._c.error_count += 1
            self._c.errors.append({"path": path, "message": message, "time": time.time()})

    def _reload_arrays(self) -> None:
        # Called with self._lock held. A metadata file may be mid-rewrite by an in-place
        # writer: keep the previous knowledge rather than fail.
        try:
            self._arrays = find_arrays(self.source, strict=False)
            self._arrays_dirty = False
        except OSError:
            pass

    def _is_chunk(self, rel: str) -> bool:
        name = rel.rpartition("/")[2]
        return not is_metadata_name(name) and rel != self.options.marker

    # ------------------------------------------------------------------ hints
    def _hint(self, rel: str, delay: float) -> None:
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
        self._pending.add(rel, delay=delay)

    def _touched(self) -> None:
        """An event that is no hint (a writer's temporary file, a folder): still a change."""
        self._activity.note()

    def _on_marker(self) -> None:
        if not self._marker_seen:
            self._marker_seen = True
            self._marker_at = time.monotonic()
        self.finish("marker")

    def _on_overflow(self) -> None:
        with self._lock:
            self._c.event_overflows += 1
        self._request_rescan()

    def _request_rescan(self) -> None:
        self._rescan_requested = True
        self._wake.set()

    def _root_gone(self) -> None:
        self._wake.set()  # the status thread's identity check turns this into an error

    # ------------------------------------------------------------------ threads
    def _status_loop(self) -> None:
        path = self.options.status_file
        next_status = 0.0
        while True:
            ended = self._control is not None and not self._control.is_alive()
            now = time.monotonic()
            due = ended or now >= next_status
            if not ended and self._state not in ("starting", "waiting"):
                if due:
                    try:
                        self._check_roots()
                    except _Fatal as exc:
                        self._fail(str(exc))
                self._look_for_marker()
            if due:
                next_status = now + self.options.status_interval
                if path is not None:
                    try:
                        write_status_file(path, self.status())
                    except OSError as exc:
                        log.warning("cannot write status file %s: %s", path, exc)
            if ended:
                return
            # The marker is looked for more often than the status is written: every tenth
            # of a second it waits is a tenth of a second added to the drain.
            self._stop.wait(min(MARKER_POLL_S, max(0.0, next_status - time.monotonic())))
            if self._stop.is_set() and self._control is not None:
                self._control.join(3.0)

    def _look_for_marker(self) -> None:
        """Notice the marker without its event, which may wait behind thousands of others
        (or be lost) while the writer's last files are reported."""
        if self._marker_seen or self._src_fd < 0:
            return
        with contextlib.suppress(OSError):  # absent, or the engine is ending
            os.stat(self.options.marker, dir_fd=self._src_fd, follow_symlinks=False)
            self._on_marker()

    def _check_roots(self) -> None:
        try:
            st = os.stat(self.source)
        except OSError:
            raise _Fatal(
                f"source {self.source} vanished; the destination {self.destination} is kept "
                "intact. Restore the source and run the same command again"
            ) from None
        deleted = False
        if self._src_fd >= 0:
            with contextlib.suppress(OSError):  # closed meanwhile: the engine is ending
                deleted = os.fstat(self._src_fd).st_nlink == 0
        if self._source_identity and ((st.st_dev, st.st_ino) != self._source_identity or deleted):
            raise _Fatal(
                f"source {self.source} was replaced (deleted and created again, e.g. by "
                f"overwrite=True); the destination {self.destination} is kept intact. Copy the "
                "new archive into a new destination"
            )
        if self._dest is not None:
            try:
                self._dest.check()
            except DestinationChanged as exc:
                raise _Fatal(exc.strerror) from None

    def _fail(self, message: str) -> None:
        with self._lock:
            if self._state in FINAL_STATES:
                return
            self._state = "failed"
            self._message = message
        self._error("", message)
        self._stop.set()
        self._pending.close()
        self._wake.set()

    def _run(self) -> None:
        if self.options.low_priority:
            lower_thread_priority()
        watching = None
        try:
            if not self.source.exists():
                self._set_state("waiting", f"waiting for {self.source} to appear")
                while not self._stop.is_set() and not _is_ready_source(self.source):
                    self._stop.wait(0.05)
                if self._stop.is_set():
                    self._set_state("stopped", "stopped while waiting for the source")
                    return
                check_pair(self.source, self.destination, force=self.options.force)
            self._src_fd = os.open(self._src, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            st = os.fstat(self._src_fd)
            self._source_identity = (st.st_dev, st.st_ino)
            self._dest = LocalDestination(self.destination)
            self._activity = SourceActivity()  # quiet since now: watching begins below
            with self._lock:
                self._reload_arrays()
            # Before "copying": from then on the status thread may see the marker too.
            if (self.source / self.options.marker).exists():
                self.finish("already-complete")
            self._set_state("copying")
            # Watch before the first scan so nothing written meanwhile is missed.
            handler = SourceEventHandler(
                self._src, self._hint, self._request_rescan, self._root_gone, self._touched
            )
            watching = start_watching(self._src, handler, self._on_overflow, self._request_rescan)
            with self._lock:
                self._notices.extend(watching.notices)
            self._copy_root_metadata()
            workers = self.options.workers or self._dest.suggested_workers()
            log.info("copying with %d worker thread(s)", workers)
            for i in range(max(1, workers)):
                t = threading.Thread(target=self._worker, name=f"softcopy-worker-{i}", daemon=True)
                t.start()
                self._threads.append(t)
            self._scan(initial=True)
            # A finish that a change at the source cancels goes back to copying, and is tried
            # again once the source is quiet (or on the marker); only a stop ends that.
            while True:
                self._loop()
                self._set_waiting(None)
                if self._stop.is_set() or self._finish():
                    return
        except (_Fatal, InputError) as exc:
            self._fail(str(exc))
        except Exception as exc:  # a bug or an unforeseen OS error: fail loudly, lose nothing
            log.exception("engine failed")
            self._fail(f"internal error: {exc!r}; the destination is intact, rerun to resume")
        finally:
            self._stop.set()
            self._pending.close()
            helper = self._copy_helper
            if helper is not None:
                helper.interrupt()  # (its thread reads its last answer, then closes it)
            if watching is not None:
                watching.stop()
            for t in self._threads:
                if t.name.startswith("softcopy-worker"):
                    t.join(5.0)
            if watching is not None:
                watching.join(2.0)
            if self._state not in FINAL_STATES:
                self._set_state(
                    "stopped",
                    f"stopped; nothing partial was left. Resume with: napari-softcopy copy "
                    f"{self.source} {self.destination}",
                )
            if self._dest is not None:
                self._dest.close()
            if self._src_fd >= 0:
                os.close(self._src_fd)
                self._src_fd = -1
            self._dest_lock.release()

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

    def _loop(self) -> None:
        """Copy (the workers do) and rescan until a stop, or until a finish is requested and
        may begin (`_finish_wait`); meanwhile `Status.waiting_for` says what it waits for."""
        next_scan = time.monotonic() + self.options.rescan_interval
        # A requested rescan (events were lost) waits until the last scan is this far behind:
        # under a sustained storm of lost events, back-to-back full scans would take the CPU
        # from the writer. Scans then use at most a quarter of the time.
        earliest_rescan = 0.0
        while not self._stop.is_set():
            if self._finish_reason is not None:
                waiting = self._finish_wait()
                if waiting is None:
                    return
                if waiting == _CONFIRM_BY_SCAN:
                    # Quiet by the events; a scan confirms it (changes events missed, writers'
                    # temporary files) before the finish may begin.
                    self._set_waiting("a scan of the source to confirm that it is quiet")
                    self._scan()
                    next_scan = time.monotonic() + self.options.rescan_interval
                    continue
                self._set_waiting(waiting)
            now = time.monotonic()
            due = min(next_scan, max(earliest_rescan, now)) if self._rescan_requested else next_scan
            timeout = due - now
            idle = self.options.finish_when_idle
            if idle is not None or self._finish_reason is not None:
                timeout = min(timeout, 0.25)  # (the wait's line says how long ago, each second)
            self._wake.wait(max(0.0, timeout))
            self._wake.clear()
            if self._stop.is_set():
                return
            if self._finish_reason is not None and not self._finish_needs_quiet():
                continue  # (a marker or a forced finish: at once)
            now = time.monotonic()
            if (self._rescan_requested and now >= earliest_rescan) or now >= next_scan:
                self._rescan_requested = False
                self._scan()
                end = time.monotonic()
                next_scan = end + self.options.rescan_interval
                earliest_rescan = end + max(RESCAN_SPACING_S, 3 * self._c.last_scan_s)
            if (
                idle is not None
                and self._finish_reason is None
                and now - self._last_activity >= idle
                and len(self._pending) == 0
            ):
                self._scan()
                if self._c.temp_files == 0 and len(self._pending) == 0:
                    self.finish("idle")
                else:
                    self._last_activity = time.monotonic()

    def _finish_needs_quiet(self) -> bool:
        """True while a requested finish must first see the source quiet: the acquisition may
        still be going on. Not on the acquisition's marker, not when forced, not for the
        first try of a finish on `CopyOptions.finish_when_idle` (a quiet rule already)."""
        if self._marker_seen or self._force_finish:
            return False
        if self._finish_reason in ("idle", "marker", "already-complete"):
            return self._finish_cancelled
        return self._finish_reason is not None

    def _finish_wait(self) -> str | None:
        """What a requested finish still waits for (one line), `_CONFIRM_BY_SCAN`, or None
        when it may begin.

        The source must have been quiet for longer than the longest pause between two of
        its changes so far (`quiet.PAUSE_FACTOR` times it, at least `finish_quiet`, at most
        `finish_quiet_max` s; after a cancelled marker of a finish on `finish_when_idle`,
        at least that long), and a whole scan started after its last change must have found
        no writer's temporary file.
        """
        if not self._finish_needs_quiet():
            return None
        opts = self.options
        activity = self._activity
        needed = activity.quiet_needed(opts.finish_quiet, opts.finish_quiet_max)
        capped = needed < PAUSE_FACTOR * activity.longest_pause
        if self._finish_reason == "idle" and opts.finish_when_idle is not None:
            needed = max(needed, opts.finish_when_idle)
        now = time.monotonic()
        if activity.quiet_for(now) < needed:
            return activity.describe_wait(needed, capped=capped, now=now)
        if self._last_scan_started <= activity.last_change:
            return _CONFIRM_BY_SCAN
        temp = self._c.temp_files
        if temp:
            return (
                f"the writers' temporary files in the source to go ({temp} at the last scan; "
                "a finish forced by SIGUSR2 does not wait for them)"
            )
        return None

    def _set_waiting(self, waiting: str | None) -> None:
        """Publish what the finish waits for; log it when that changes (not its seconds)."""
        previous = self._waiting_for
        with self._lock:
            self._waiting_for = waiting
        if waiting is not None and (previous or "")[:24] != waiting[:24]:
            log.info("finish requested; waiting for %s", waiting)

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

    def _start_copy_helper_if_worth_it(self) -> None:
        """Start a copy helper process for a large backlog at a finish (see `copy_helper`).
        Called for every file a scan queues then: what cannot change is decided once."""
        if self._copy_helper_decided or len(self._pending) < COPY_HELPER_FILES:
            return
        self._copy_helper_decided = True
        if self._limiter is not None or available_cores() < 2:
            return  # (a bandwidth cap is shared by this process's threads only)
        if not isinstance(self._dest, LocalDestination):
            return  # (the helper is handed the root's descriptor)
        t = threading.Thread(target=self._helper_worker, name="softcopy-worker-h", daemon=True)
        t.start()
        self._threads.append(t)

    def _helper_worker(self) -> None:
        """Hand batches of pending paths to a copy helper process and book its outcomes;
        paths it hands back are synced here. Ends when the engine stops, when the backlog is
        copied once the final walk has begun, or when the helper fails (its paths go back
        to the pending set)."""
        if self.options.low_priority:
            lower_thread_priority()  # (the helper inherits this thread's priority)
        helper = CopyHelper(
            self._src_fd,
            self._dest,
            settle_s=RACY_S,
            fsync=self.options.fsync == "each",
            uncache=self.options.drop_cache,
        )
        self._copy_helper = helper
        in_flight: deque[list[tuple[str, bool]]] = deque()
        copied = 0
        try:
            while helper.running and not self._stop.is_set():
                # Two batches in flight: the helper starts the next while this thread books
                # the last (it may wait for the interpreter lock meanwhile).
                while len(in_flight) < 2:
                    self._wait_backoff()
                    batch = self._pending.take_many(BATCH, timeout=0.0 if in_flight else 0.1)
                    if not batch:
                        break
                    in_flight.append(batch)
                    if not helper.submit(batch):
                        break
                if not in_flight:
                    # Once the final walk has begun, the backlog is copied: the helper ends
                    # (the walk's own helper needs the memory more).
                    if self._pending.closed or self._final_walk:
                        return
                    continue
                batch = in_flight.popleft()
                outcomes = helper.outcomes(len(batch))
                if outcomes is None:
                    in_flight.appendleft(batch)
                    return
                copied += self._book(batch, outcomes)
        finally:
            for batch in in_flight:  # (never answered: the engine's workers copy them)
                for rel, force in batch:
                    self._pending.add(rel, force=force)
                    self._pending.done(rel)
            helper.close()
            log.info("copy helper process copied %d files", copied)

    def _book(self, batch: list[tuple[str, bool]], outcomes: list[tuple]) -> int:
        """Book a helper's outcomes for ``batch``; sync here what it handed back. Every path
        is done once, whatever happens (a path never done would hold up the finish)."""
        copied = 0
        for (rel, force), outcome in zip(batch, outcomes, strict=True):
            kind = outcome[0]
            retry_after = None
            try:
                if kind == COPIED:
                    _, size, mtime_ns, old_size = outcome
                    result = CopyResult(True, size, mtime_ns, old_size is None)
                    self._copied(rel, result, old_size)
                    copied += 1
                elif kind == UNTRIED:
                    self._pending.add(rel, force=force)  # (in flight: it goes again when done)
                elif kind != CURRENT:
                    retry_after = self._sync(rel, force)
            except Stopped:
                pass
            except Exception as exc:  # never let one file kill a worker
                log.exception("unexpected error syncing %s", rel)
                self._error(rel, f"unexpected error: {exc!r}")
            finally:
                self._pending.done(rel, retry_after=retry_after)
        return copied

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
            result, old = sync_file(
                rel,
                st,
                dest,
                force=force,
                stop=self._stop,
                src_dir_fd=self._src_fd,
                limiter=self._limiter,
                fsync=self.options.fsync == "each",
                uncache=self.options.drop_cache,
            )
        except FileNotFoundError as exc:
            if self._src_lstat(rel) is None:
                return self._mirror_delete(rel)
            return self._dest_error(rel, exc)
        except NotRegularFile as exc:
            self._error(rel, f"{exc.strerror}; not copied")
            return None
        except PermissionError as exc:
            if exc.filename == rel and not self._src_readable(rel):
                self._error(rel, f"cannot read: {exc.strerror}; fix its permissions")
                return None
            return self._dest_error(rel, exc)
        except OSError as exc:
            return self._dest_error(rel, exc)
        if result is None:
            return None  # the copy is current
        if not result.committed:
            return 0.0  # changed while we read it: copy the new version
        self._copied(rel, result, None if old is None else old.size)
        return None

    def _copied(self, rel: str, result: CopyResult, old_size: int | None) -> None:
        now = time.monotonic()
        self._last_activity = now
        if self._backoff:
            self._backoff = 0.0
        with self._lock:
            c = self._c
            c.files_copied += 1
            c.bytes_copied += result.size
            second = float(int(now))
            if c.rate_window and c.rate_window[-1][0] == second:
                c.rate_window[-1][1] += 1
                c.rate_window[-1][2] += result.size
            else:
                c.rate_window.append([second, 1, result.size])
            c.bytes_at_destination += result.size - (old_size or 0)
            if old_size is None:
                c.files_at_destination += 1
                if self._is_chunk(rel):
                    c.chunks_at_destination += 1
            if is_metadata_name(rel.rpartition("/")[2]):
                self._arrays_dirty = True

    def _dest_error(self, rel: str, exc: OSError) -> float:
        if isinstance(exc, DestinationChanged):  # not a passing condition: stop, say why
            self._fail(exc.strerror)
            return 0.0
        if exc.errno not in _DEST_RETRY_ERRNOS:
            self._error(rel, f"{exc.strerror or exc}; will retry")
            return 1.0
        now = time.monotonic()
        if now >= self._backoff_until:
            # One failed round doubles the delay once (not once per worker that failed in it).
            self._backoff = min(MAX_BACKOFF_S, max(1.0, self._backoff * 2))
            self._backoff_until = now + self._backoff
        what = {
            errno.ENOSPC: "destination is full",
            errno.EDQUOT: "destination quota exceeded",
            errno.EROFS: "destination is read-only",
        }.get(exc.errno or 0, f"cannot write to the destination ({exc.strerror})")
        left = max(0.0, self._backoff_until - now)
        self._error(
            rel,
            f"{what}: {self.destination}; retrying in {math.ceil(left)} s "
            "(free space or fix the destination, the copy then continues by itself)",
        )
        return left

    def _mirror_delete(self, rel: str) -> float | None:
        """Mirror a writer's delete of ``rel`` (a chunk that became the fill value).

        Only a chunk file of a known array, deleted inside a directory that still exists,
        next to array metadata that still exists, is a writer's delete. While the copy runs,
        the delete is mirrored only after `DELETE_GRACE_S`: removing a whole tree deletes its
        files before their directories, and must delete nothing at the destination.
        """
        if self._state not in ("finishing", "verifying"):
            first = self._deletes_seen.setdefault(rel, time.monotonic())
            wait = first + DELETE_GRACE_S - time.monotonic()
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
            with self._lock:
                self._c.files_deleted += 1
                self._c.files_at_destination -= 1
                self._c.bytes_at_destination -= old.size
                if self._is_chunk(rel):
                    self._c.chunks_at_destination -= 1
        return None

    # ------------------------------------------------------------------ scanning
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
                        self._pending.wait_for_room(PENDING_LIMIT, self._stop)
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

    # ------------------------------------------------------------------ finishing
    def _drain(self, *, settle: bool = False, leave: int = 0) -> None:
        """Wait until at most ``leave`` paths are pending; with ``settle``, also until no
        event has arrived for `SETTLE_S` (at most `SETTLE_MAX_S`), unless the marker's own
        event has: when the marker is noticed by looking for it, events for the writer's last
        files may still wait in the queue, and verifying before they are copied would only
        cost another verification round. Once the marker's event is delivered, all those
        before it are."""
        deadline = time.monotonic() + SETTLE_MAX_S
        while True:
            self._pending.wait_for_room(leave, self._stop)
            if self._stop.is_set():
                return
            quiet = time.monotonic() - self._last_event
            if (
                not settle
                or self._marker_event_seen
                or quiet >= SETTLE_S
                or time.monotonic() >= deadline
            ):
                return
            self._stop.wait(min(SETTLE_S - quiet, 0.02))  # (or until the marker's event)

    def _finish(self) -> bool:
        """Copy the rest, verify, write the marker. True when the engine has ended (verified,
        or stopped); False when a change at the source cancelled the marker (`_cancel`):
        copying goes on and the finish is tried again."""
        self._set_state("finishing")
        # Changes counted from here on cancel the marker. On the marker, from the end of the
        # settling below: the writer's last events, queued before its marker, may still come
        # (and from the marker's own event once it has come: `_source_changed`).
        changes = self._activity.changes
        self._marker_before_walk = False
        self._start_copy_helper_if_worth_it()
        # The walk's helper processes start beside the last copies: ready when it begins.
        helpers = start_helpers(self._verify_processes() - 1)
        try:
            self._drain(settle=True, leave=VERIFY_BESIDE_PENDING)
            if self._marker_seen:
                changes = self._activity.changes
                self._marker_before_walk = True
            self._final_walk = True
            if self._stop.is_set():
                return True
            if len(self._pending) == 0:  # (else "finishing" until the last copies are done)
                self._set_state("verifying")
            # The last copies are written back while the walk below reads both trees (the
            # walk reads, it does not write): the flush before the marker has little left.
            flushing = threading.Thread(
                target=self._flush_early, name="softcopy-flush", daemon=True
            )
            flushing.start()
            try:
                return self._verify_and_mark(helpers, changes)
            finally:
                flushing.join()
        finally:
            for helper in helpers:
                helper.close()

    def _source_changed(self, since: int) -> bool:
        """True when a change at the source was counted after the count ``since``.

        When the acquisition's marker was there before the verification walk began, what was
        changed before it was there for the walk to see: the events of its last files that
        come after ``since`` but before the marker's own event (the marker may have been
        found by looking for it) are no sign of an acquisition going on, and do not count.
        """
        if self._marker_before_walk and self._marker_event_changes is not None:
            since = max(since, self._marker_event_changes)
        return self._activity.changes != since

    def _cancel(self, since: int, when: str) -> bool:
        """A change at the source cancels the marker: back to copying, the finish still
        requested, no longer forced (the acquisition is evidently going on). Returns False
        (`_finish`'s "not ended")."""
        n = max(1, self._activity.changes - since)
        message = (
            f"finish cancelled {when}: the source changed ({n} change{'s' * (n != 1)} seen), "
            "so the acquisition may still be going on and no marker was written; copying on, "
            "the finish is tried again once the source is quiet (or on its marker)"
        )
        log.warning("%s: %s", self.source, message)
        with self._lock:
            self._force_finish = False
            self._finish_cancelled = True
            self._verification = None
        self._final_walk = False
        self._set_state("copying", message)
        return False

    def _verify_processes(self) -> int:
        known = self._c.files_at_destination + len(self._pending)  # (pending: a bulk copy)
        return verify_processes(known)

    def _flush_early(self) -> None:
        with contextlib.suppress(OSError):  # the flush before the marker reports errors
            self._dest.flush()

    def _walk_and_compare(self, helpers: list[WalkHelper] | None = None) -> VerifyReport:
        self._report = verify_tree(
            self.source,
            self.destination,
            checksum=self.options.verify == "checksum",
            marker=self.options.marker,
            stop=self._stop,
            stamps=True,
            processes=self._verify_processes(),
            helpers=helpers,
        )
        return self._report

    def _verify_and_mark(self, helpers: list[WalkHelper], changes: int) -> bool:
        """Verify, then write the marker unless a change at the source was counted since
        ``changes``. True when ended (verified, or stopped); False when cancelled."""
        # Verification is the final scan: it walks both trees once and compares what a deep
        # scan would (size, mtime, the recorded source stamp), and more. A walk costs seconds
        # on a million files; one walk instead of two is most of the time from the marker to
        # "verified". It starts beside the last copies (`VERIFY_BESIDE_PENDING`); whatever it
        # finds (those copies, lost events, a late rewrite, a chunk deleted at the source) is
        # synced, then compared again: only those files where the report lists them all, the
        # whole tree otherwise.
        report = self._walk_and_compare(helpers)
        # The copies the walk ran beside finish first (none may still be in flight when the
        # counts and the marker are written). What the walk saw before its copy was done is
        # only compared again: queued again while in flight, a mismatched file would be
        # copied twice (forced).
        self._drain()
        for round_ in range(4):
            if report.ok or self._stop.is_set() or self._source_changed(changes):
                break
            if round_:
                if report.fully_listed:
                    for rel in report.missing:
                        self._pending.add(rel)
                    for rel, _why in report.mismatched:  # (size and mtime may match: forced)
                        self._pending.add(rel, force=True)
                    for rel in report.extra:
                        self._pending.add(rel)
                else:  # more problems than a report lists: let a scan queue them all
                    self._scan(deep=True)
                self._drain()
            if self._stop.is_set():
                break
            self._set_state("verifying")
            rechecked = recheck(report, marker=self.options.marker, stop=self._stop, stamps=True)
            report = self._walk_and_compare() if rechecked is None else rechecked
            self._report = report
        if self._stop.is_set():
            return True
        if self._source_changed(changes):  # (what differs then is the writer's doing)
            return self._cancel(changes, "during its verification")
        walked = time.monotonic()
        with self._lock:
            self._reload_arrays()  # the final metadata: exact expected counts
            self._verification = report.summary()
            if report.ok:  # exact figures, where the live counts were kept approximately
                self._c.files_at_destination = report.files_checked
                self._c.bytes_at_destination = report.bytes_checked
                self._c.chunks_at_destination = report.files_checked - report.metadata_files
        if not report.ok:
            first = next(report.lines(), "")
            raise _Fatal(
                f"verification failed: {report.n_missing} missing, {report.n_mismatched} "
                f"mismatched, {report.n_extra} extra, {report.n_unreadable} unreadable (first: "
                f"{first.strip()}); run `napari-softcopy verify {self.source} "
                f"{self.destination}` for the list, fix the cause and run the copy again"
            )
        try:  # verification read the path: it must still lead to the tree we wrote
            self._dest.check()
        except DestinationChanged as exc:
            raise _Fatal(exc.strerror) from None
        while True:  # a destination that fills up or turns read-only now: wait, as for files
            try:
                if not self._write_marker(report, changes, walked):
                    if self._stop.is_set():
                        return True  # (ends as "stopped")
                    return self._cancel(changes, "right before its marker")
                break
            except OSError as exc:
                if exc.errno not in _DEST_RETRY_ERRNOS:
                    raise
                self._dest_error(self.options.marker, exc)
                self._wait_backoff()
                if self._stop.is_set():
                    return True
        if self._marker_at is not None:
            self._marker_to_verified = round(time.monotonic() - self._marker_at, 3)
        self._set_state(
            "verified",
            f"verified complete: {report.files_checked} files, "
            f"{report.bytes_checked / 2**20:.1f} MiB identical",
        )
        return True

    def _write_marker(self, report: VerifyReport, changes: int, walked: float) -> bool:
        """Flush the copy, then write the marker: it means "verified complete". Unless a
        change at the source was counted since ``changes``, checked right before the write,
        or a stop came (False: nothing written); ``walked`` is when the verification ended."""
        dest = self._dest
        dest.flush()
        if not self._marker_before_walk:
            # Without the acquisition's marker, the events of a write made just before the
            # verification ended may still be on their way (they are read in batches): give
            # them the time the finish gives the events before its walk. (The flush above
            # usually took longer.)
            self._stop.wait(max(0.0, walked + SETTLE_S - time.monotonic()))
        if self._source_changed(changes) or self._stop.is_set():
            return False
        marker = self.options.marker
        src_marker = self.source / marker
        try:
            data = src_marker.read_bytes()
            mtime_ns = os.stat(src_marker).st_mtime_ns
        except FileNotFoundError:
            summary = report.summary() | {"verified_at": time.time(), "source": self._src}
            data = (json.dumps(summary, indent=1) + "\n").encode()
            mtime_ns = None
        # The last look, with nothing left to do but the write. (A change from here on is
        # as late as one just after the write: the marker says what the source was.)
        if self._source_changed(changes):
            return False
        write_file(dest, marker, data, mtime_ns=mtime_ns)
        return True


def verify_processes(files: int) -> int:
    """Processes for the final verification walk of ``files`` files: two for a large
    archive where two cores are available (`PARALLEL_VERIFY_FILES`), else one."""
    return 2 if files >= PARALLEL_VERIFY_FILES and available_cores() >= 2 else 1


def _is_ready_source(path: Path) -> bool:
    try:
        return path.is_dir() and node_kind(path) is not None
    except Exception:
        return False


def copy(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    options: CopyOptions | None = None,
    timeout: float | None = None,
) -> CopyEngine:
    """Run a copy to its end in the calling thread; return the ended engine."""
    engine = CopyEngine(source, destination, options)
    engine.start()
    engine.wait(timeout)
    return engine
