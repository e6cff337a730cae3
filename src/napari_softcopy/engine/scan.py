"""The resume scan: walk the source against the destination once (`march.march`), queue what
is missing or stale, count what is already there, and notice changes that events missed.
A long first scan is split with a helper process (`scan_walk`). The periodic rescan skips
the folders proven during the copy that are unchanged since (`_Proven`)."""

from __future__ import annotations

import logging
import math
import pickle
import time

from ..checks import free_space_warning
from ..destinations import LocalDestination
from ..march import march
from ..platform import IS_LINUX, available_cores
from ..proofs import FolderProofs
from ..scan_walk import SPLIT_AT_ONCE_FOLDERS, ScanHandler, ScanHelper
from ..source_looks import proven_unchanged
from .state import EngineState, _Fatal

log = logging.getLogger(__package__)  # (one logger for the engine, as before the split)


class Scan(EngineState):
    """The whole-tree scan (at start, periodic, on lost events, deep after a failed
    verification)."""

    def _scan(self, *, initial: bool = False, deep: bool = False, periodic: bool = False) -> None:
        """Walk the source; queue every file whose destination copy is missing or stale.

        At the first scan also remove our own temporary files left by a killed run, and count
        what is already at the destination (resume). Only a ``deep`` scan (when verification
        found more problems than it lists) also compares the source stamp recorded on files
        whose size and mtime match: three system calls a file, which would double the scan
        that resumes a copy of a million files. Other scans leave a rewrite with its size and
        mtime put back to verification, which compares every stamp before "verified".

        The first scan, from `Tuning.scan_split_after_s` on (at once where the watcher found
        `scan_walk.SPLIT_AT_ONCE_FOLDERS` folders at the start), shares its walk with a helper
        process (`scan_walk.ScanHelper`) where two cores are available and the destination
        is a local folder: a resume must not stall the copy. Later scans run at the
        acquisition's side and keep to one core. Where the helper cannot be used, the
        status's notices say why ("the first scan's helper process is off: ...").

        A ``periodic`` scan (every `CopyOptions.rescan_interval` s, or asked for by the
        watcher, while no finish is requested) does not walk the folders proven during the
        copy that are unchanged since (`_Proven`): a watched one's change would have marked
        it (its event), an unwatched one is looked at on its source side only. It is the
        safety net against lost events, and a lost event (an overflow) makes every proof
        stale, so such a scan walks everything again. It is not a whole scan for the
        finish's wait: the temporary files and the "scan after the last change" that a
        requested finish waits for are those of the last scan without skips (the first, a
        deep one, the one that confirms quiet, the one before a `finish_when_idle` finish).
        """
        t0 = time.monotonic()
        with self._lock:
            writes_before = self._counters.files_copied + self._counters.files_deleted
        walk = _ScanWalk(self, initial=initial, deep=deep)
        # A scan but the first and a deep one gives way to a finish, whose verification
        # walks everything again anyway: on a large archive the scan running at the marker
        # would delay it.
        yields = not (initial or deep)
        stop = self._stop

        def cancelled() -> bool:  # (a finish that waits for quiet wants this scan whole)
            return stop.is_set() or (
                yields and self._finish_reason is not None and not self._finish_needs_quiet()
            )

        split = _Split(self, walk, cancelled, t0) if initial and not deep else None
        proven = _Proven.for_scan(self, walk) if periodic and not (initial or deep) else None
        try:
            share = None if split is None else split.share
            whole = march(
                self._src, self._dest, walk, cancelled=cancelled, share=share, vouch=proven
            )
            if whole and split is not None:
                whole = split.finish()
        finally:
            if split is not None:
                split.close()
            if proven is not None:
                proven.close()
        if not whole:
            return  # cut short: keep the counts of the last whole scan
        if initial and walk.files_dst and not deep and (off := walk.plain_listing_off()):
            # (a resume, where that fast path decides a day's copies: said once; only the
            # scan's speed differs, not what it finds)
            self._degraded.degrade("the resume scan's plain listing", off)
        skipped = proven is not None and proven.vouched > 0
        self._scanned_changes(walk.newest, t0, whole=not skipped)
        with self._lock:
            c = self._counters
            c.scans += 1
            c.last_scan_s = time.monotonic() - t0
            c.scan_folders_skipped = 0 if proven is None else proven.skipped
            c.scan_folders_looked_at = 0 if proven is None else proven.looked_at
            if not skipped:  # (a temporary file in a folder skipped is not seen)
                c.temp_files = walk.temp
            if c.files_copied + c.files_deleted == writes_before:
                c.files_at_destination = walk.files_dst
                c.bytes_at_destination = walk.bytes_dst
                c.chunks_at_destination = walk.chunks_dst
            else:
                # Copies landed beside the walk, most in folders it had listed before them (a
                # scan queues a folder's files once it has listed it): its figures miss them,
                # and would set the progress back (15,085 of 50,000 chunks shown after 45,303
                # files copied). The larger is kept; the finish counts exactly.
                c.files_at_destination = max(c.files_at_destination, walk.files_dst)
                c.bytes_at_destination = max(c.bytes_at_destination, walk.bytes_dst)
                c.chunks_at_destination = max(c.chunks_at_destination, walk.chunks_dst)
            self._arrays_dirty = True
        if proven is not None:
            proven.log(c.last_scan_s)

    def _scanned_changes(self, newest_ctime_ns: int, started: float, whole: bool = True) -> None:
        """Count, as a change at the source, a ctime newer than any a whole scan found
        before, unless an event already told of it (see `SourceActivity.note`): events are
        lost on an overflow, or not given beyond the inotify watch limit. Also record when
        the last whole scan began: a requested finish waits for one after the last change
        (a scan that skipped proven folders is not ``whole``: it saw no ctime there)."""
        if newest_ctime_ns > self._newest_ctime_ns:
            self._newest_ctime_ns = newest_ctime_ns
            # The file's clock to ours. (On a network source with a skewed clock a change
            # may be dated wrongly: one in the future counts as now; events do not depend
            # on it.)
            age = max(0.0, time.time() - newest_ctime_ns / 1e9)
            self._activity.note(time.monotonic() - age)
        if whole:
            self._last_scan_started = started


