"""The finish: drain, verify (re-copying what differs), write the marker, or cancel it when
the source changed meanwhile (when it may begin: `finish_wait`)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time

from ..destinations import Destination, DestinationChanged
from ..destinations.away import RETRY_ERRNOS
from ..manifest import MANIFEST, manifest_for_copy
from ..move_step import deleted_log_for, free_after_copy
from ..status import JobState
from ..transfer import write_file
from ..verify import VerifyReport, WalkHelper, recheck, start_helpers
from .finish_wait import FinishWait
from .state import _Fatal

log = logging.getLogger(__package__)  # (one logger for the engine, as before the split)


class Finish(FinishWait):
    """The finish, up to the marker (when it may begin: `FinishWait`)."""

    # ------------------------------------------------------------------ finishing
    def _drain(self, *, settle: bool = False, leave: int = 0) -> None:
        """Wait until at most ``leave`` paths are pending; with ``settle``, also until no
        event has arrived for `Tuning.settle_s` (at most `Tuning.settle_max_s`), unless the
        marker's own event has: when the marker is noticed by looking for it, events for the
        writer's last files may still wait in the queue, and verifying before they are copied
        would only cost another verification round. Once the marker's event is delivered, all
        those before it are."""
        deadline = time.monotonic() + self.tuning.settle_max_s
        while True:
            self._pending.wait_for_room(leave, self._stop)
            if self._stop.is_set():
                return
            quiet = time.monotonic() - self._last_event
            if (
                not settle
                or self._marker_event_seen
                or quiet >= self.tuning.settle_s
                or time.monotonic() >= deadline
            ):
                return
            # (or until the marker's event)
            self._stop.wait(min(self.tuning.settle_s - quiet, 0.02))

    def _finish(self) -> bool:
        """Copy the rest, verify, write the marker. True when the engine has ended (verified,
        or stopped); False when a change at the source cancelled the marker (`_cancel`):
        copying goes on and the finish is tried again."""
        self._set_state(JobState.FINISHING)
        # Changes counted from here on cancel the marker. On the marker, from the end of the
        # settling below: the writer's last events, queued before its marker, may still come
        # (and from the marker's own event once it has come: `_source_changed`).
        changes = self._activity.changes
        self._marker_before_walk = False
        self._start_copy_helper_if_worth_it()
        # The walk's helper processes start beside the last copies: ready when it begins.
        # (Not where folders proven during the copy leave little to walk: `Walks`.)
        helpers = [] if self._proofs_usable() else start_helpers(self._verify_processes() - 1)
        try:
            self._drain(settle=True, leave=self._walk_beside())
            if self._marker_seen:
                changes = self._activity.changes
                self._marker_before_walk = True
            self._final_walk = True
            if self._stop.is_set():
                return True
            if len(self._pending) == 0:  # (else "finishing" until the last copies are done)
                self._set_state(JobState.VERIFYING)
            # The last copies are written back while the walk below reads both trees (the
            # walk reads, it does not write): the flush before the marker has little left.
            flushing = threading.Thread(
                target=self._degraded.thread_target(self._flush_early),
                name="softcopy-flush",
                daemon=True,
            )
            flushing.start()
            try:
                return self._verify_and_mark(helpers, changes)
            finally:
                flushing.join()
        finally:
            for helper in helpers:
                helper.close()
            self._discard_listing()

    def _walk_beside(self) -> int:
        """Files still to copy when the verification walk starts: `Tuning.
        verify_beside_pending`, three times that where the walk reads the copy's own tree in
        this process (an object store: `Destination.walk_helpers_help` False). There the
        last uploads go fast once the writer is done (a thousand of 50,002 in 0.36 s at load
        4, into SeaweedFS) while the walk of their one folder took 0.64 s, so it ended 0.19-0.28
        s after the last upload; the files it finds missing are only compared again."""
        beside = self.tuning.verify_beside_pending
        return beside if self._dest.walk_helpers_help() else 3 * beside

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
        self._pause_proving(False)  # (folders are proven again while copying goes on)
        self._set_state(JobState.COPYING, message)
        return False

    def _flush_early(self) -> None:
        with contextlib.suppress(OSError):  # the flush before the marker reports errors
            self._dest.flush()

    def _verify_and_mark(self, helpers: list[WalkHelper], changes: int) -> bool:
        """Verify, then write the marker unless a change at the source was counted since
        ``changes``. True when ended (verified, or stopped); False when cancelled."""
        # Verification is the final scan: it walks both trees once and compares what a deep
        # scan would (size, mtime, the recorded source stamp), and more. A walk costs seconds
        # on a million files; one walk instead of two is most of the time from the marker to
        # "verified". It starts beside the last copies (`Tuning.verify_beside_pending`); whatever it
        # finds (those copies, lost events, a late rewrite, a chunk deleted at the source) is
        # synced, then compared again: only those files where the report lists them all, the
        # whole tree otherwise.
        report = self._first_walk(helpers)
        # The copies the walk ran beside finish first (none may still be in flight when the
        # counts and the marker are written). What the walk saw before its copy was done is
        # only compared again: queued again while in flight, a mismatched file would be
        # copied twice (forced).
        self._drain()
        report = self._until_identical(report, changes)
        if self._proofs_stale() and not self._stop.is_set():
            # A folder vouched for by its proof changed beside the walk: walk everything.
            log.info("a folder proven during the copy changed during the finish: full walk")
            report = self._until_identical(self._walk_and_compare(), changes)
        if self._stop.is_set():
            return True
        if self._source_changed(changes):  # (what differs then is the writer's doing)
            return self._cancel(changes, "during its verification")
        return self._mark_verified(report, changes)

    def _until_identical(self, report: VerifyReport, changes: int) -> VerifyReport:
        """Copy again what ``report`` found different and compare it again (up to four
        rounds), until identical, stopped, or the source changed since ``changes``."""
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
            self._set_state(JobState.VERIFYING)
            # The recheck opens the destination anew: the records of the copies just drained
            # first (where mtimes cannot say, as through rclone mount, only they can). On a
            # share, written back here rather than with the flush before the marker: their
            # appends then delay the recheck's lookups, not the manifest's write (which they
            # slowed by 0.1-0.15 s in turns on sshfs: benchmarks/notes.md item 54).
            self._dest.save_records()
            rechecked = self._until_destination_answers(
                lambda report=report: recheck(
                    report, marker=self.options.marker, stop=self._stop, stamps=True
                )
            )
            report = self._walk_and_compare() if rechecked is None else rechecked
            self._report = report
        return report

    def _mark_verified(self, report: VerifyReport, changes: int) -> bool:
        """Fail where ``report`` is not ok; else write the marker (True when ended, False
        when a change at the source cancelled it)."""
        walked = time.monotonic()
        with self._lock:
            self._reload_arrays()  # the final metadata: exact expected counts
            # (verify_s: from the first walk to identical, the last copies beside it included)
            self._verification = (
                report.summary()
                | self._walk_counts
                | {"verify_s": round(walked - self._walk_started, 3)}
            )
            if report.ok:  # exact figures, where the live counts were kept approximately
                self._counters.files_at_destination = report.files_checked
                self._counters.bytes_at_destination = report.bytes_checked
                self._counters.chunks_at_destination = report.files_checked - report.metadata_files
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
                if self._backoff:
                    self._destination_back()
                break
            except OSError as exc:
                if exc.errno not in RETRY_ERRNOS:
                    raise
                self._dest_error(self.options.marker, exc)
                self._wait_backoff()
                if self._stop.is_set():
                    return True
        if self._marker_at is not None:
            self._marker_to_verified = round(time.monotonic() - self._marker_at, 3)
        verified = (
            f"verified complete: {report.files_checked} files, "
            f"{report.bytes_checked / 2**20:.1f} MiB identical"
        )
        if self.options.move:
            self._free_source(verified)
        else:
            self._set_state(JobState.VERIFIED, verified)
        return True

    def _free_source(self, verified: str) -> None:
        """``--move``: free the source of the verified copy (`move_step.free_after_copy`),
        here in the engine's process, so that a copy the widget started frees it too."""
        self._set_state(JobState.FREEING, f"{verified}; checking every file before deleting it")
        not_ended = None
        if self._force_finish and not (self.source / self.options.marker).exists():
            # Forced without the acquisition's marker or a quiet source: it may go on, and
            # writers read their chunks back. The copy stands; the source stays.
            not_ended = (
                "the finish was forced (SIGUSR2) without the acquisition's marker "
                f"{self.options.marker!r}, so the acquisition may still be going on; once it "
                "has surely ended, run the same command again to free the source"
            )
        self._freed = free_after_copy(
            self.source,
            self._dest,
            stop=self._stop,
            deleted_log=deleted_log_for(self.options.status_file),
            marker_at=self._marker_at,
            not_ended=not_ended,
        )
        self._set_state(JobState.VERIFIED, f"{verified}; {self._freed['message']}")

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
            self._stop.wait(max(0.0, walked + self.tuning.settle_s - time.monotonic()))
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
        # A rerun on a finished, verified pair writes nothing: this run wrote and deleted no
        # file, the marker says what it would say, and the manifest of that verified copy is
        # there (its hashes are those of what the first run read back, kept as they were).
        with self._lock:
            wrote = self._counters.files_copied + self._counters.files_deleted
        current = _marker_is_current(dest, marker, data, mtime_ns, self._src)
        unchanged = not wrote and current and dest.stat(MANIFEST) is not None
        # The manifest of what is now at the destination (read back after the flush), just
        # before the marker: a marker always has its manifest beside it (docs/move.md).
        try:
            done = unchanged or manifest_for_copy(
                dest,
                source=self._src,
                marker=marker,
                stop=self._stop,
                journal=self._hashes,
                listing=report.listing,
            )
            if done is None:
                return False  # (stopped)
            if done is not True:
                with self._lock:  # (the finish's own figure: `verification` in the status)
                    self._verification = (self._verification or {}) | {
                        "manifest_from_proofs": done.from_proofs,
                        "manifest_s": round(done.seconds, 3),
                    }
        except DestinationChanged as exc:
            raise _Fatal(exc.strerror) from None
        except OSError as exc:
            if exc.errno in RETRY_ERRNOS:
                raise  # (full, read-only: waited for like the marker)
            raise _Fatal(
                f"the manifest could not be made at {self.destination} ({exc.strerror or exc}), "
                "so no marker was written; fix the destination and run the same command again"
            ) from None
        # The last look, with nothing left to do but the write. (A change from here on is
        # as late as one just after the write: the marker says what the source was.)
        if self._source_changed(changes):
            return False
        if not (current and _marker_is_current(dest, marker, data, mtime_ns, self._src)):
            write_file(dest, marker, data, mtime_ns=mtime_ns)
        if self._hashes is not None:
            self._hashes.discard()  # (the manifest holds what it knew)
            self._hashes = None
        return True


def _marker_is_current(
    dest: Destination, marker: str, data: bytes, mtime_ns: int | None, source: str
) -> bool:
    """Whether the destination's marker already says what ``data`` says, so that a rerun on
    a finished, verified pair writes nothing: the source's marker copied (same bytes and
    mtime), or our summary of a verification of the same source with the same counts."""
    info = dest.stat(marker)
    if info is None or not info.is_file or info.size > 1 << 20:
        return False
    try:
        with dest.read(marker) as f:
            there = f.read()
    except OSError:
        return False
    if mtime_ns is not None:
        precision = dest.capabilities.mtime_precision_ns
        return there == data and abs(info.mtime_ns - mtime_ns) < precision
    try:
        old, new = json.loads(there), json.loads(data)
    except ValueError:
        return False
    same = ("source", "files_checked", "bytes_checked", "missing", "mismatched", "extra")
    return (
        isinstance(old, dict)
        and old.get("source") == source
        and all(old.get(k) == new.get(k) for k in same)
    )
