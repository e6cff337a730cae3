"""`CopyEngine`: the public API, and the control and status threads that run the parts."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path

from ..checks import InputError, check_pair
from ..destinations import DestinationChanged, S3SettingsError, open_destination
from ..hashes import HashJournal
from ..layout import node_kind
from ..move_step import resuming
from ..options import CopyOptions
from ..platform import lower_thread_priority
from ..quiet import SourceActivity
from ..readiness import SourceEventHandler
from ..status import FINAL_STATES, JobState, write_status_file
from ..watching import start_watching
from .finish import Finish
from .finish_wait import _CONFIRM_BY_SCAN
from .helpers import HelperPump
from .live import LiveCopy
from .scan import Scan
from .state import _Fatal
from .walks import Walks

log = logging.getLogger(__package__)  # (one logger for the engine, as before the split)


class CopyEngine(LiveCopy, Scan, HelperPump, Finish, Walks):
    """Mirror ``source`` into ``destination`` while it is written, then verify.

    Parameters
    ----------
    source, destination : path
        The Zarr archive being acquired and where its copy goes.
    options : CopyOptions, optional
        How to copy.
    tuning : Tuning, optional
        The engine's numeric trade-offs (today's values by default).

    Examples
    --------
    >>> engine = CopyEngine("/data/acq.zarr", "/mnt/cluster/acq.zarr")
    >>> engine.start()
    >>> engine.wait()  # returns True once the copy is verified complete
    """

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
        if not (self.options.move and resuming(self.source, self.destination)):
            check_pair(
                self.source,
                self.destination,
                force=self.options.force,
                wait_for_source=self.options.wait_for_source,
            )
        self._dest_lock.acquire()
        self._started_at = time.time()
        self._t0 = time.monotonic()
        self._control = threading.Thread(
            target=self._degraded.thread_target(self._run), name="softcopy-control", daemon=True
        )
        self._control.start()
        status = threading.Thread(
            target=self._degraded.thread_target(self._status_loop),
            name="softcopy-status",
            daemon=True,
        )
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
        # No lock: two plain assignments need none (no caller need wait for the engine's
        # lock, held by a status read or a scan).
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
        return self._state == JobState.VERIFIED

    # ------------------------------------------------------------------ threads
    def _status_loop(self) -> None:
        path = self.options.status_file
        next_status = 0.0
        while True:
            ended = self._control is not None and not self._control.is_alive()
            now = time.monotonic()
            due = ended or now >= next_status
            if not ended and self._state not in (JobState.STARTING, JobState.WAITING):
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
            self._stop.wait(
                min(self.tuning.marker_poll_s, max(0.0, next_status - time.monotonic()))
            )
            if self._stop.is_set() and self._control is not None:
                self._control.join(3.0)

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

    def _run(self) -> None:
        if self.options.low_priority:
            lower_thread_priority()
        watching = None
        try:
            if self.options.move and resuming(self.source, self.destination):
                self._dest = open_destination(self.destination)  # (a killed move's rerun)
                self._free_source("verified complete earlier")
                return
            if not self.source.exists():
                self._set_state(JobState.WAITING, f"waiting for {self.source} to appear")
                while not self._stop.is_set() and not _is_ready_source(self.source):
                    self._stop.wait(0.05)
                if self._stop.is_set():
                    self._set_state(JobState.STOPPED, "stopped while waiting for the source")
                    return
                check_pair(self.source, self.destination, force=self.options.force)
            self._src_fd = os.open(self._src, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            st = os.fstat(self._src_fd)
            self._source_identity = (st.st_dev, st.st_ino)
            try:
                self._dest = open_destination(self.destination)
            except S3SettingsError as exc:  # (the server went away since the checks)
                raise InputError(str(exc)) from None
            # (none where the destination keeps each upload's checked hash itself: `hashes`)
            if self.tuning.hash_during_copy and not self._dest.capabilities.verified_upload_digest:
                self._hashes = HashJournal(self._dest, low_priority=self.options.low_priority)
                self._hashes.start()
            self._activity = SourceActivity()  # quiet since now: watching begins below
            with self._lock:
                self._reload_arrays()
            # Before "copying": from then on the status thread may see the marker too.
            if (self.source / self.options.marker).exists():
                self.finish("already-complete")
            self._set_state(JobState.COPYING)
            # Watch before the first scan so nothing written meanwhile is missed.
            handler = SourceEventHandler(
                self._src,
                self._hint,
                self._request_rescan,
                self._root_gone,
                self._touched,
                hints=self._hints,
                folder_event=self._folder_event,
            )
            watching = start_watching(
                self._src,
                handler,
                self._on_overflow,
                self._request_rescan,
                max_watches=self.tuning.max_watches,
                release_idle_s=self.tuning.watch_release_idle_s,
            )
            with self._lock:
                self._notices.extend(watching.notices)
                self._watching = watching
            self._start_proving()
            self._copy_root_metadata()
            workers = self.options.workers or self._dest.suggested_workers()
            log.info("copying with %d worker thread(s)", workers)
            for i in range(max(1, workers)):
                t = threading.Thread(
                    target=self._degraded.thread_target(self._worker),
                    name=f"softcopy-worker-{i}",
                    daemon=True,
                )
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
                    JobState.STOPPED,
                    f"stopped; nothing partial was left. Resume with: napari-softcopy copy "
                    f"{self.source} {self.destination}",
                )
            if self._hashes is not None:
                self._hashes.close()  # (what it had not hashed is recorded as such)
            if self._proofs is not None:
                self._pause_proving(True)
                self._proofs.discard()
            if self._dest is not None:
                self._dest.close()
            if self._src_fd >= 0:
                os.close(self._src_fd)
                self._src_fd = -1
            self._dest_lock.release()

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
                # (proven folders skipped, unless a finish waits: then it is whole)
                self._scan(periodic=self._finish_reason is None)
                end = time.monotonic()
                next_scan = end + self.options.rescan_interval
                earliest_rescan = end + max(
                    self.tuning.rescan_spacing_s, 3 * self._counters.last_scan_s
                )
            if (
                idle is not None
                and self._finish_reason is None
                and now - self._last_activity >= idle
                and len(self._pending) == 0
            ):
                self._scan()
                if self._counters.temp_files == 0 and len(self._pending) == 0:
                    self.finish("idle")
                else:
                    self._last_activity = time.monotonic()


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