class _ScanWalk(ScanHandler):
    """One scan's handler of the walk in the engine: its effects act on the engine."""

    __slots__ = ("engine", "free", "to_copy")

    def __init__(self, engine: Scan, *, initial: bool, deep: bool) -> None:
        super().__init__(engine._dest, engine.options.marker, initial=initial, deep=deep)
        self.engine = engine
        self.to_copy = 0
        # At the first scan, warn as soon as more is found to copy than the destination has
        # free: before it fills up, not after the scan of a huge tree.
        self.free = engine._dest.free_space() if initial else None

    def root_vanished(self) -> None:
        engine = self.engine
        raise _Fatal(
            f"source {engine.source} vanished; the destination {engine.destination} "
            "is kept intact. Restore the source and run the same command again"
        )

    def error(self, rel: str, message: str) -> None:
        self.engine._error(rel, message)

    def marker(self) -> None:
        if not self.engine._marker_seen:
            self.engine._on_marker()

    def queue(self, rel: str, size: int) -> None:
        engine = self.engine
        self.to_copy += size
        if self.free is not None and self.to_copy > self.free:
            self.free = None
            warning = free_space_warning(engine.destination, self.to_copy)
            if warning:
                engine._error("", warning)
        engine._pending.add(rel, size=size)
        if engine._finish_reason is not None:
            engine._start_copy_helper_if_worth_it()
        engine._pending.wait_for_room(engine.tuning.pending_limit, engine._stop)

    def mirror_delete(self, rel: str) -> None:
        self.engine._pending.add(rel)  # gone at the source: mirror the delete

    def own_temp(self, rel: str) -> None:
        self.dest.unlink(rel)  # left by a killed run; we hold the lock

    def stale_marker(self, rel: str) -> None:
        if not (self.engine.source / rel).exists():
            # A marker here says "verified complete"; the source goes on, so it no longer
            # holds until we verify again.
            self.dest.unlink(rel)


