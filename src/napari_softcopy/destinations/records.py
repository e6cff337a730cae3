"""Records of what each destination file was copied from, where the destination cannot say.

SFTP and exFAT through FUSE keep whole seconds, FAT two, and Samba behind ``rclone mount``
keeps no extended attributes: there a chunk rewritten with its size unchanged within the
same second, or rewritten with its size and mtime put back, looks copied. So such a
destination keeps, below ``STATE_DIR/records/``, one small file per destination folder with a
line per published file: the source's size, nanosecond mtime and stamp, and the
destination file's mtime right after publishing. The rule (`base.copy_difference`) trusts a
record only while the destination file still has that mtime and the source's size. (Not its
inode number: FUSE mounts such as ``rclone mount`` hand out new ones for the same file.)
Where the destination moves mtimes by itself (`Capabilities.stable_mtime` False: ``rclone
mount`` shows the time a reader opened a file it is uploading, then the server's finer
time), the mtime proves nothing either way and the size alone guards the record.

Chosen for a day's scale (a million files in a thousand folders):

- one record file per folder (named by a hash of its path), so a scan or a verification
  reads each once, beside its listing, and memory holds only a few folders (an LRU);
- appended, batched: lines are written in one ``write`` per folder at most every
  `FLUSH_EVERY_S` or `FLUSH_LINES` lines, and at `SourceRecords.flush` (before anything is
  verified or marked), never one rewrite per file;
- each line carries its CRC-32: a line torn by a crash, or glued to the next append, is
  dropped, and a file without a valid line is compared by size and mtime within the
  destination's precision (as rclone and rsync do), never taken for copied by mistake;
- a record file grown to more than twice its live lines (shards rewritten many times) is
  compacted when read: rewritten whole under a temporary name and renamed over the old.

A record is only ever written after its file was published, so a crash loses records
(those files are then judged by size and mtime), never leaves one that claims too much.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import zlib
from collections import OrderedDict

from ..layout import OWN_TEMP_SUFFIX
from ..platform import blake2b
from .base import STATE_DIR, SourceRecord

RECORDS_DIR = f"{STATE_DIR}/records"
FLUSH_EVERY_S = 1.0
FLUSH_LINES = 1024
#: Folders whose records are held in memory at once (a live copy writes to a few at a time).
CACHED_FOLDERS = 64

# name -> (what the source was, the destination file's mtime when published)
Entries = dict[str, tuple[SourceRecord, int]]

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_UNESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def _escape(name: str) -> str:
    return name.translate(_ESCAPES)


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out, chars = [], iter(text)
    for c in chars:
        out.append(_UNESCAPES.get(next(chars, ""), "") if c == "\\" else c)
    return "".join(out)


def _line(name: str, record: SourceRecord, mtime_ns: int) -> str:
    stamp = record.stamp.decode("ascii", "replace") if record.stamp else "-"
    body = f"{_escape(name)}\t{record.size}\t{record.mtime_ns}\t{stamp}\t{mtime_ns}"
    return f"{body}\t{zlib.crc32(body.encode()):08x}\n"


def _parse(text: str) -> tuple[Entries, int]:
    """The live entries of a record file and its number of valid lines."""
    entries: Entries = {}
    lines = 0
    for line in text.split("\n"):
        body, _, crc = line.rpartition("\t")
        if not body or len(crc) != 8 or f"{zlib.crc32(body.encode()):08x}" != crc:
            continue  # torn or glued by a crash: dropped (the file is judged without it)
        fields = body.split("\t")
        if len(fields) != 5:
            continue
        name, size, mtime, stamp, dst_mtime = fields
        try:
            record = SourceRecord(int(size), int(mtime), None if stamp == "-" else stamp.encode())
            entries[_unescape(name)] = (record, int(dst_mtime))
        except ValueError:
            continue
        lines += 1
    return entries, lines


def record_file(rel_dir: str) -> str:
    """The record file of the destination folder ``rel_dir``, relative to the root."""
    digest = blake2b(rel_dir.encode("utf-8", "surrogateescape"), digest_size=10)
    return f"{RECORDS_DIR}/{digest.hexdigest()}"


class SourceRecords:
    """The records of one destination root (open folder ``root_fd``), thread-safe.

    Parameters
    ----------
    root_fd : int
        The destination root (not closed here).
    writable : bool
        False for a verification: records are read, never compacted or written.
    stable_mtime : bool
        The destination keeps a file's mtime as it was published (`Capabilities.stable_mtime`):
        a record is trusted only while the file still has it. False: whatever it has.
    """

    def __init__(self, root_fd: int, *, writable: bool = True, stable_mtime: bool = True) -> None:
        self._root = root_fd
        self._writable = writable
        self.stable_mtime = stable_mtime
        # ``_lock`` guards what is in memory only, never held across a round trip to the
        # destination: on a network share a flush or a load takes milliseconds, and neither
        # the copy threads' `add` nor the finish's walk (a `get`) must wait for them. ``_io``
        # orders the writes (appends, in order; a compaction's rewrite).
        self._lock = threading.Lock()
        self._io = threading.Lock()
        self._writing: dict[str, list[str]] = {}  # (the lines a flush is writing now)
        self._flushes = 0  # (flushes ended: a load during which one ended reads again)
        self._cache: OrderedDict[str, Entries] = OrderedDict()
        self._pending: dict[str, list[str]] = {}
        self._n_pending = 0
        self._last_flush = time.monotonic()
        self._made_dir = False

    def get(self, rel_dir: str) -> Entries:
        """The records of the folder ``rel_dir`` (name -> record, destination mtime)."""
        with self._lock:
            entries = self._cache.get(rel_dir)
            if entries is not None:
                self._cache.move_to_end(rel_dir)
                return entries
        # Read beside a flush; where one ended during the read (twice: a share slower to
        # read a file than the flushes come), read with the writes held off.
        for held in (False, False, True):
            with self._io if held else contextlib.nullcontext():
                with self._lock:
                    flushes = self._flushes
                entries, lines = self._load(rel_dir)
                with self._lock:
                    if self._flushes != flushes:
                        continue  # (its lines may be past what was read)
                    cached = self._cache.get(rel_dir)  # (loaded by another thread meanwhile)
                    if cached is not None:
                        return cached
                    # Newer than the file: a flush's lines (in it or not yet), the pending.
                    for newer in (self._writing.get(rel_dir), self._pending.get(rel_dir)):
                        if newer:
                            entries.update(_parse("".join(newer))[0])
                    self._cache[rel_dir] = entries
                    while len(self._cache) > CACHED_FOLDERS:
                        self._cache.popitem(last=False)
            if self._writable and lines > 2 * len(entries) + 64:
                self._compact(rel_dir)
            return entries
        raise AssertionError("unreachable")  # (the last read holds the writes off)

    def lookup(self, rel: str, mtime_ns: int) -> SourceRecord | None:
        """The record of the file ``rel`` if the destination file still has the mtime it was
        published with (``mtime_ns``: its mtime now), else None."""
        parent, _, name = rel.rpartition("/")
        return self.trusted(self.get(parent).get(name), mtime_ns)

    def trusted(self, found: tuple[SourceRecord, int] | None, mtime_ns: int) -> SourceRecord | None:
        """The record of an entry of `get` (``found``) if it still holds for a destination
        file whose mtime is now ``mtime_ns`` (the one it was published with, where mtimes are
        stable), else None."""
        if found is None or (self.stable_mtime and found[1] != mtime_ns):
            return None
        return found[0]

    def add(self, rel: str, record: SourceRecord, mtime_ns: int) -> None:
        """Record that ``rel`` (its mtime now ``mtime_ns``) was published from ``record``;
        written with the next batch."""
        parent, _, name = rel.rpartition("/")
        with self._lock:
            cached = self._cache.get(parent)
            if cached is not None:
                cached[name] = (record, mtime_ns)
            self._pending.setdefault(parent, []).append(_line(name, record, mtime_ns))
            self._n_pending += 1
            due = (
                self._n_pending >= FLUSH_LINES
                or time.monotonic() - self._last_flush >= FLUSH_EVERY_S
            )
        if due and self._io.acquire(blocking=False):  # (else another thread writes them now)
            try:
                self._flush()
            finally:
                self._io.release()

    def forget(self, rel: str) -> None:
        """Drop the cached record of ``rel`` (its file was removed or replaced otherwise)."""
        parent, _, name = rel.rpartition("/")
        with self._lock:
            cached = self._cache.get(parent)
            if cached is not None:
                cached.pop(name, None)

    def flush(self) -> None:
        """Append every pending line to its folder's record file."""
        with self._io:
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            pending, self._pending, self._n_pending = self._pending, {}, 0
            self._writing = pending
            self._last_flush = time.monotonic()
        if not pending:
            return
        try:
            self._make_dir()
            for rel_dir, lines in pending.items():
                fd = os.open(
                    record_file(rel_dir),
                    os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                    0o644,
                    dir_fd=self._root,
                )
                try:
                    data = "".join(lines).encode("utf-8", "surrogateescape")
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                finally:
                    os.close(fd)
        finally:
            with self._lock:
                self._writing = {}
                self._flushes += 1

    def _make_dir(self) -> None:
        if self._made_dir:
            return
        for rel in (STATE_DIR, RECORDS_DIR):
            with contextlib.suppress(FileExistsError):
                os.mkdir(rel, dir_fd=self._root)
        self._made_dir = True

    def _load(self, rel_dir: str) -> tuple[Entries, int]:
        """The live entries of the record file of ``rel_dir`` and its number of lines."""
        try:
            fd = os.open(record_file(rel_dir), os.O_RDONLY | os.O_CLOEXEC, dir_fd=self._root)
        except OSError:
            return {}, 0
        with os.fdopen(fd, "rb") as f:
            return _parse(f.read().decode("utf-8", "surrogateescape"))

    def _compact(self, rel_dir: str) -> None:
        """Rewrite a record file with its live lines only (temporary name, then rename),
        read again with no append meanwhile (one would be lost with the old file)."""
        with self._io:
            entries, lines = self._load(rel_dir)
            if lines > 2 * len(entries) + 64:
                self._rewrite(record_file(rel_dir), entries)

    def _rewrite(self, path: str, entries: Entries) -> None:
        temp = f"{path}.{os.urandom(4).hex()}{OWN_TEMP_SUFFIX}"
        data = "".join(_line(n, r, m) for n, (r, m) in entries.items())
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=self._root)
            try:
                view = memoryview(data.encode("utf-8", "surrogateescape"))
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.rename(temp, path, src_dir_fd=self._root, dst_dir_fd=self._root)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=self._root)
