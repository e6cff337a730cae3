"""`Tuning`: the engine's numeric trade-offs, passed in instead of module globals."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..proofs import MAX_PROOFS
from ..scan_walk import SPLIT_AFTER_S
from ..source_looks import HELPER_FROM as SOURCE_LOOK_HELPER_FROM
from ..watches import RELEASE_IDLE_S, default_max_watches


@dataclass(frozen=True)
class Tuning:
    """How the engine trades memory, latency and CPU; today's measured values by default.

    Give a `CopyEngine` one (``CopyEngine(src, dst, tuning=Tuning(copy_helper_files=10))``)
    to change a threshold for one copy, as tests and benchmarks do; nothing else reads them.

    Attributes
    ----------
    pending_limit : int
        Scans stop adding work while this many paths are pending: bounded memory on huge
        trees, against a scan that runs ahead of the copies.
    max_backoff_s : float
        Longest wait between two tries at a destination that cannot take data (full,
        read-only, gone): longer spares a failing server, shorter resumes sooner once fixed.
    rescan_spacing_s : float
        Least seconds between two rescans requested by lost events (and at least three
        times the last scan's duration): under a storm of lost events, back-to-back full
        scans would take the CPU from the writer.
    settle_s : float
        Before verifying, the finish waits until no event has come for this long (events
        are delivered at thousands per second while a backlog lasts): verifying before the
        writer's last files are copied only costs another verification round.
    settle_max_s : float
        The longest that settling waits, however busy the events.
    verify_beside_pending : int
        The verification walk starts while this many files are still being copied: it finds
        them missing, and only they are compared again once copied (`verify.recheck`). The
        walk then overlaps the writer's last copies instead of following them; more means
        more files compared twice.
    parallel_verify_files : int
        From this many files on, the verification walk is split between two processes where
        two cores are available (`verify.start_helpers`); below it, starting one costs more
        than it saves.
    copy_helper_files : int
        From this many files pending at a finish (a finished archive, a backlog at the
        marker), a second process copies beside the engine's workers where two cores are
        available (`copy_helper`); below it, starting one costs more than it saves.
    marker_poll_s : float
        Seconds between two looks for the marker (one ``fstatat``): its event may wait
        behind thousands of others, or be lost. Each wait is added to the drain at a finish.
    delete_grace_s : float
        Seconds a source file must stay deleted (its directory still there) before the
        delete is mirrored at the destination: removing a whole tree deletes its files
        before their directories, and must delete nothing at the destination.
    hint_limit : int
        File events stop adding entries to the pending set while this many paths are
        pending (a writer far ahead of the copy): an entry costs about 250 bytes, and memory
        must not follow the backlog. Further paths wait in compact form (`hint_spill`).
    hint_spill : int
        Paths of file events that wait, beyond `hint_limit`, in compact form (about 60
        bytes each) to become entries as room comes, oldest first. Beyond it too, a rescan
        finds the files of the events left out (slower: it walks the whole tree).
    max_watches : int or None
        Most source folders with an inotify watch at once (`watches.WatchTable`; None: as
        many as the kernel allows). By default three quarters of the kernel's limit, at most
        `watches.MAX_WATCHES` (`watches.default_max_watches`). Past it, finished folders give
        their watch back and are covered by the periodic rescan and by a look at their
        source after the marker: more costs memory (about 180 bytes a folder here, a pinned
        inode in the kernel) and the user's other programs their watches, fewer makes the
        finish look at more folders (about 40 us of CPU each).
    watch_release_idle_s : float
        A folder gives its watch back only after this long without a new entry: shorter
        frees watches sooner, but may take them from folders still being written.
    scan_split_after_s : float
        A first scan that has walked this long shares the rest of its walk with a helper
        process where two cores are available (`scan_walk`); a shorter one would not win
        back the helper's start (about 0.15 s of CPU).
    hash_during_copy : bool
        Hash each copied file in the background for the manifest (`hashes`), so that the
        finish hashes only what was copied last; False hashes every file at the finish (a
        benchmark's baseline).
    prove_folders : bool
        Compare each folder alone once it has been quiet for `prove_quiet_s` during the
        acquisition, and keep that proof while no event says it changed (`proofs`): the
        finish then walks only the folders without a standing proof, not the whole archive.
        False walks everything at the finish (a benchmark's baseline).
    prove_quiet_s : float
        A folder is compared alone only once it has had no mark (event, copy) for this long:
        shorter compares folders still being written (and again once they are finished).
    prove_interval_s : float
        Seconds between two looks for folders to prove (each look proves all that are due).
    max_proofs : int
        Proofs kept at most (`proofs.MAX_PROOFS`, about 175 bytes each: 23 MB); beyond it
        the oldest are dropped, and their folders walked at the finish.
    source_look_helper_folders : int
        From this many proven folders without a watch at a finish, a helper process shares
        the looks at their source (`source_looks.look_at_sources`) where two cores are
        available: fewer would not win back its start (about 0.1 s).
    """

    pending_limit: int = 20_000
    max_backoff_s: float = 30.0
    rescan_spacing_s: float = 1.0
    settle_s: float = 0.1
    settle_max_s: float = 5.0
    verify_beside_pending: int = 1000
    parallel_verify_files: int = 10_000
    copy_helper_files: int = 2_000
    marker_poll_s: float = 0.1
    delete_grace_s: float = 2.0
    hint_limit: int = 20_000
    hint_spill: int = 1_000_000
    max_watches: int | None = field(default_factory=default_max_watches)
    watch_release_idle_s: float = RELEASE_IDLE_S
    scan_split_after_s: float = SPLIT_AFTER_S
    hash_during_copy: bool = True
    prove_folders: bool = True
    prove_quiet_s: float = 2.0
    prove_interval_s: float = 0.5
    max_proofs: int = MAX_PROOFS
    source_look_helper_folders: int = SOURCE_LOOK_HELPER_FROM
