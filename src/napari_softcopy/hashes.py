"""The hash journal: every copied file's BLAKE3 hash, made during the copy, so that the
manifest (`manifest`) is assembled at the finish instead of read from the whole copy again.

**Hashed as copied.** The copy (`transfer.copy_file(digest=True)`) reads each block of the
source into memory, hashes it and writes exactly those bytes to the temporary file; the hash
is recorded once the file is published (`HashJournal.published`), with no read of the copy.
The manifest then names the bytes that were read from the source and handed to the
destination, from a source version that did not change while it was read (the copy's
identity check). Why not read each copy back (docs/move.md says it at length): on a local
disk that read returns the page cache, the very bytes written, at a dozen system calls a file
(benchmarks/notes.md, items 45-46); on a share it is a second transfer of every byte. And the
hash of the bytes handed over is the better reference: a destination that stored something
else would have its wrong bytes recorded by a read back, while against the source's hash
``verify DEST`` and ``--move`` (both read every copy cold) find them.

No journal where the destination keeps each upload's hash itself
(`Capabilities.verified_upload_digest`: S3 on a server that checks each upload's CRC64NVME):
it hashes the bytes as it sends them, keeps the hash on the object once the server
acknowledged them, in its index for later runs and in the metadata of an object of a MiB
or more (`Destination.acknowledged_digest`), and the manifest takes it from there. A journal
there would write, merge and read back what the destination already holds (a flush of
1.7-3.1 s after the marker at 50,000 files, benchmarks/notes.md item 76).

Read back (the fallback): a file published without a hash of its bytes (a caller that did
not ask for one) is queued for a background thread at idle priority that reads it back from
the destination, its cached pages dropped first (`readback.read_back`), and records the hash
only if the file is still the version published (same size, mtime and stamp before and
after the read).

The journal is a set of segment files in the destination's `STATE_DIR` (``hashes-<level>-
<run>-<n>.tsv``, `JOURNAL`), each one batch of records sorted by path and published
atomically (a crash leaves whole segments or none; a line that does not parse, as after a
power cut, is dropped). Nothing grows in memory: the queue and the buffer are bounded, and
segments are merged in the background (`FANIN` at a time, keeping the latest record per
path), so a day of millions of files holds a few dozen segments. At the finish they are
merged in path order (`JournalRecord.key`) beside the destination's listing in that order
(`assembly.assemble`), where a file's record is not among this run's kept in memory.

**Kept in memory too** (`fresh`): this run's latest record of each path, up to `FRESH_MAX`
(the oldest dropped first: they are in the segments). A folder proven during the copy turns
its files' records into the manifest's lines then (`assembly.ManifestLines`) and they are
forgotten (`forget_fresh`), so what is kept is about the files of the folders not proven yet.
The finish takes a file's record from here first and reads the segments only for the files
this misses (copied by an earlier run, or dropped): a run that copied everything itself
reads no segment at its finish.

A record names the source version copied (size, mtime, stamp: as a copy's record,
`destinations.SourceRecord`) and a sequence number (run, then order of publish; one path is
never copied twice at once). A file that could not be hashed gets an *invalidation* record:
a path's latest record decides, so an older hash is never reused. A hash is reused at the
finish only when it is its path's latest record and the file there now is a copy of that
version by the one rule (`destinations.copy_difference`), a record of an earlier run (which
a kill may have cut short) included.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import io
import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Collection, Iterator

from .destinations import SOURCE_STAMP, STATE_DIR, Destination, LocalDestination
from .destinations.away import RETRY_ERRNOS
from .journal_records import FreshRecords, JournalRecord, json_string, parse_record, path_key
from .layout import is_own_temp_name
from .platform import current_notices, degrade, get_xattr, lower_thread_priority
from .readback import FolderCache, read_back, read_fd

log = logging.getLogger(__name__)

#: The journal's segments: `STATE_DIR` files of this prefix (flat: a `Destination` removes
#: files, not folders, and the manifest's folder is left as it was).
JOURNAL = f"{STATE_DIR}/hashes-"
SEGMENT = ".tsv"  # a segment's name ends so (lines of tab-separated fields: `JournalRecord.line`)
BATCH = 4096  # records per segment: a write per this many files, not one per file
FLUSH_S = 2.0  # a partial batch is written after this long
QUEUE = 8192  # files waiting to be hashed; beyond it, hashed at the finish instead
#: Records of this run kept in memory (`HashJournal.fresh`, `FreshRecords`), beyond which the
#: oldest are dropped (they are in the segments): about 210 bytes each, packed, with the
#: dict's entry (tracemalloc, paths of the day's geometry: `FreshRecords`), so at most 6.5 MiB.
FRESH_MAX = 32768
FANIN = 16  # segments of one level merged into one of the next
#: Records kept while the destination is away, beyond which the journal is given up: a
#: copy that cannot write its journal there cannot write its files either, so few come.
HOLD_MAX = 2 * BATCH
_RUN_SHIFT = 40  # sequence = run << 40 | order of publish in that run


def _segment_name(level: int, run: int, n: int) -> str:
    return f"{JOURNAL}{level}-{run:08d}-{n:08d}{SEGMENT}".rpartition("/")[2]


def _segment_parts(name: str) -> tuple[int, int, int] | None:
    try:
        prefix = JOURNAL.rpartition("/")[2]
        # (".jsonl": a segment of an earlier version, read as its records are: `_parse_json`)
        suffix = next((x for x in (SEGMENT, ".jsonl") if name.endswith(x)), None)
        if suffix is None or not name.startswith(prefix):
            return None
        level, run, n = name[len(prefix) : -len(suffix)].split("-")
        return int(level), int(run), int(n)
    except ValueError:
        return None


class HashJournal:
    """The hasher thread and the journal of one copy at ``dest``.

    Parameters
    ----------
    dest : Destination
        The copy's destination (the engine's: the journal is written through it).
    low_priority : bool
        Run the hasher at idle priority (`platform.lower_thread_priority`).
    flush_s : float
        A partial batch is written after this long.
    queue_size : int
        Files waiting to be hashed at most; a file published beyond it is hashed at the
        finish.
    """

    def __init__(
        self,
        dest: Destination,
        *,
        low_priority: bool = True,
        flush_s: float = FLUSH_S,
        queue_size: int = QUEUE,
    ) -> None:
        self.dest = dest
        self.low_priority = low_priority
        self.flush_s = flush_s
        # (None: a wake-up for the thread, `_stop_thread`)
        self._queue: queue.Queue[tuple[str, int, int, str, int] | None] = queue.Queue(queue_size)
        self._buffer: list[JournalRecord] = []
        self._fresh = FreshRecords(FRESH_MAX)  # (`fresh`)
        self._buffer_since = 0.0
        self._lock = threading.Lock()  # the buffer and the sequence
        self._busy = threading.Lock()  # held while hashing, writing or merging (`paused`)
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._counter = 0
        self._segment_n = 0
        self.broken: str | None = None  # why the journal cannot be trusted (then unused)
        self._held = False  # records kept while the destination is away (`_flush_locked`)
        self.hashed = 0  # files hashed by the thread
        self.run = 1 + max((p[1] for p in self._segments_by_name().values()), default=0)
        # (a local destination's files are read through folder descriptors: `_hash_local`)
        self._folders = FolderCache(dest.fileno()) if isinstance(dest, LocalDestination) else None

    # -- the copy's side -------------------------------------------------------------------
    def start(self) -> None:
        """Start the hasher thread."""
        # (its notices are the copy's that starts it)
        target = current_notices().thread_target(self._main)
        self._thread = threading.Thread(target=target, name="softcopy-hasher", daemon=True)
        self._thread.start()

    @property
    def wants_digests(self) -> bool:
        """Whether copies should hash their bytes (`transfer.copy_file(digest=True)`): not
        once the journal is broken."""
        return self.broken is None

    def published(
        self, rel: str, size: int, mtime_ns: int, stamp: str = "", digest: str = ""
    ) -> None:
        """``rel`` was just published at the destination, copied from the source version of
        ``size`` and ``mtime_ns``. Record ``digest``, the hash of its bytes as copied (with
        ``stamp``, that source version's, `destinations.source_stamp`), or else hash it in
        the background. Never blocks on the hasher."""
        if digest:
            key = path_key(rel)
            with self._lock:  # (one lock a file: the sequence and the buffer together)
                self._counter += 1
                seq = self.run << _RUN_SHIFT | self._counter
                record = JournalRecord(key, seq, rel, size, mtime_ns, stamp, digest)
                dropped = self._add_locked(record)
            if dropped:
                self._fresh.say_dropped()
            return
        with self._lock:
            self._counter += 1
            seq = self.run << _RUN_SHIFT | self._counter
        try:
            self._queue.put_nowait((rel, size, mtime_ns, stamp, seq))
        except queue.Full:  # (behind: hashed at the finish; no older hash may stand for it)
            self._add(JournalRecord(path_key(rel), seq, rel))

    def _add(self, record: JournalRecord) -> None:
        with self._lock:
            dropped = self._add_locked(record)
        if dropped:
            self._fresh.say_dropped()

    def _add_locked(self, record: JournalRecord) -> bool:
        """Buffer ``record`` and keep it in `fresh` (called with `_lock` held); whether the
        oldest in `fresh` were dropped (said by the caller, outside the lock)."""
        if not self._buffer:
            self._buffer_since = time.monotonic()
        self._buffer.append(record)
        return self._fresh.keep(record)

    @property
    def fresh_dropped(self) -> int:
        """Records dropped from `fresh` (still in the segments)."""
        return self._fresh.dropped

    def fresh(self) -> dict[str, JournalRecord]:
        """This run's latest record of each path published (by its path, not its key), as
        far as they are kept (`FRESH_MAX`); a path not here has no record of this run, or
        one dropped: its latest record is then in the segments (`latest`). Read without a
        lock (a lookup is atomic); empty when the journal is `broken`."""
        return {} if self.broken else self._fresh

    def forget_fresh(self, records: list[JournalRecord]) -> None:
        """Drop ``records`` from `fresh` (made into the manifest's lines of a proven folder),
        each unless a later record of its path came since."""
        with self._lock:
            self._fresh.forget(records)

    # -- the thread --------------------------------------------------------------------------
    def _main(self) -> None:
        if self.low_priority:
            lower_thread_priority()
        try:
            self._loop()
        finally:
            if self._folders is not None:
                self._folders.close()

    def _loop(self) -> None:
        while not self._closing.is_set():
            try:
                item = self._queue.get(timeout=max(0.05, min(0.5, self.flush_s)))
            except queue.Empty:
                item = None
            with self._busy:
                if item is not None:
                    self._hash(*item)
                with self._lock:
                    due = len(self._buffer) >= BATCH or (
                        self._buffer and time.monotonic() - self._buffer_since >= self.flush_s
                    )
                if due:
                    self._flush_locked()

    def _hash(self, rel: str, size: int, mtime_ns: int, stamp: str, seq: int) -> None:
        """Hash ``rel`` as the destination returns it, if it is still the version published
        (its size and mtime, the ``stamp`` where one is recorded on it, and the same size,
        mtime and stamp after the read); else, or when it cannot be read, an invalidation."""
        key = path_key(rel)
        try:
            if self._folders is not None:
                found = self._hash_local(rel, size, mtime_ns)
            else:
                found = self._hash_by_path(rel, size, mtime_ns)
        except OSError:
            found = None
        if found is not None and stamp:
            # (the record names the source version, as a hash made while copying does; a
            # stamp recorded on the file must be that version's)
            found = None if found[1] not in ("", stamp) else (found[0], stamp, found[2])
        if found is None:
            self._add(JournalRecord(key, seq, rel))
        else:
            self.hashed += 1
            self._add(JournalRecord(key, seq, rel, size, *found))

    def _hash_by_path(self, rel: str, size: int, mtime_ns: int) -> tuple[int, str, str] | None:
        """``(mtime_ns, stamp, digest)`` of ``rel`` through the `Destination` interface (any
        destination): stat, read back, stat again; None when it is not the version. The
        mtime is the source's (``mtime_ns``), as a record of a hash made while copying."""
        dest = self.dest
        before = dest.stat(rel, stamp=True)
        if (
            before is None
            or not before.is_file
            or before.size != size
            or abs(before.mtime_ns - mtime_ns) >= dest.capabilities.mtime_precision_ns
        ):
            return None
        n, digest = read_back(dest, rel)
        if dest.stat(rel, stamp=True) != before or n != size:
            return None
        return mtime_ns, (before.stamp or b"").decode("ascii", "replace"), digest

    def _hash_local(self, rel: str, size: int, mtime_ns: int) -> tuple[int, str, str] | None:
        """`_hash_by_path` on a local destination, with a tenth of its system calls: the file
        is opened once (through its folder's descriptor, kept while the files of one folder
        follow each other), and its size, mtime, ctime and stamp are read from that
        descriptor before and after the read. They describe the very file read: the path may
        meanwhile lead to another (a newer copy renamed over it), which the finish sees as a
        version this record does not match. ctime: a write in place, or a stamp set, moves it.
        """
        parent, _, name = rel.rpartition("/")
        dir_fd = self._folders.open(parent)
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            st = os.fstat(fd)
            if (
                not stat.S_ISREG(st.st_mode)
                or st.st_size != size
                or abs(st.st_mtime_ns - mtime_ns) >= self.dest.capabilities.mtime_precision_ns
            ):
                return None
            stamp = get_xattr(fd, SOURCE_STAMP) if self.dest.capabilities.xattrs else None
            n, digest = read_fd(fd, size)
            after = os.fstat(fd)
        finally:
            os.close(fd)
        if n != size or (after.st_size, after.st_mtime_ns, after.st_ctime_ns) != (
            st.st_size,
            st.st_mtime_ns,
            st.st_ctime_ns,
        ):
            return None
        return mtime_ns, (stamp or b"").decode("ascii", "replace"), digest

    # -- writing segments ---------------------------------------------------------------------
    def _flush_locked(self, merge: bool = True, *, finish: bool = False) -> None:
        """Write the buffer as one segment (called with `_busy` held); merge segments when
        `FANIN` of one level have gathered (unless ``merge`` is False).

        While the destination is away (`away.RETRY_ERRNOS`: full, a share's connection
        dropped) the records are kept, up to `HOLD_MAX`, and written at a later flush; at
        the ``finish`` the error is raised then, for the finish to wait and ask again.
        """
        with self._lock:
            records, self._buffer = self._buffer, []
        if not records or self.broken:
            return
        records.sort()
        self._segment_n += 1
        try:
            self._write_segment(_segment_name(0, self.run, self._segment_n), records)
        except OSError as exc:
            if exc.errno in RETRY_ERRNOS and len(records) + len(self._buffer) <= HOLD_MAX:
                with self._lock:
                    self._buffer[:0] = records  # (the older first; sorted when written)
                    self._buffer_since = time.monotonic()
                if not self._held:
                    self._held = True
                    log.info("the hash journal keeps its records until it can write (%s)", exc)
                if finish:
                    raise
                return
            self._break(exc)
            return
        self._held = False
        if merge:
            try:
                self._merge_full_levels()
            except OSError as exc:  # (cut short: duplicates, harmless; merged at a later flush)
                if exc.errno not in RETRY_ERRNOS:
                    self._break(exc)

    def _break(self, exc: OSError) -> None:
        # Records lost: an older hash might then stand for a newer version. The journal is
        # no longer used: the finish hashes every file, as without one.
        self.broken = f"the hash journal at {self.dest.path / STATE_DIR} failed ({exc})"
        degrade("hashing during the copy", f"{self.broken}; the finish hashes every file")

    def _write_segment(self, name: str, records) -> None:
        temp = self.dest.create_temp(f"{STATE_DIR}/{name}")
        try:
            fd = temp.fileno()
            # (an object store's temporary file has no descriptor: it takes the bytes)
            write = temp.write if fd is None else functools.partial(_write_all, fd)
            chunk: list[bytes] = []
            for record in records:
                chunk.append(record.line())
                if len(chunk) >= 1024:
                    write(b"".join(chunk))
                    chunk = []
            write(b"".join(chunk))
            # No fsync: a segment lost in a power cut only means those files are hashed at the
            # finish; one published with lost content reads as torn lines, which are dropped.
            self.dest.publish(temp)
        finally:
            self.dest.release(temp)

    def _segments_by_name(self) -> dict[str, tuple[int, int, int]]:
        entries = self.dest.listdir(STATE_DIR) or {}
        out = {}
        for name, info in entries.items():
            parts = _segment_parts(name)
            if info.is_file and not is_own_temp_name(name) and parts is not None:
                out[name] = parts
        return out

    def _merge_full_levels(self) -> None:
        level = 0
        while True:
            names = sorted(n for n, p in self._segments_by_name().items() if p[0] == level)
            if len(names) < FANIN:
                return
            self._segment_n += 1
            merged = _segment_name(level + 1, self.run, self._segment_n)
            self._write_segment(merged, _latest(self._read_segments(names)))
            for name in names:  # (a crash before these leaves duplicates: harmless)
                self.dest.unlink(f"{STATE_DIR}/{name}")
            level += 1

    def _read_segments(self, names: list[str]) -> Iterator[JournalRecord]:
        streams = [self._records(name) for name in names]
        return heapq.merge(*streams)

    def _records(self, name: str) -> Iterator[JournalRecord]:
        with self.dest.read(f"{STATE_DIR}/{name}") as f:
            # (a destination's reader may be unbuffered: lines read a byte per call there)
            lines = io.BufferedReader(f, 1 << 16) if isinstance(f, io.RawIOBase) else f
            for line in lines:
                record = parse_record(line)
                if record is not None:
                    yield record

    # -- the finish ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hold the hasher (between two files) and write what it has recorded: inside, the
        segments are complete and none is merged away (`latest` reads them). No merge here:
        `latest` merges every segment in memory right after, and a merge first would read
        and write them all once more (at 50,002 files into S3, when the finish's segment was
        the sixteenth: 16 GETs, a 7 MiB PUT and 16 DELETEs, 0.33 s of the 0.8 s from the last
        upload to the exit; benchmarks/notes.md item 56)."""
        with self._busy:
            self._flush_locked(merge=False, finish=True)
            yield

    def latest(self) -> Iterator[JournalRecord]:
        """Each path's latest record, in path order (call it inside `paused`); nothing when
        the journal is `broken`."""
        if self.broken:
            return iter(())
        return _latest(self._read_segments(sorted(self._segments_by_name())))

    def find(self, rels: Collection[str]) -> dict[str, JournalRecord]:
        """The latest record of each of ``rels`` that has one (call it inside `paused`),
        each segment read once, a block at a time, and only the lines of those paths
        parsed: for the few files of a day whose records are not in memory, where `latest`
        would parse every record (994,500 records, 4,086 of them wanted: 2.2-2.5 s, against
        0.3 s here; benchmarks/notes.md item 82). Nothing when the journal is `broken`."""
        if self.broken or not rels:
            return {}
        # (the first field of a line as `JournalRecord.line` writes it, with its tab)
        wanted = {json_string(rel).encode() + b"\t" for rel in rels}
        found: dict[str, JournalRecord] = {}

        def keep(record: JournalRecord | None) -> None:
            if record is not None:
                kept = found.get(record.rel)
                if kept is None or kept.seq < record.seq:
                    found[record.rel] = record

        for name in self._segments_by_name():
            with self.dest.read(f"{STATE_DIR}/{name}") as f:
                rest = b""
                while block := f.read(1 << 22):
                    lines = (rest + block).split(b"\n")
                    rest = lines.pop()  # (the start of the next block's first line)
                    for line in lines:
                        tab = line.find(b"\t") + 1
                        if line[:tab] in wanted:
                            keep(parse_record(line + b"\n"))
                        elif line[:1] == b"{":  # (a record of an earlier version's form)
                            record = parse_record(line + b"\n")
                            if record is not None and record.rel in rels:
                                keep(record)
                # (a last line without its newline is torn: `parse_record` drops it)
        return found

    def _stop_thread(self) -> None:
        """Stop the thread now, not at its next look at `_closing` (up to 0.5 s later: that
        half second was the last of every copy, after its marker)."""
        self._closing.set()
        with contextlib.suppress(queue.Full):  # (full: the thread is busy and looks soon)
            self._queue.put_nowait(None)
        if self._thread is not None:
            self._thread.join(10.0)

    def close(self) -> None:
        """Stop the thread; what it had not hashed is recorded as invalidated, and written."""
        self._stop_thread()
        with self._busy:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    rel, _size, _mtime, _stamp, seq = item
                    self._add(JournalRecord(path_key(rel), seq, rel))
            with contextlib.suppress(OSError):
                self._flush_locked()

    def discard(self) -> None:
        """Stop the thread and delete the journal (once the manifest and marker are written:
        the manifest holds what it knew)."""
        self._stop_thread()
        with self._busy:
            with self._lock:
                self._buffer = []
                self._fresh = FreshRecords(FRESH_MAX)
            with contextlib.suppress(OSError):
                for name in self._segments_by_name():
                    self.dest.unlink(f"{STATE_DIR}/{name}")


def _latest(records: Iterator[JournalRecord]) -> Iterator[JournalRecord]:
    """The last record of each run of equal paths (the stream is in (path, seq) order)."""
    previous = None
    for record in records:
        if previous is not None and record.key != previous.key:
            yield previous
        previous = record
    if previous is not None:
        yield previous


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
