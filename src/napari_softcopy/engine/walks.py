"""The finish's verification walks, and the folders proven during the acquisition that spare
it most of its walk (`proofs`; why that holds: docs/architecture.md, "Why the finish need not
walk every file")."""

from __future__ import annotations

import logging
import os
import stat
import threading
import time

from ..assembly import ManifestLines
from ..destinations import LocalDestination
from ..destinations.away import RETRY_ERRNOS
from ..platform import available_cores, lower_thread_priority
from ..proofs import NO_WATCH, FolderProofs
from ..verify import VerifyReport, WalkHelper, verify_tree
from ..verify_folders import prove_folder, walk_unproven
from .state import EngineState
from .tuning import Tuning

log = logging.getLogger(__package__)  # (one logger for the engine, as before the split)


class Walks(EngineState):
    """Prove folders while the acquisition goes on; walk all, or only the unproven, at the
    finish."""

    # ------------------------------------------------------------------ proving
    def _start_proving(self) -> None:
        """Start proving folders in the background, where the events can vouch for them."""
        if not self.tuning.prove_folders or self.options.verify == "checksum":
            return  # (a checksum verification reads every file at the finish: nothing to spare)
        watching = self._watching
        if watching is None or watching.folder_watches() is None:
            return  # (watchdog's observer: its notice says the finish walks every folder)
        self._proofs = FolderProofs(self.tuning.max_proofs, self.tuning.prove_quiet_s)
        thread = threading.Thread(
            target=self._degraded.thread_target(self._prove_loop),
            name="softcopy-prove",
            daemon=True,
        )
        thread.start()
        self._threads.append(thread)

    def _watched(self) -> list[str]:
        """Every folder watched now, below the root (``""``: the root)."""
        watches = self._watching.folder_watches() if self._watching is not None else None
        return sorted(watches or ())  # (a live view: sorted copies it in one C call)

    def _mark_watched(self) -> None:
        """Mark every folder watched now that has no standing proof (a candidate to prove).
        A folder proven since it was watched keeps its proof: its events, or its look, vouch
        for it as for any other (a bulk copy's first scan lasts the whole copy, and marking
        its 30,000 folders proven meanwhile had them all compared again, their manifest
        lines no longer at hand: made again from the journal's segments at the finish)."""
        if self._proofs is not None:
            self._proofs.mark_unproven(self._watched())

    def _lost_events(self) -> None:
        """Events were lost (an overflow), or a folder moved with what it holds: no proof
        stands; every folder watched now (the watcher has watched the new ones) is to be
        proven again, the others are walked at the finish."""
        if self._proofs is not None:
            self._proofs.reset(also=self._watched())

    def _say_once(self, notice: str) -> None:
        """A notice for the status, the widget and the log (once each)."""
        with self._lock:
            if notice in self._notices:
                return
            self._notices.append(notice)
        log.warning("%s: %s", self.source, notice)

    def _prove_loop(self) -> None:
        if self.options.low_priority:
            lower_thread_priority()
        marked = False
        while not self._stop.wait(self.tuning.prove_interval_s):
            if not marked and self._counters.scans:
                # Every folder watched now is a candidate: those there before the copy began,
                # or created before `_start_proving` (their events marked nothing). Only once
                # the first scan is whole: it compares every folder in both trees anyway, and a
                # resume's watched folders proven beside it took about as much CPU as the scan
                # itself. (Folders its copies fill are marked by them, and proven meanwhile.)
                self._mark_watched()
                marked = True
            if not self._proving_paused:
                self._prove_due()

    def _prove_due(self) -> None:
        """Compare each folder quiet for `Tuning.prove_quiet_s` alone; keep its proof."""
        proofs, watching = self._proofs, self._watching
        # (a live view, each folder's watch looked up just before it is compared: a watch
        # given back meanwhile, or taken again, is another descriptor than the proof's then)
        watches = watching.folder_watches() if watching is not None else None
        if proofs is None or watches is None:
            return
        prefix = self._src + "/"
        quiet_before = time.monotonic() - self.tuning.prove_quiet_s
        # (its folders' manifest lines made as they are proven: the finish copies them)
        hashes, dest = self._hashes, self._dest
        if hashes is not None or dest.capabilities.verified_upload_digest:
            lines = ManifestLines(hashes, dest)
        else:
            lines = None
        for folder, mark, epoch in proofs.candidates(quiet_before):
            path = prefix + folder if folder else self._src
            watch = watches.get(folder)
            if watch is None:
                # Without a watch (past the limit: its copies marked it) it is proven all the
                # same, and vouched for at the finish only by a look at its source side.
                try:
                    there = stat.S_ISDIR(os.lstat(path).st_mode)
                except OSError:
                    there = False
                if not there:  # (deleted: nothing to prove)
                    proofs.drop(folder, mark)
                    continue
                watch = NO_WATCH
            with self._proving:
                if self._stop.is_set() or self._proving_paused:
                    return
                try:
                    proof = prove_folder(
                        self._src,
                        self._dest,
                        folder,
                        marker=self.options.marker,
                        spool=proofs.spool,
                        watch=watch,
                        stop=self._stop,
                        lines=lines,
                    )
                except OSError:  # (the destination away: the copy says so; tried again)
                    proof = None
            if proof is None or not proofs.commit(folder, mark, epoch, proof):
                proofs.postpone(folder, mark)
            elif proof.lines and hashes is not None:  # (their hashes are in its lines now)
                hashes.forget_fresh(lines.used)

    def _pause_proving(self, paused: bool) -> None:
        """Stop proving (the finish's walk uses the proofs), waiting for the folder being
        compared; or go on (a cancelled finish)."""
        self._proving_paused = paused
        with self._proving:
            pass

    def _folder_event(self, kind: str, rel: str) -> None:
        """A folder below the root was created, deleted or moved (`SourceEventHandler`)."""
        proofs = self._proofs
        if proofs is None:
            return
        if kind == "moved":  # (what it holds moved with it, without events of its own)
            self._lost_events()
            return
        proofs.mark(rel.rpartition("/")[0])
        proofs.mark(rel)

    # ------------------------------------------------------------------ the finish's walks
    def _first_walk(self, helpers: list[WalkHelper]) -> VerifyReport:
        """The finish's first verification: of the unproven folders only where the proofs
        can stand (`_proven_walk`), else of everything."""
        self._walk_counts = dict.fromkeys(
            (
                "folders_walked",
                "folders_proven",
                "folders_checked_at_source",
                "source_looks_in_helper",
            ),
            0,
        )
        self._walk_started = time.monotonic()
        report = self._proven_walk()
        if report is None:
            return self._walk_and_compare(helpers)
        for helper in helpers:
            helper.close()
        return report

    def _proofs_usable(self) -> bool:
        """Whether the finish is likely to use proofs (then it starts no walk helpers)."""
        proofs = self._proofs
        return proofs is not None and proofs.counts[0] > 0

    def _proven_walk(self) -> VerifyReport | None:
        """Walk the root and the folders without a standing proof; None where the proofs
        cannot stand for the rest (said once), or none stands."""
        proofs, watching = self._proofs, self._watching
        if proofs is None or watching is None:
            return None
        self._pause_proving(True)
        # Every event of a change made before now must have been handled (its folder marked)
        # before the proofs still standing are taken: the reader may be behind.
        deadline = time.monotonic() + self.tuning.settle_max_s
        while not watching.delivered_all():
            if self._stop.is_set():
                return None
            if time.monotonic() >= deadline:
                self._say_once(
                    f"the finish walked every folder: the file events were not all handled "
                    f"{self.tuning.settle_max_s:g} s after it began (the event reader is "
                    "behind), so the folders proven earlier could not be vouched for"
                )
                return None
            self._stop.wait(0.01)
        if proofs.behind_reset():
            self._say_once(
                "the finish walked every folder: file events were lost (an inotify queue "
                "overflow, or a folder moved) after folders were proven, and not every "
                "folder was proven again since"
            )
            return None
        clean = proofs.clean(watching.folder_watches() or {})
        if not clean:
            return None
        if clean.unwatched and not self._dest.capabilities.xattrs:
            self._degraded.degrade(
                "the look at the source of folders without a watch",
                "the destination keeps no extended attributes, so folders without a watch "
                "are compared in both trees at the finish",
            )
        self._proofs_seq = proofs.seq
        local = self._compared_through()
        self._discard_listing()
        result = self._until_destination_answers(
            lambda: walk_unproven(
                self._src,
                os.fspath(self.destination),
                clean,
                proofs.spool,
                marker=self.options.marker,
                stop=self._stop,
                dest=local,
                helper_from=self.tuning.source_look_helper_folders,
            )
        )
        if isinstance(result, VerifyReport):  # (stopped while the destination was away)
            self._report = result
            return result
        report, self._proven = result
        self._walk_counts["folders_walked"] += report.folders_walked
        self._walk_counts["folders_proven"] = len(self._proven)
        self._walk_counts["folders_checked_at_source"] = report.folders_checked_at_source
        self._walk_counts["source_looks_in_helper"] = report.source_looks_in_helper
        log.info(
            "verifying: %d folders proven during the copy (%d of them without their watch, "
            "found as proven at the source, %d of those looks made in a helper process), "
            "%d walked",
            len(self._proven),
            report.folders_checked_at_source,
            report.source_looks_in_helper,
            report.folders_walked,
        )
        self._report = report
        return report

    def _compared_through(self) -> LocalDestination | None:
        """The copy's own open destination, for the finish's walk of the unproven folders
        to compare through, as the proofs were made; None: it opens it anew, and the records
        of the last copies are written back first, for it to read.

        On a share, opening the root anew (the probe's record) and writing the records back
        before the walk may begin are round trips after the marker. The path still leads to the
        folder compared: `Finish._mark_verified` checks it before the marker. An S3
        destination is opened anew: that checks the bucket is still the copy's, as `verify`
        does (docs/architecture.md, "Why the finish need not walk every file")."""
        if isinstance(self._dest, LocalDestination):
            return self._dest
        self._dest.save_records()
        return None

    def _proofs_stale(self) -> bool:
        """Whether a folder vouched for by its proof at this finish changed since (the
        engine's own copy beside the walk, a late event): then a full walk decides."""
        proofs, proven = self._proofs, self._proven
        if proofs is None or not proven:
            return False
        return proofs.marked_since(self._proofs_seq, proven)

    def _walk_and_compare(self, helpers: list[WalkHelper] | None = None) -> VerifyReport:
        # The verification opens the destination anew: what this one still holds in memory
        # about the files it copied (records, where the destination cannot say) goes first.
        self._dest.save_records()
        self._discard_listing()  # (a walk's listing replaces the last one's whole)
        self._proven = []  # (nothing is vouched for by a proof in a full walk)
        given = [helpers]

        def walk() -> VerifyReport:
            helpers, given[0] = given[0], None  # (a walk that failed used them up)
            return verify_tree(
                self.source,
                self.destination,
                checksum=self.options.verify == "checksum",
                marker=self.options.marker,
                stop=self._stop,
                stamps=True,
                processes=self._verify_processes(),
                helpers=helpers,
                # (the manifest is made from the files this walk lists: no second walk)
                listing=True,
            )

        self._report = self._until_destination_answers(walk)
        self._walk_counts["folders_walked"] += self._report.folders_walked
        return self._report

    def _verify_processes(self) -> int:
        if not self._dest.walk_helpers_help():
            return 1
        known = self._counters.files_at_destination + len(self._pending)  # (pending: a bulk copy)
        return verify_processes(known, self.tuning)

    def _discard_listing(self) -> None:
        """Delete the spools of the last verification's listing (`listing.Listing`)."""
        report = self._report
        if report is not None and report.listing is not None:
            report.listing.discard()
            report.listing = None

    def _until_destination_answers(self, walk):
        """``walk()``, again after a wait where the destination does not answer now (an
        object store's server away: OSError EIO), waited for as copies are, with a visible
        "retrying in N s". Stopped meanwhile: a report that is not ok (never an all-clear)."""
        while True:
            try:
                report = walk()
            except OSError as exc:
                if exc.errno not in RETRY_ERRNOS:
                    raise
                self._stop.wait(self._dest_error("", exc))
                if self._stop.is_set():
                    report = VerifyReport(os.fspath(self.source), str(self.destination), False)
                    report._add("unreadable", ("", exc.strerror or str(exc)))
                    return report
            else:
                if self._backoff:
                    self._destination_back()
                return report


def verify_processes(files: int, tuning: Tuning | None = None) -> int:
    """Processes for the final verification walk of ``files`` files: two for a large
    archive where two cores are available (`Tuning.parallel_verify_files`), else one."""
    threshold = (tuning or Tuning()).parallel_verify_files
    return 2 if files >= threshold and available_cores() >= 2 else 1
