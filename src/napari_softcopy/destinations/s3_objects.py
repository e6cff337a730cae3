"""The pieces of `S3Destination`: what is known of one object (`ObjectInfo`, kept packed in
the copy's tree: `pack_object`), the bytes of a file on their way to its object
(`S3TempFile`), and an object read back as a stream."""

from __future__ import annotations

import io
import json
import struct
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import BinaryIO

import xxhash

from .base import FileInfo, TempFile

#: A file up to this size is kept in memory until its PUT (a chunk, a small shard); a larger
#: one is spilled to an unnamed local file and sent in parts.
SPILL_BYTES = 4 * 1024 * 1024
#: A larger file waits for one of the destination's `BIG_SLOTS` before it is read: with 96
#: uploads in flight (`S3Destination.suggested_workers`) at most 24 large files are read and
#: sent at once (32 when 32 were in flight), plus 96 x 256 KiB of small ones.
SMALL_BYTES = 256 * 1024
#: Files above `SMALL_BYTES` read and sent at once (the others wait for a slot).
BIG_SLOTS = 24


@dataclass(slots=True)
class ObjectInfo:
    """What is known of one object: its size, ETag and (once read) the source's mtime and
    stamp recorded on it (``mtime_ns`` None: not read yet); ``last_modified_ns`` is the
    server's time from a listing or a HEAD, which stands in where no source mtime is
    recorded (0 for an object this copy published: its source mtime is known); ``digest``
    the BLAKE3 of the bytes a copy's PUT of it sent, where the server checked their
    checksum on arrival (`S3Destination.acknowledged_digest`; 32 bytes): this copy's own,
    or an earlier one's from the index (where that index entry has the object's ETag and
    size) or from the object's metadata; None for any other object."""

    size: int
    etag: str
    mtime_ns: int | None = None
    stamp: bytes | None = None
    last_modified_ns: int = 0
    digest: bytes | None = None


# An object's `ObjectInfo` packed into one bytes object for the copy's tree (`s3_tree`): its
# size, source mtime, server time, flags and the ETag's length, then the ETag (16 bytes where
# it is an MD5's 32 lowercase hex digits, as a PUT's is; else its text), the digest (32
# bytes) and the stamp. In the copy's tree an object cost 349 bytes as a slotted object with
# its fields as Python objects, keyed by its path; 170 packed in its folder's map
# (tracemalloc, benchmarks/notes.md item 86): 170 MiB less at a day's million objects.
_PACKED = struct.Struct("<qqqBH")
_MTIME, _DIGEST, _STAMP, _MD5 = 1, 2, 4, 8
_FLAGS_AT = 24  # (the flags' offset in `_PACKED`)
_HEX = frozenset("0123456789abcdef")


def pack_object(obj: ObjectInfo) -> bytes:
    """``obj`` as one bytes object (`unpack_object` gives it back, field for field)."""
    flags = 0
    etag = obj.etag
    if len(etag) == 32 and _HEX.issuperset(etag):
        flags |= _MD5
        tag = bytes.fromhex(etag)
    else:
        tag = etag.encode()
        if len(tag) > 0xFFFF:  # (no ETag is this long)
            raise ValueError(f"an ETag of {len(tag)} bytes")
    mtime = 0
    if obj.mtime_ns is not None:
        flags |= _MTIME
        mtime = obj.mtime_ns
    digest = obj.digest
    if digest is not None:
        if len(digest) != 32:
            raise ValueError(f"a digest of {len(digest)} bytes")
        flags |= _DIGEST
    if obj.stamp is not None:
        flags |= _STAMP
    head = _PACKED.pack(obj.size, mtime, obj.last_modified_ns, flags, len(tag))
    return b"".join((head, tag, digest or b"", obj.stamp or b""))


def unpack_object(raw: bytes) -> ObjectInfo:
    """The `ObjectInfo` that `pack_object` packed into ``raw`` (a new object: changing it
    changes nothing in the tree)."""
    size, mtime, last_modified, flags, n = _PACKED.unpack_from(raw)
    at = _PACKED.size
    tag = raw[at : at + n]
    at += n
    digest = None
    if flags & _DIGEST:
        digest = raw[at : at + 32]
        at += 32
    return ObjectInfo(
        size,
        tag.hex() if flags & _MD5 else tag.decode(),
        mtime if flags & _MTIME else None,
        raw[at:] if flags & _STAMP else None,
        last_modified,
        digest,
    )


def file_info_of(raw: bytes, stamp: bool) -> FileInfo:
    """The `FileInfo` of the object packed in ``raw`` (its source mtime, else the server's
    time; its stamp where ``stamp``), without an `ObjectInfo` on the way: a walk makes one
    for each object."""
    size, mtime, last_modified, flags, n = _PACKED.unpack_from(raw)
    if not flags & _MTIME:
        mtime = last_modified
    recorded = None
    if stamp and flags & _STAMP:
        recorded = raw[_PACKED.size + n + (32 if flags & _DIGEST else 0) :]
    return FileInfo(False, True, size, mtime, recorded)


def source_mtime_known(raw: bytes) -> bool:
    """Whether the object packed in ``raw`` has its source mtime (else: not read yet)."""
    return bool(raw[_FLAGS_AT] & _MTIME)


