"""The engine's shared state: every attribute its parts read and write, declared in one
place (`EngineState.__init__`), the counters, the state machine and the status snapshot."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from ..copy_helper import CopyHelper
from ..destinations import Destination, is_s3_url
from ..hashes import HashJournal
from ..jobs import DestinationLock
from ..layout import ArrayLayout, find_arrays, is_metadata_name
from ..options import CopyOptions
from ..pending import PendingSet
from ..platform import Notices
from ..proofs import FolderProofs
from ..quiet import SourceActivity
from ..status import FINAL_STATES, JobState, Status
from ..transfer import RateLimiter
from ..verify import VerifyReport
from ..watching import Watching
from .tuning import Tuning

log = logging.getLogger(__package__)  # (one logger for the engine, as before the split)


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
    scan_folders_skipped: int = 0  # (of the last scan: see `Status`)
    scan_folders_looked_at: int = 0
    error_count: int = 0
    errors: deque = field(default_factory=lambda: deque(maxlen=50))
    # [whole second, files, bytes] buckets of the last few seconds: the recent rate
    rate_window: deque = field(default_factory=lambda: deque(maxlen=8))


class EngineState:
    """What the engine's parts share: the roots, the options and `Tuning`, the pending set,
    the stop and wake events, the counters (`_counters`, under `_lock`), the state and its message,
    what is known of the marker, of the source's activity and of the finish.

    The parts (`live`, `scan`, `helpers`, `finish`, and the control of `core.CopyEngine`)
    are mixins over this one state; each attribute is set here, with why it exists.
    """

    def __init__(
        self,
        source: str | os.PathLike,
        destination: str | os.PathLike,
        options: CopyOptions | None = None,
        tuning: Tuning | None = None,
    ) -> None:
        self.options = options or CopyOptions()
        self.tuning = tuning or Tuning()
        self.source = Path(os.path.abspath(os.fspath(source)))
        # A folder as an absolute path; an s3:// URL as given (`destinations.open_destination`).
        self.destination: Path | str = (
            destination if is_s3_url(destination) else Path(os.path.abspath(os.fspath(destination)))
        )
        self._src = os.fspath(self.source)
        self._pending = PendingSet()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._finish_reason: str | None = None
        self._rescan_requested = False
        self._lock = threading.Lock()
        self._counters = _Counters()
        self._state = JobState.STARTING
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
        self._backoff_said: set[int | None] = set()  # errnos said in this backoff round
        # Why the destination takes no data now, and until when the copy waits for it
        # (`Status.destination_away`); None once a write went through again.
        self._away: tuple[str, float] | None = None
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
        # What `platform.degrade` reports from this engine's threads (each runs its target
        # through `Notices.thread_target`): this copy's alone, not another engine's.
        self._degraded = Notices()
        self._unholdable: set[str] = set()  # names the destination cannot hold (said once)
        self._watching: Watching | None = None  # the source's file events, once started
        self._hints_left_to_scans = False  # an event found the backlog full (said once)
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
        self._freed: dict | None = None  # --move: what freeing the source did (Status.freed)
        # Each copied file's hash, made as it is copied (`hashes`): the manifest at the
        # finish hashes only what it holds nothing of.
        self._hashes: HashJournal | None = None
        # The folders proven copied during the acquisition (`proofs`; None: not kept), the
        # lock held while one is compared, and whether proving waits (a finish walks).
        self._proofs: FolderProofs | None = None
        self._proving = threading.Lock()
        self._proving_paused = False
        self._proven: list[str] = []  # folders the finish's walk vouched for by their proof
        self._proofs_seq = 0  # the last mark when it took them
        self._walk_counts: dict[str, int] = dict.fromkeys(
            ("folders_walked", "folders_proven", "folders_checked_at_source"), 0
        )
        self._walk_started = 0.0  # monotonic: the finish's first verification walk began

    @property
    def state(self) -> JobState:
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
            c = self._counters
            window = list(c.rate_window)
            if self._arrays_dirty and self._state not in FINAL_STATES:
                self._reload_arrays()
            expected = sum(a.n_chunks for a in self._arrays)
            errors = list(c.errors)
            watching = self._watching
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
                scan_folders_skipped=c.scan_folders_skipped,
                scan_folders_looked_at=c.scan_folders_looked_at,
                marker_seen=self._marker_seen,
                finish_reason=self._finish_reason,
                marker_to_verified_s=self._marker_to_verified,
                error_count=c.error_count,
                errors=errors,
                verification=self._verification,
                message=self._message,
                notices=self._notices + self._degraded.lines(),
                freed=self._freed,
                destination_info=None if self._dest is None else self._dest.summary,
                waiting_for=self._waiting_for,
                destination_away=self._away_text(now),
                folders_watched=None if watching is None else watching.watched_folders,
                folders_unwatched=0 if watching is None else watching.unwatched_folders,
            )
        recent = [(t, f, b) for t, f, b in window if now - t < 5.0]
        if recent:
            span = min(5.0, max(now - recent[0][0], 1.0))
            snap.rate_files_s = round(sum(f for _, f, _ in recent) / span, 2)
            snap.rate_bytes_s = round(sum(b for _, _, b in recent) / span, 1)
        return snap

    def _destination_back(self) -> None:
        """A write went through: the backoff starts again from 1 s, a failure from now on is
        a new round (said again), and the status no longer says the destination is away."""
        self._backoff = 0.0
        self._backoff_until = 0.0
        self._away = None

    def _away_text(self, now: float) -> str | None:
        away = self._away
        if away is None or self._state in FINAL_STATES:
            return None
        what, until = away
        left = math.ceil(until - now)
        return f"{what}; retrying {f'in {left} s' if left > 0 else 'now'}"

    # ------------------------------------------------------------------ bookkeeping
    def _set_state(self, state: JobState, message: str | None = None) -> None:
        with self._lock:
            if self._state in FINAL_STATES:
                return  # (a failure found by another thread stands)
            if message is not None or state != self._state:
                self._message = message or ""  # (a message belongs to the state it came with)
            self._state = state

    def _error(self, path: str, message: str) -> None:
        log.warning("%s: %s", path or self.source, message)
        with self._lock:
            self._counters.error_count += 1
            self._counters.errors.append({"path": path, "message": message, "time": time.time()})

    def _reload_arrays(self) -> None:
        # Called with self._lock held. A metadata file may be mid-rewrite by an in-place
        # writer: keep the previous knowledge rather than fail.
        try:
            self._arrays = find_arrays(self.source, strict=False)
            self._arrays_dirty = False
        except OSError:
            pass

    def _hash_as_copied(self) -> bool:
        """Whether a copy hashes its bytes for the manifest (`HashJournal.wants_digests`)."""
        hashes = self._hashes
        return hashes is not None and hashes.wants_digests

    def _is_chunk(self, rel: str) -> bool:
        name = rel.rpartition("/")[2]
        return not is_metadata_name(name) and rel != self.options.marker

    def _fail(self, message: str) -> None:
        with self._lock:
            if self._state in FINAL_STATES:
                return
            self._state = JobState.FAILED
            self._message = message
        self._error("", message)
        self._stop.set()
        self._pending.close()
        self._wake.set()
