"""The hash journal's records (`hashes.HashJournal`) as lines of its segments: one
record a line, written by `JournalRecord.line` and read by `parse_record`, in the order of a
sorted walk (`path_key`)."""

from __future__ import annotations

import itertools
import json
import struct
from collections.abc import Iterator, Mapping
from typing import NamedTuple

from .platform import degrade

__all__ = ["FreshRecords", "JournalRecord", "json_string", "parse_record", "path_key"]

#: A str as a JSON string, non-ASCII escaped as ``json.dumps`` does (its C encoder).
json_string = json.encoder.encode_basestring_ascii


class JournalRecord(NamedTuple):
    """One record: the hash of a version of ``rel``, or (``digest`` empty) its invalidation.
    Tuples order by path (`key`: `path_key`, the order of a sorted walk), then `seq`."""

    key: str
    seq: int
    rel: str
    size: int = -1
    mtime_ns: int = -1
    stamp: str = ""
    digest: str = ""

    def line(self) -> bytes:
        """The record as a line of tab-separated fields: the path and the stamp as JSON
        strings (json's own encoder: ASCII, no tab or newline, any path reads back), the
        numbers and the hex digest bare. Parsed by a split, a fifth of ``json.loads``' time
        (once per file at the finish)."""
        rel = json_string(self.rel)
        if not self.digest:
            return f"{rel}\t{self.seq}\n".encode()
        return (
            f"{rel}\t{self.seq}\t{self.size}\t{self.mtime_ns}\t"
            f"{json_string(self.stamp)}\t{self.digest}\n"
        ).encode()


def path_key(rel: str) -> str:
    """The order of a walk that lists each folder sorted by name (`sorted_files`): the path
    with "/" made the lowest character (it is in no name), which orders paths as the tuples
    of their components would, at the cost of one string."""
    return rel.replace("/", "\0")


def _unquote(field: bytes) -> str:
    """A JSON string field of `JournalRecord.line` (ValueError if it is not one)."""
    text = field.decode("ascii")
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise ValueError(text)
    if "\\" in text:
        return json.loads(text)
    inner = text[1:-1]
    if '"' in inner:  # (two lines glued by a crash: never taken for a path)
        raise ValueError(text)
    return inner


def parse_record(line: bytes) -> JournalRecord | None:
    """A record from its line; None for a line torn by a crash (no newline at its end, a
    field missing or not of its kind): dropped."""
    if line[:1] == b"{":
        return _parse_json(line)
    if not line.endswith(b"\n"):
        return None  # (cut short: a number in it may be cut too)
    fields = line[:-1].split(b"\t")
    try:
        rel, seq = _unquote(fields[0]), int(fields[1])
        if len(fields) == 2:
            return JournalRecord(path_key(rel), seq, rel)
        if len(fields) != 6 or len(fields[5]) != 64:
            return None
        size, mtime, stamp = int(fields[2]), int(fields[3]), _unquote(fields[4])
        return JournalRecord(path_key(rel), seq, rel, size, mtime, stamp, fields[5].decode())
    except (ValueError, IndexError, UnicodeDecodeError):
        return None


def _parse_json(line: bytes) -> JournalRecord | None:
    """A record of a segment written by an earlier version (a JSON object a line), so that a
    copy resumed across an upgrade keeps its hashes."""
    try:
        item = json.loads(line)
        rel, seq = item["p"], item["q"]
        if not isinstance(rel, str) or type(seq) is not int:
            return None
        if "b3" not in item:
            return JournalRecord(path_key(rel), seq, rel)
        size, mtime, stamp, digest = item["s"], item["m"], item["t"], item["b3"]
        if type(size) is not int or type(mtime) is not int or not isinstance(stamp, str):
            return None
        if not isinstance(digest, str) or len(digest) != 64:
            return None
        return JournalRecord(path_key(rel), seq, rel, size, mtime, stamp, digest)
    except (ValueError, KeyError, TypeError):
        return None  # (torn by a crash: dropped)