@dataclass(slots=True)
class S3TempFile(TempFile):
    """The bytes of one file on their way to its object (no descriptor: `write` only)."""

    rel: str
    #: The bytes so far: a file's only block as the caller's own ``bytes`` (no copy: most
    #: chunk files are one read), copied into a bytearray once a second block comes.
    buffer: bytes | bytearray = b""
    spill: BinaryIO | None = None
    size: int = 0
    #: The xxh3-128 of the bytes, streamed once they are spilled (`hexdigest`).
    digest: object | None = None
    #: The BLAKE3 of the bytes as they are sent, where the server checks their checksum on
    #: arrival (`S3Destination.acknowledged_digest`); None elsewhere (not computed).
    b3: object | None = None
    published: bool = False
    #: The destination's slots for files held beyond `SMALL_BYTES` (`BIG_SLOTS`), and
    #: whether this file holds one (given back by `release_slot`).
    slots: threading.Semaphore | None = None
    holds_slot: bool = False

    def fileno(self) -> None:
        return None

    def release_slot(self) -> None:
        if self.holds_slot:
            self.holds_slot = False
            self.slots.release()

    def expect(self, size: int) -> None:
        """Wait for a slot before a file above `SMALL_BYTES` is read (`write` takes one too,
        for a writer that does not say the size first)."""
        if size > SMALL_BYTES:
            self._take_slot()

    def _take_slot(self) -> None:
        # (small files, most of an archive, never wait: many in flight is what makes each
        # upload cheap for the server; a few large ones at once fill the network)
        if not self.holds_slot and self.slots is not None:
            self.slots.acquire()
            self.holds_slot = True

    def write(self, data: bytes | memoryview) -> None:
        size = self.size + len(data)  # (all of it is in `buffer` until it is spilled)
        if size > SMALL_BYTES:
            self._take_slot()
        if self.b3 is not None:
            self.b3.update(data)
        self.size = size
        if self.spill is None and size > SPILL_BYTES:
            self.digest = xxhash.xxh3_128(self.buffer)
            self.spill = tempfile.TemporaryFile(prefix="softcopy-s3-")  # noqa: SIM115
            self.spill.write(self.buffer)
            self.buffer = b""
        if self.spill is not None:
            self.digest.update(data)
            self.spill.write(data)
        elif not self.buffer and type(data) is bytes:
            self.buffer = data  # (immutable: kept as it is, not copied)
        else:
            if type(self.buffer) is bytes:
                self.buffer = bytearray(self.buffer)
            self.buffer += data

    def hexdigest(self) -> str:
        """The xxh3-128 of the bytes written: only the object's metadata takes it, and only
        from `s3.META_FROM` bytes, so a file kept in memory is hashed here, when asked, not
        as it is written (most are small, and never asked)."""
        return (self.digest or xxhash.xxh3_128(self.buffer)).hexdigest()


def index_bytes(objects: Iterable[tuple[str, ObjectInfo]], skip: str, token: str = "") -> bytes:
    """The index (zlib of ``{"version": 1, "token": token, "objects": {rel: [size, ETag,
    source mtime, stamp]}, "digests": {rel: BLAKE3}}``) of ``objects`` whose source mtime is
    known, but those below ``skip`` (napari-softcopy's own folder). ``digests`` holds the
    hash of a checked upload (`ObjectInfo.digest`) for the objects that have one; it is a map
    of its own so that an index reads in a version that does not know it. Encoded and
    compressed a thousand entries at a time: the whole index as Python lists and one JSON
    string was ~20 MiB at 50,000 objects."""
    quote = json.encoder.encode_basestring  # (json's own string encoder: any name reads back)
    comp = zlib.compressobj(1)
    out = [comp.compress(f'{{"version": 1, "token": {quote(token)}, "objects": {{'.encode())]
    chunk: list[str] = []
    hashed: list[tuple[str, bytes]] = []
    sep = ""
    for rel, obj in objects:
        if obj.mtime_ns is None or rel.startswith(skip):
            continue
        stamp = quote(obj.stamp.decode()) if obj.stamp else "null"
        chunk.append(f"{sep}{quote(rel)}: [{obj.size}, {quote(obj.etag)}, {obj.mtime_ns}, {stamp}]")
        sep = ", "
        if obj.digest is not None:
            hashed.append((rel, obj.digest))
        if len(chunk) >= 1000:
            out.append(comp.compress("".join(chunk).encode()))
            chunk = []
    chunk.append('}, "digests": {')
    sep = ""
    for rel, digest in hashed:
        chunk.append(f'{sep}{quote(rel)}: "{digest.hex()}"')
        sep = ", "
        if len(chunk) >= 1000:
            out.append(comp.compress("".join(chunk).encode()))
            chunk = []
    out.append(comp.compress(("".join(chunk) + "}}").encode()))
    out.append(comp.flush())
    return b"".join(out)


def etag_of(meta: Mapping) -> str:
    return (meta.get("e_tag") or "").strip('"')


def ns_of(dt) -> int:
    return int(dt.timestamp() * 1e9) if dt is not None else 0


class ObjectReader(io.RawIOBase):
    """The body of one GET as a raw binary stream (``with``, ``read``), chunk by chunk as it
    arrives (``min_chunk_size``: what is held at once, whatever the object's size); a failed
    request raises what ``as_oserror`` makes of it (the engine waits for an OSError EIO).

    One request per object: obstore's ``open_reader`` asks for the size first (a HEAD), then
    the bytes, which doubled the requests of reading a copy of small chunks back."""

    def __init__(
        self, result, as_oserror: Callable[[BaseException], OSError], min_chunk_size: int
    ) -> None:
        self._chunks = iter(result.stream(min_chunk_size=min_chunk_size))
        self._as_oserror = as_oserror
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            try:
                chunk = next(self._chunks, None)
            except Exception as exc:
                raise self._as_oserror(exc) from None
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        self._chunks = iter(())
        self._pending = memoryview(b"")
        super().close()