class _Split:
    """A first scan shared with a helper process (`scan_walk`): before each folder, the
    engine's walk takes what the helper found so far and, when the helper is idle, hands
    it the shallowest folder still to walk."""

    def __init__(self, engine: Scan, walk: _ScanWalk, cancelled, started: float) -> None:
        self.engine = engine
        self.walk = walk
        self.cancelled = cancelled
        after = engine.tuning.scan_split_after_s
        if after != math.inf and _folders_found(engine) >= SPLIT_AT_ONCE_FOLDERS:
            after = 0.0  # (a large tree: the helper's start is won back many times over)
        self.start_at = started + after
        self.helper: ScanHelper | None = None
        self.tried = False
        self.given: str | None = None  # the folder the helper walks
        self.handed = 0

    def share(self, stack: list[tuple[str, bool, bool]]) -> None:
        """`march`'s ``share``: take the helper's effects, give it a folder when idle."""
        helper = self.helper
        if helper is None:
            if self.tried or len(stack) < 2 or time.monotonic() < self.start_at:
                return
            self.tried = True
            helper = self.helper = self._start()
            if helper is None:
                return
        while self.given is not None and helper.ready():
            done = helper.receive(self.walk)
            if done is None:  # failed: walk its folder here
                stack.append((self.given, True, True))
                self.given = None
                return
            if done:
                self.given = None
        if self.given is None and len(stack) > 1 and helper.process.running:
            for i, (rel, at_source, _) in enumerate(stack[:-1]):  # (the next one is ours)
                if at_source:
                    del stack[i]
                    if helper.send(rel):
                        self.given = rel
                        self.handed += 1
                    else:
                        stack.append((rel, True, True))
                    return

    def finish(self) -> bool:
        """Wait for the helper's folder (walk it here if the helper fails); False when the
        scan was cancelled meanwhile."""
        while self.given is not None:
            done = self.helper.receive(self.walk, self.engine._stop)
            if done is None:
                if self.cancelled():
                    return False
                rel, self.given = self.given, None
                return march(
                    self.engine._src,
                    self.engine._dest,
                    self.walk,
                    start=rel,
                    cancelled=self.cancelled,
                )
            if done:
                self.given = None
        return True

    def close(self) -> None:
        if self.helper is not None:
            self.helper.close()
            log.info("the first scan shared %d folders with a helper process", self.handed)

    def _start(self) -> ScanHelper | None:
        engine = self.engine
        dest = engine._dest
        why = None
        if available_cores() < 2:
            why = "one CPU core available"
        elif not isinstance(dest, LocalDestination):
            why = "the destination is not a local or mounted folder"
        elif dest.capabilities.records:
            # (the records of copies being published now live in this process only)
            why = "the destination keeps records of its copies (its mtimes are not kept)"
        elif not IS_LINUX:  # (the helper ends with the engine's thread: Linux's prctl)
            why = "not on Linux"
        if why is not None:  # (said once, in the log and the status's notices)
            engine._degraded.degrade("the first scan's helper process", why)
            return None
        helper = ScanHelper(engine._src, dest, engine.options.marker, initial=self.walk.initial)
        return helper if helper.process.running else None


def _folders_found(engine: Scan) -> int:
    """The source's folders the watcher found at its start (watched, or not: past the limit);
    0 where it does not say (watchdog's observer, or not watching)."""
    watching = engine._watching
    if watching is None:
        return 0
    return (watching.watched_folders or 0) + watching.unwatched_folders