class FreshRecords(Mapping[str, JournalRecord]):
    """This run's latest record of each path published, by its path (`hashes.HashJournal.fresh`),
    at most ``cap``: beyond it the oldest are dropped, an eighth at once (a dict's first key is
    found past those deleted before, so one at a time would scan thousands of deleted entries
    a file), and that is said once in the copy's notices. Not thread-safe for writers (the
    journal's lock); a lookup is one dict lookup (atomic).

    Kept packed (`_pack`: one bytes object a path, its numbers, raw digest and stamp), a
    `JournalRecord` made only when one is looked up: 544 -> 209 bytes a record by tracemalloc
    (day-geometry paths and stamps), 17.0 -> 6.5 MiB at `hashes.FRESH_MAX`; the tuple kept its
    path twice (`key`), its digest as 64 hex characters and five objects besides.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.dropped = 0  # (still in the journal's segments)
        self._packed: dict[str, bytes] = {}

    def __getitem__(self, rel: str) -> JournalRecord:
        return _unpack(rel, self._packed[rel])

    def get(self, rel: str, default=None):  # type: ignore[override]
        """``rel``'s record, made from its packed form (one dict lookup otherwise)."""
        data = self._packed.get(rel)
        return default if data is None else _unpack(rel, data)

    def __contains__(self, rel: object) -> bool:
        return rel in self._packed

    def __iter__(self) -> Iterator[str]:
        return iter(self._packed)

    def __len__(self) -> int:
        return len(self._packed)

    def keep(self, record: JournalRecord) -> bool:
        """Keep ``record`` as its path's latest unless a later one (by `seq`) is kept: a
        background hash comes after the publish it is of. Whether the oldest were dropped
        (then `say_dropped`, outside the journal's lock)."""
        packed = self._packed
        kept = packed.get(record.rel)
        if kept is not None:
            if _seq(kept) > record.seq:
                return False
            del packed[record.rel]  # (to the end: the oldest are dropped first)
        packed[record.rel] = _pack(record)
        if len(packed) <= self.cap:
            return False
        for rel in list(itertools.islice(packed, max(1, self.cap // 8))):
            del packed[rel]
        self.dropped += max(1, self.cap // 8)
        return True

    def say_dropped(self) -> None:
        """Said once: the copy stays correct, but the finish reads the journal back."""
        degrade(
            "keeping the manifest's hashes in memory",
            f"more than {self.cap:,} files copied in folders not yet proven: the finish "
            "reads the other files' hashes back from the hash journal",
        )

    def forget(self, records: list[JournalRecord]) -> None:
        """Drop ``records`` (made into a proven folder's manifest lines), each unless a later
        record of its path came since (a sequence number is one publish's)."""
        packed = self._packed
        for record in records:
            data = packed.get(record.rel)
            if data is not None and _seq(data) == record.seq:
                del packed[record.rel]


#: A kept record's numbers (`FreshRecords`): seq, size, mtime_ns, whether its digest is kept
#: raw (its hex text otherwise), the kept digest's length; then the digest, then the stamp.
_FRESH = struct.Struct("<qqq?H")


def _pack(record: JournalRecord) -> bytes:
    text = record.digest
    try:
        digest = bytes.fromhex(text) if len(text) == 64 else b""
    except ValueError:
        digest = b""
    raw = bool(digest) and digest.hex() == text  # (else kept as it is: never altered)
    if not raw:
        digest = text.encode("utf-8", "surrogatepass")
    head = _FRESH.pack(record.seq, record.size, record.mtime_ns, raw, len(digest))
    return head + digest + record.stamp.encode("utf-8", "surrogatepass")


def _seq(data: bytes) -> int:
    return int.from_bytes(data[:8], "little", signed=True)


def _unpack(rel: str, data: bytes) -> JournalRecord:
    seq, size, mtime_ns, raw, n = _FRESH.unpack_from(data)
    end = _FRESH.size + n
    digest = data[_FRESH.size : end]
    text = digest.hex() if raw else digest.decode("utf-8", "surrogatepass")
    stamp = data[end:].decode("utf-8", "surrogatepass")
    return JournalRecord(path_key(rel), seq, rel, size, mtime_ns, stamp, text)
