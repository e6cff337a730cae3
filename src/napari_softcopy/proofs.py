"""Which source folders are proven copied: compared during the acquisition, and unchanged
since as far as the file events can tell (docs/architecture.md, "Why the finish need not walk
every file").

A folder is *marked* (dirty) by anything that could change what it holds or what its copy
holds: a file event in it (any kind), an event of a folder in it (created, deleted), the
engine's own publish or delete of a copy in it. `FolderProofs.candidates` gives the folders
marked and quiet since; the engine compares each one alone (`verify_folders.prove_folder`)
and, where it is identical, `commit` keeps its *proof*: the counts of its files, the names of
its subfolders, its rows for the manifest (spooled to disk, `ProofSpool`; for a folder
without subfolders, its manifest lines too, where this run's hashes of all its files were
at hand: `assembly.ManifestLines`) and the watch descriptor the folder had when it was
compared. A later mark makes the proof stale; a lost
event (an inotify overflow) or a folder moved in the tree makes every proof stale (`reset`).
At the finish, `clean` gives the proofs still standing: only folders without one are walked.

A folder the comparison refuses (a copy still to come, behind a backlog) stays marked, so no
proof of it stands, and is tried again after a wait doubled at each refusal (`postpone`, at
most `MAX_RETRY_FACTOR` quiet spells), until its next mark, which restarts the wait: behind a
backlog of 90 s each folder was refused about 45 times, its last copy's publish being what
lets it prove (benchmarks/notes.md item 66).

Nothing here is persisted: a run that is stopped or killed and started again proves its
folders anew (its first finish walks those it has not proven meanwhile).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle
import shutil
import struct
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import NamedTuple

from .destinations import FileInfo
from .platform import degrade
from .temp_folders import process_temp_folder

__all__ = ["NO_WATCH", "FolderProofs", "Proof", "ProofSpool", "StandingProofs"]


class Proof(NamedTuple):
    """What comparing one folder alone found identical. Kept packed (`_pack`: 69 bytes and a
    dict entry a folder, its path apart; as a tuple of Python ints it was about 250: 25 MB
    at 100,000 folders)."""

    offset: int  # its block of rows in the spool (`ProofSpool`): where, and its length
    length: int
    files: int
    bytes: int
    metadata: int
    subfolders: tuple[str, ...]  # names of its source folders (each at the destination too)
    watch: int  # its watch descriptor when compared (the same one now = watched all along)
    lines: int = 0  # length of its manifest lines (0: none made), in the spool's lines file
    lines_at: int = 0  # where they are in it (`ProofSpool.lines_path`)


#: `Proof.watch` of a folder proven without a watch (no descriptor is negative).
NO_WATCH = -1
#: Proofs kept at most (`FolderProofs.max_proofs`): about 175 bytes each with their path and
#: dict entry (`test_proofs_cost_under_180_bytes_a_folder_and_read_back_whole`), so 23 MB; a
#: day's 100,000 folders fit. Beyond it the oldest are dropped (walked at the finish).
MAX_PROOFS = 131_072
#: A folder refused n times in a row waits ``2 ** (n - 1)`` quiet spells before its next try,
#: at most this many: 2, 4, 8, 16, 32 s at the default 2 s spell.
MAX_RETRY_FACTOR = 16

#: `Proof` without its subfolders, packed: offset, length, files, bytes, metadata, watch,
#: lines, lines_at (44 bytes: a bytes object of 77, in the allocator's 80-byte class as the
#: 69 of the form without lines_at were).
_PACKED = struct.Struct("<qIIqIiIq")


def _pack(proof: Proof) -> bytes:
    return _PACKED.pack(*proof[:5], proof.watch, proof.lines, proof.lines_at)


def _watch(data: bytes) -> int:
    """The watch descriptor of a packed proof (`Proof.watch`)."""
    return _PACKED.unpack(data)[5]


def _unpack(data: bytes, subfolders: tuple[str, ...]) -> Proof:
    offset, length, files, nbytes, metadata, watch, lines, lines_at = _PACKED.unpack(data)
    return Proof(offset, length, files, nbytes, metadata, subfolders, watch, lines, lines_at)


class StandingProofs(Mapping[str, Proof]):
    """The proofs standing at a finish (`FolderProofs.clean`): a snapshot of the packed ones,
    each made a `Proof` only when asked for (not 100,000 tuples at once at the finish).

    ``unwatched``: the folders among them that lost the watch they had when proven (given
    back at the watch limit): no event vouches for them, only a look at the source does
    (`source_looks.source_unchanged`)."""

    def __init__(
        self,
        packed: dict[str, bytes],
        subfolders: dict[str, tuple[str, ...]],
        unwatched: frozenset[str] = frozenset(),
    ) -> None:
        self._packed = packed
        self._subfolders = subfolders
        self.unwatched = unwatched

    def __getitem__(self, folder: str) -> Proof:
        return _unpack(self._packed[folder], self._subfolders.get(folder, ()))

    def __contains__(self, folder: object) -> bool:
        return folder in self._packed

    def get(self, folder: str, default: Proof | None = None) -> Proof | None:
        # (the finish asks once a proven folder: Mapping.get's try/except doubled the cost)
        data = self._packed.get(folder)
        return default if data is None else _unpack(data, self._subfolders.get(folder, ()))

    def __iter__(self) -> Iterator[str]:
        return iter(self._packed)

    def __len__(self) -> int:
        return len(self._packed)


class ProofSpool:
    """The rows of every proven folder, a block per comparison, appended to one file
    (`path`), and the manifest lines made with them to another (`lines_path`), in a temporary
    folder of its own (deleted by `discard`). A folder proven again gets new blocks; the old
    ones are left unread.

    Why the lines have a file of their own: the proofs of a day's folders are made one after
    the other, so the lines of those standing at the finish lie end to end there, and the
    manifest takes them in a few long reads (`listing.ProvenLines`) instead of one read and
    one lookup a folder in path order (110,500 folders: 1.1 s of the finish, all of it
    growing with the run; benchmarks/notes.md item 80)."""

    def __init__(self) -> None:
        self.folder = process_temp_folder("softcopy-proofs-")
        self.path = os.path.join(self.folder, "rows")
        self.lines_path = os.path.join(self.folder, "lines")
        self._file = open(self.path, "ab")  # noqa: SIM115 (open until `discard`)
        self._lines = open(self.lines_path, "ab")  # noqa: SIM115 (open until `discard`)
        self._rows: list[tuple[str, int, int, bytes | None]] = []
        self._lock = threading.Lock()

    def add(self, folder: str, name: str, info: FileInfo) -> None:
        """``name`` (in the one folder being compared) is identical, ``info`` as listed (the
        `listing.ListingWriter` interface the comparison writes to)."""
        self._rows.append((name, info.size, info.mtime_ns, info.stamp))

    def forget(self) -> None:
        """Drop the rows of a comparison that proved nothing."""
        self._rows = []

    def block(self, folder: str, lines=None) -> tuple[int, int, int, int]:
        """Write the rows of ``folder``, just compared, and where ``lines`` (``lines(folder,
        rows)``: `assembly.ManifestLines`) makes them, its manifest lines to the lines file;
        ``(offset, length of the rows, offset, length of the lines)``."""
        rows, self._rows = self._rows, []
        rows.sort(key=_name)
        data = pickle.dumps(rows, pickle.HIGHEST_PROTOCOL)
        made = (lines(folder, rows) or b"") if lines is not None else b""
        with self._lock:
            offset = self._file.tell()
            self._file.write(data)
            self._file.flush()  # (read through another descriptor by the finish)
            lines_at = self._lines.tell()
            if made:
                self._lines.write(made)
                self._lines.flush()
        return offset, len(data), lines_at, len(made)

    def discard(self) -> None:
        """Delete the spool and its folder."""
        with self._lock:
            self._file.close()
            self._lines.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _name(row: tuple) -> str:
    return row[0]


class FolderProofs:
    """The folders marked since they were last proven, and the proofs still standing.

    Thread-safe: marks come from the event reader and the copy workers, proofs from the
    engine's proving thread, `clean` from the finish. A mark costs one dict update.

    Parameters
    ----------
    max_proofs : int
        Proofs kept at most (`MAX_PROOFS`).
    quiet_s : float
        The quiet spell a folder waits for before it is compared (`Tuning.prove_quiet_s`):
        the unit of the wait after a refusal (`postpone`).
    """

    def __init__(self, max_proofs: int = MAX_PROOFS, quiet_s: float = 2.0) -> None:
        self.max_proofs = max_proofs
        self.quiet_s = quiet_s
        self._lock = threading.Lock()
        self._seq = 0
        self._epoch = 0
        # folder -> (the mark's number, when it may be tried, refusals since the mark).
        # Insertion order is the order of `when` among the folders never refused since their
        # mark (a mark or a first refusal puts them at the end, at now): `candidates` stops
        # at the first of those not quiet yet, and skips a refused one not yet due.
        self._dirty: dict[str, tuple[int, float, int]] = {}
        self._proofs: dict[str, bytes] = {}  # (`_pack`)
        self._subfolders: dict[str, tuple[str, ...]] = {}  # (only of folders that have some)
        self.spool = ProofSpool()
        #: Times every proof was made stale at once (an overflow, a folder moved).
        self.resets = 0
        #: Proofs dropped beyond `max_proofs` (their folders are walked at the finish).
        self.dropped = 0
        self._reset_seq = 0  # the last mark a reset made

    def mark(self, folder: str) -> None:
        """``folder`` (``/``-separated below the root; ``""``: the root) may have changed."""
        now = time.monotonic()
        with self._lock:
            self._mark(folder, now)

    def mark_files(self, rels: Iterable[str]) -> None:
        """The folders of the files ``rels`` may have changed."""
        folders = {rel.rpartition("/")[0] for rel in rels}
        now = time.monotonic()
        with self._lock:
            for folder in folders:
                self._mark(folder, now)

    def mark_unproven(self, folders: Iterable[str]) -> None:
        """Mark each of ``folders`` without a standing proof (`standing`, without making
        one: a bulk copy's 30,000 folders at once, under one lock)."""
        now = time.monotonic()
        with self._lock:
            dirty, proofs = self._dirty, self._proofs
            for folder in folders:
                if folder in dirty or folder not in proofs:
                    self._mark(folder, now)

    def mark_copied(self, rel: str) -> None:
        """The engine published its copy of ``rel``: its folder may have changed
        (`mark_files`), and each folder above it waiting after a refusal is tried after one
        quiet spell again. A folder is refused while one of its subfolders is missing at the
        destination; the first copy below it makes that subfolder there, and no mark of the
        folder says so. Their marks stay: no proof of them stands sooner."""
        folder = rel.rpartition("/")[0]
        now = time.monotonic()
        with self._lock:  # (one lock a copy)
            self._mark(folder, now)
            dirty = self._dirty
            while folder:
                folder = folder.rpartition("/")[0]
                entry = dirty.get(folder)
                if entry is not None and entry[2]:
                    del dirty[folder]
                    dirty[folder] = (entry[0], now, 0)

    def _mark(self, folder: str, now: float) -> None:
        """A new mark of ``folder`` (lock held): to the end, in the order of last marks."""
        self._seq += 1
        self._dirty.pop(folder, None)
        self._dirty[folder] = (self._seq, now, 0)

    def reset(self, also: Iterable[str] = ()) -> None:
        """Events were lost, or a folder moved with what is below it (no event of its own):
        every proof is stale. Their folders, and the folders ``also``, are candidates to be
        proven again (`behind_reset` until they are)."""
        now = time.monotonic()
        with self._lock:
            self._epoch += 1
            self.resets += 1
            for folder in (*self._proofs, *also):
                if folder not in self._dirty:
                    self._mark(folder, now)
            self._proofs.clear()
            self._subfolders.clear()
            self._reset_seq = self._seq

    @property
    def seq(self) -> int:
        """The number of the last mark: `marked_since` compares with it."""
        return self._seq

    def candidates(self, quiet_before: float) -> Iterator[tuple[str, int, int]]:
        """``(folder, mark, epoch)`` of the folders marked last before ``quiet_before``
        (monotonic), the longest quiet first: to compare, then `commit`. A folder refused
        since its mark is among them only once its wait (`postpone`) is over."""
        with self._lock:
            epoch = self._epoch
            found = []
            for folder, (seq, when, refusals) in self._dirty.items():
                if when >= quiet_before:
                    if refusals:
                        continue  # (waiting after a refusal: later ones may be due)
                    break  # (every folder after it was marked later)
                found.append((folder, seq))
        for folder, seq in found:
            yield folder, seq, epoch

    def commit(self, folder: str, mark: int, epoch: int, proof: Proof) -> bool:
        """Keep ``proof`` of ``folder``, compared after its mark ``mark`` (of `candidates`);
        False (nothing kept) when it was marked again, or every proof made stale, since."""
        with self._lock:
            if epoch != self._epoch or self._dirty.get(folder, (None,))[0] != mark:
                return False
            del self._dirty[folder]
            proofs = self._proofs
            proofs.pop(folder, None)  # (to the end: the oldest are dropped first)
            proofs[folder] = _pack(proof)
            if proof.subfolders:
                self._subfolders[folder] = proof.subfolders
            else:
                self._subfolders.pop(folder, None)
            over = len(proofs) > self.max_proofs
            if over:
                # (an eighth at once: a dict's first key is found past those deleted before)
                for old in list(itertools.islice(proofs, max(1, self.max_proofs // 8))):
                    del proofs[old]
                    self._subfolders.pop(old, None)
                    self.dropped += 1
        if over:  # (said once, outside the lock: the copy stays correct, the finish slower)
            degrade(
                "keeping every folder's proof",
                f"more than {self.max_proofs:,} folders proven (Tuning.max_proofs): the oldest "
                "proofs are dropped and their folders compared in both trees at the finish",
            )
        return True

    def clean(self, watches: Mapping[str, int]) -> StandingProofs:
        """The proofs that stand now: of folders not marked since. Those watched all along
        since they were compared (the same watch descriptor in ``watches``, by folder below
        the root: `InotifyWatcher.folder_watches`) stand by the events; the others
        (`StandingProofs.unwatched`) only where a look at the source finds it as proven."""
        with self._lock:
            dirty = self._dirty
            packed = {f: data for f, data in self._proofs.items() if f not in dirty}
            unwatched = frozenset(
                folder for folder, data in packed.items() if watches.get(folder) != _watch(data)
            )
            subfolders = {f: names for f, names in self._subfolders.items() if f in packed}
        return StandingProofs(packed, subfolders, unwatched)

    def standing(self, folder: str, watch: int | None) -> tuple[Proof, bool] | None:
        """``folder``'s proof if it stands now (not marked since), and whether it lost the
        watch it had when proven (``watch``: its watch descriptor now, None for none): what
        `clean` says of one folder, without a snapshot of them all (a periodic rescan asks
        folder by folder; a snapshot of 110,000 proofs held 14 MiB through each rescan)."""
        with self._lock:
            if folder in self._dirty:
                return None
            data = self._proofs.get(folder)
            if data is None:
                return None
            subfolders = self._subfolders.get(folder, ())
        return _unpack(data, subfolders), watch != _watch(data)

    def behind_reset(self) -> bool:
        """Whether a folder marked before the last `reset` (or by it) has not been proven
        since: what was proven before the lost events is not all proven again."""
        with self._lock:
            last = self._reset_seq
            return self.resets > 0 and any(v[0] <= last for v in self._dirty.values())

    def postpone(self, folder: str, mark: int) -> None:
        """``folder`` could not be proven now (a copy still to come): a candidate again only
        after another quiet spell, and after each further refusal a spell as long as all
        those before it (at most `MAX_RETRY_FACTOR` spells), until it is marked again. Its
        mark stays (`commit`, `behind_reset` compare it; `clean` and `standing` exclude it):
        waiting defers a proof, it never lets one stand."""
        now = time.monotonic()
        with self._lock:
            entry = self._dirty.get(folder)
            if entry is not None and entry[0] == mark:
                refusals = entry[2] + 1
                wait = min(2 ** (refusals - 1), MAX_RETRY_FACTOR) - 1  # (spells beyond one)
                del self._dirty[folder]
                self._dirty[folder] = (mark, now + wait * self.quiet_s, refusals)

    def drop(self, folder: str, mark: int) -> None:
        """Forget ``folder`` (deleted: nothing to prove), unless it was marked after
        ``mark``. Without a proof it is walked at the finish."""
        with self._lock:
            if self._dirty.get(folder, (None,))[0] == mark:
                del self._dirty[folder]
                self._proofs.pop(folder, None)
                self._subfolders.pop(folder, None)

    def marked_since(self, seq: int, folders: Iterable[str]) -> bool:
        """Whether one of ``folders`` was marked after the mark numbered ``seq``, or every
        proof was made stale meanwhile."""
        with self._lock:
            dirty = self._dirty
            return any(dirty.get(f, (0,))[0] > seq for f in folders)

    @property
    def counts(self) -> tuple[int, int]:
        """Folders proven, folders marked since (or never proven)."""
        with self._lock:
            return len(self._proofs) - sum(f in self._dirty for f in self._proofs), len(self._dirty)

    def discard(self) -> None:
        """Delete the spool (the engine ends)."""
        with contextlib.suppress(OSError):
            self.spool.discard()