class _Proven:
    """A periodic rescan's ``vouch`` (`march`): the folders proven during the copy whose
    proof stands (`FolderProofs.standing`, asked as the walk comes to each) are not walked.

    - Watched all along since proven (the same watch descriptor): any change to its entries
      since, or to their copies by the engine, would have marked the folder (its event,
      handled or still on its way to the pending set with its hint; the engine's own publish
      or delete), and a lost event makes every proof stale (`FolderProofs.reset`, checked at
      each folder: an overflow during the scan ends the skipping). Not looked at.
    - Without that watch (given back at the watch limit): no event vouches for it, so its
      source side is looked at by `source_looks.source_unchanged` (the one rule,
      `destinations.copy_difference`, against the rows its proof listed: a file's size,
      mtime and stamp, the same names and subfolders): about two thirds of the CPU of its
      two-tree walk (`benchmarks.rescan`: 39-62 against 60-110 us a folder of ten files).
      A folder that fails the look is marked (to be proven again) and walked as before.

    The root is always walked (its metadata, the marker). The folders vouched for count
    as their proofs say in the scan's figures (``files_at_destination``...).
    """

    def __init__(self, engine: Scan, walk: _ScanWalk, proofs: FolderProofs) -> None:
        self.engine = engine
        self.walk = walk
        self.proofs = proofs
        self.resets = proofs.resets
        # (asked folder by folder as the walk comes to it, `FolderProofs.standing`: a mark
        # made since the scan began counts, and so does a watch given back since: a live
        # view of the watches, nothing copied)
        self.watches = engine._watching.folder_watches() or {}
        self.capabilities = engine._dest.capabilities
        self.root_fd = engine._src_fd
        self.skipped = self.looked_at = self.walked = 0
        self._spool = None

    @classmethod
    def for_scan(cls, engine: Scan, walk: _ScanWalk) -> _Proven | None:
        """The ``vouch`` of a periodic scan; None where no proof is kept (watchdog's
        observer, `--verify checksum`, `Tuning.prove_folders` off: the scan walks all)."""
        proofs, watching = engine._proofs, engine._watching
        if proofs is None or watching is None or watching.folder_watches() is None:
            return None
        if engine._src_fd < 0:
            return None
        return cls(engine, walk, proofs)

    @property
    def vouched(self) -> int:
        """Folders not walked."""
        return self.skipped + self.looked_at

    def __call__(self, rel: str) -> tuple[str, ...] | None:
        if not rel or self.proofs.resets != self.resets:
            return None
        found = self.proofs.standing(rel, self.watches.get(rel))
        if found is None:
            return None
        proof, unwatched = found
        if unwatched:
            if not self._unchanged(rel, proof):
                self.walked += 1
                self.proofs.mark(rel)  # (changed without an event: to be proven again)
                return None
            self.looked_at += 1
        else:
            self.skipped += 1
        walk = self.walk
        walk.files_dst += proof.files
        walk.bytes_dst += proof.bytes
        walk.chunks_dst += proof.files - proof.metadata
        return proof.subfolders

    def _unchanged(self, rel: str, proof) -> bool:
        """The look at the unwatched proven folder ``rel``'s source (`proven_unchanged`, as
        the finish's)."""
        look = (rel, proof.offset, proof.length, proof.subfolders)
        try:
            if self._spool is None:
                self._spool = open(self.proofs.spool.path, "rb")  # noqa: SIM115 (`close`)
            return proven_unchanged(self.root_fd, self._spool.fileno(), look, self.capabilities)
        except (OSError, pickle.UnpicklingError, EOFError):
            return False  # (walked: the spool is the proofs' own, this only guards)

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()

    def log(self, seconds: float) -> None:
        """The scan's line: what it walked, skipped, looked at on the source side."""
        log.info(
            "rescan in %.2f s: %d proven folders skipped (watched since proven), %d looked at "
            "on their source side only (without a watch), %d of those changed and walked",
            seconds,
            self.skipped,
            self.looked_at,
            self.walked,
        )
