"""What an `S3Destination` knows of the objects below its prefix: the tree in memory (listed
at the start, then kept by the copy's own publishes and deletes), the source metadata of
each object (from the index, or a HEAD), and the index itself (`INDEX`).

Memory: per folder a map of its entries' names, interned (a Zarr archive's chunk names are
"0", "1", ... in every folder: one string each, not one per object), to each object's
`ObjectInfo` packed into one bytes object (`s3_objects.pack_object`); no path is kept per
object (keyed by path, with `ObjectInfo` objects, it took 349 bytes an object, now 170:
benchmarks/notes.md item 86). The listing is taken a page at a time, never held whole. A
verification opening the root again in the copy's process reads the copy's tree itself
(`s3_copiers`): one tree in the process, and no second listing.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from .base import STATE_DIR, FileInfo
from .s3_objects import (
    ObjectInfo,
    etag_of,
    file_info_of,
    index_bytes,
    ns_of,
    pack_object,
    source_mtime_known,
    unpack_object,
)

META_MTIME = "softcopy-mtime-ns"
META_STAMP = "softcopy-stamp"
#: The BLAKE3 of a checked upload's bytes (`ObjectInfo.digest`), on an object of at least
#: `s3.META_FROM` bytes too: after a kill -9 those published since the index was last
#: written (up to `INDEX_EVERY_S` of uploads) give it with the HEAD that reads their mtime,
#: instead of being read back (a smaller one, without metadata, is copied again).
META_BLAKE3 = "softcopy-blake3"
INDEX = f"{STATE_DIR}/s3-index.json.z"
INDEX_EVERY_S = 20.0
#: What changed since the index was last written goes into a part of its own (`index_part`),
#: up to this many; then the whole index is written again and the parts deleted. (At 50,000
#: objects the whole index took 0.1-0.8 s to encode and send, each time, mostly the finish's.)
INDEX_PARTS = 16
_PART = f"{STATE_DIR}/s3-index-"


def index_part(token: str, n: int) -> str:
    """The ``n``-th part (from 1) of the index whose token is ``token``: the entries that
    changed since the part before it (or the index) was written."""
    return f"{_PART}{token}-{n}.json.z"


def digest_of(text: object) -> bytes | None:
    """A BLAKE3 from the index or an object's metadata (64 hex digits); None otherwise."""
    if isinstance(text, str) and len(text) == 64:
        with contextlib.suppress(ValueError):
            return bytes.fromhex(text)
    return None


#: Requests in flight for reading metadata (HEAD) of objects the index does not know.
HEAD_CONCURRENCY = 16

_intern = sys.intern


class ObjectTree:
    """The objects below one prefix, their folders and their index.

    Parameters
    ----------
    store, probe
        obstore stores of the prefix (``store`` for the index and HEADs, ``probe`` for the
        listing: `s3_stores.make_stores`); `store` is replaced when the checksum is dropped.
    fail, io_error
        What an obstore error becomes at the start (`S3Destination._fail`) and later
        (`S3Destination._io_error`).
    """

    def __init__(
        self,
        store,
        probe,
        fail: Callable[[BaseException], Exception],
        io_error: Callable[[BaseException], OSError],
    ) -> None:
        self.store, self.probe = store, probe
        self._fail, self._io_error = fail, io_error
        self.lock = threading.Lock()
        #: Folder -> its entries: an object's `ObjectInfo` packed (`get`, `add`: read and
        #: replaced whole), or None for a folder only (where an object and a folder share a
        #: name, as S3 allows, the object is what the name lists as).
        self.dirs: dict[str, dict[str, bytes | None]] = {"": {}}
        self.count = 0  # (objects)
        self.dirty = False
        self.index_written = time.monotonic()
        #: Paths whose entry changed since the index (or its last part) was written.
        self.changed: set[str] = set()
        #: The token of the index this tree wrote last (None: write it whole next) and how
        #: many parts it has; the parts found at the start, deleted after a whole write
        #: where `owner` (the copy; a reader deletes nothing).
        self.token: str | None = None
        self.parts = 0
        self.old_parts: list[str] = []
        self.owner = False
        self._writing = threading.Lock()  # (one write at a time: parts follow each other)

    # -- the start -----------------------------------------------------------------------
    def list_all(self) -> None:
        """List every object below the prefix and take what the index knows of them."""
        import obstore

        try:
            # (a page at a time: 50,000 listed objects held at once as dicts were ~30 MiB)
            for batch in obstore.list(self.probe, chunk_size=1000):
                for meta in batch:
                    info = ObjectInfo(
                        meta["size"], etag_of(meta), last_modified_ns=ns_of(meta["last_modified"])
                    )
                    self.add(meta["path"], info)
        except Exception as exc:
            raise self._fail(exc) from None
        own = self.dirs.get(STATE_DIR, {})
        part = _PART.rpartition("/")[2]
        self.old_parts = [
            f"{STATE_DIR}/{name}"
            for name, raw in own.items()
            if raw is not None and name.startswith(part)
        ]
        token = self._load_index(INDEX)
        n = 1
        # (its parts in order, while there is one: each holds what changed after the last)
        while token and self.raw(index_part(token, n)) is not None:
            if self._load_index(index_part(token, n)) is None:
                break
            n += 1

    def _load_index(self, key: str) -> str | None:
        """Take the entries of the index (or part) ``key``; its token (None: unreadable)."""
        import obstore

        if self.raw(key) is None:
            return None
        try:
            raw = bytes(obstore.get(self.store, key).bytes())
        except FileNotFoundError:
            return None  # (removed since the listing: every object is looked at with a HEAD)
        except Exception as exc:
            # (a server failing now, restarting say, fails the HEADs too: said, not guessed)
            raise self._fail(exc) from None
        try:
            doc = json.loads(zlib.decompress(raw))
            entries, token = doc["objects"], doc.get("token") or ""
            digests = doc.get("digests") or {}  # (none in an index of an earlier version)
        except (ValueError, KeyError, TypeError, zlib.error):
            return None  # (unreadable: every object is looked at with a HEAD instead)
        for rel, (size, etag, mtime_ns, stamp) in entries.items():
            raw = self.raw(rel)
            if raw is None:
                continue
            obj = unpack_object(raw)
            # (the ETag checks the entry is of the object listed now, not one put since)
            if obj.etag == etag and obj.size == size:
                obj.mtime_ns = mtime_ns
                obj.stamp = stamp.encode() if stamp is not None else None
                digest = digest_of(digests.get(rel))
                if digest is not None:
                    obj.digest = digest
                self._replace(rel, raw, pack_object(obj))  # (at the start: no other writer)
        return token

    # -- the index -----------------------------------------------------------------------
    def index_due(self) -> bool:
        """Whether the index was last written more than `INDEX_EVERY_S` ago."""
        return time.monotonic() - self.index_written > INDEX_EVERY_S

    def mark(self, rel: str) -> None:
        """``rel``'s entry changed: the index is due for it (call with `lock` held)."""
        self.dirty = True
        self.changed.add(rel)

    def write_index(self) -> None:
        """PUT what changed since the index was last written, as its next part; the whole
        index (a new token: its old parts no longer count) when this tree has not written
        it yet, it has `INDEX_PARTS` parts, or most entries changed."""
        import obstore

        with self._writing:
            with self.lock:
                if not self.dirty:
                    return
                changed, self.changed = self.changed, set()
                whole = (
                    self.token is None or self.parts >= INDEX_PARTS or 2 * len(changed) > self.count
                )
                if whole:
                    token, key = secrets.token_hex(8), INDEX
                    objects = self._objects_of(self._snapshot())
                else:
                    token, key = self.token, index_part(self.token, self.parts + 1)
                    raw = self.raw
                    entries = [(r, b) for r in sorted(changed) if (b := raw(r)) is not None]
                    objects = ((r, unpack_object(b)) for r, b in entries)
                self.dirty = False
                self.index_written = time.monotonic()
            data = index_bytes(objects, STATE_DIR + "/", token)
            del objects
            try:
                obstore.put(self.store, key, data)
            except Exception as exc:
                with self.lock:
                    self.dirty = True
                    self.changed |= changed
                raise self._io_error(exc) from None
            if not whole:
                self.parts += 1
                return
            old = [index_part(self.token or "", n) for n in range(1, self.parts + 1)]
            self.token, self.parts = token, 0
            if self.owner and (old or self.old_parts):
                old += self.old_parts
                self.old_parts = []
                with contextlib.suppress(Exception):  # (left over: they no longer count)
                    obstore.delete(self.store, old)

    def _snapshot(self) -> list[tuple[str, dict[str, bytes | None]]]:
        """Each folder's prefix and a copy of its entries (call with `lock` held): a path
        for each object is made only as `_objects_of` reads it."""
        return [
            (f"{folder}/" if folder else "", dict(there)) for folder, there in self.dirs.items()
        ]

    @staticmethod
    def _objects_of(snapshot) -> Iterator[tuple[str, ObjectInfo]]:
        for base, entries in snapshot:
            for name, raw in entries.items():
                if raw is not None:
                    yield base + name, unpack_object(raw)

    # -- the tree (callers hold `lock` while others may change it) ----------------------------
    def raw(self, rel: str) -> bytes | None:
        """The packed record of the object ``rel`` (None: no such object)."""
        folder, _, name = rel.rpartition("/")
        entries = self.dirs.get(folder)  # (lookups: atomic without the lock)
        return None if entries is None else entries.get(name)

    def _replace(self, rel: str, old: bytes, new: bytes) -> bool:
        """Put the record ``new`` for ``rel`` where ``old`` is still its record (True)."""
        folder, _, name = rel.rpartition("/")
        entries = self.dirs.get(folder)
        if entries is None or entries.get(name) is not old:
            return False
        entries[name] = new
        return True

    def get(self, rel: str) -> ObjectInfo | None:
        """What is known of the object ``rel`` (a copy: `add` it to change the tree)."""
        raw = self.raw(rel)
        return None if raw is None else unpack_object(raw)

    def items(self) -> Iterator[tuple[str, ObjectInfo]]:
        """Every object's path and what is known of it."""
        with self.lock:
            snapshot = self._snapshot()
        return self._objects_of(snapshot)

    def add(self, rel: str, obj: ObjectInfo) -> None:
        parent, _, name = rel.rpartition("/")
        entries = self.dirs.get(parent)
        if entries is None:  # (a new folder: its own, and any above it still unknown)
            folder = ""
            for part in parent.split("/"):
                self.dirs[folder].setdefault(_intern(part), None)  # (an object there stays)
                folder = f"{folder}/{part}" if folder else part
                self.dirs.setdefault(folder, {})
            entries = self.dirs[parent]
        name = _intern(name)
        if entries.get(name) is None:
            self.count += 1
        entries[name] = pack_object(obj)

    def remove(self, rel: str) -> None:
        parent, _, name = rel.rpartition("/")
        entries = self.dirs.get(parent)
        if entries is None or entries.get(name) is None:
            return
        self.count -= 1
        if self.dirs.get(rel):
            entries[name] = None  # (a folder of that name still holds something)
            return
        del entries[name]
        # Folders left empty go (the root stays), up to one that holds something else.
        while parent and not self.dirs.get(parent):
            self.dirs.pop(parent, None)
            parent, _, name = parent.rpartition("/")
            above = self.dirs.get(parent)
            if above is None or above.get(name) is not None:
                return  # (an object of that name: it stays)
            above.pop(name, None)

    # -- reading -------------------------------------------------------------------------
    def info(self, rel: str, raw: bytes, stamp: bool) -> FileInfo:
        """The `FileInfo` of the object ``rel`` packed in ``raw`` (its metadata read first
        where the index did not have it)."""
        if not source_mtime_known(raw):
            self.read_metadata([rel])
            raw = self.raw(rel) or raw
        return file_info_of(raw, stamp)

    def read_metadata(self, rels: list[str]) -> None:
        """HEAD the objects ``rels`` the index does not know, many at a time."""
        import obstore

        def head(rel: str) -> None:
            try:
                result = obstore.get(self.store, rel, options={"head": True})
            except FileNotFoundError:
                return
            except Exception as exc:
                raise self._io_error(exc) from None
            attrs, meta = result.attributes, result.meta
            raw = self.raw(rel)
            if raw is None:
                return
            obj = unpack_object(raw)
            obj.size, obj.etag = meta["size"], etag_of(meta)
            obj.last_modified_ns = ns_of(meta["last_modified"])
            mtime = attrs.get(META_MTIME)
            # An object put there by something else has no mtime of ours: its server time
            # then stands in, which the rule never takes for the source's.
            obj.mtime_ns = int(mtime) if mtime and mtime.isdigit() else obj.last_modified_ns
            stamp = attrs.get(META_STAMP)
            obj.stamp = stamp.encode() if stamp else None
            obj.digest = digest_of(attrs.get(META_BLAKE3))
            with self.lock:  # (unless published or deleted meanwhile: that answer stands)
                if self._replace(rel, raw, pack_object(obj)):
                    self.mark(rel)

        if len(rels) == 1:
            head(rels[0])
            return
        with ThreadPoolExecutor(HEAD_CONCURRENCY) as pool:
            list(pool.map(head, rels))

    def stat(self, rel: str, stamp: bool) -> FileInfo | None:
        raw = self.raw(rel)
        if raw is not None:
            return self.info(rel, raw, stamp)
        if rel in self.dirs:
            return FileInfo(True, False, 0, 0)
        return None

    def listdir(
        self,
        rel_dir: str,
        cancelled: Callable[[], bool] | None,
        keep: Callable[[str], bool] | None,
        stamps: bool,
    ) -> dict[str, FileInfo] | None:
        """The folder's entries; `STATE_DIR` is not part of the copy and is not listed."""
        with self.lock:  # (copied: uploads finishing meanwhile add to it)
            listed = list(self.dirs.get(rel_dir, {}).items())
        listed.sort()  # (names are unique: records are never compared)
        if not rel_dir:
            listed = [item for item in listed if item[0] != STATE_DIR]
        if keep is not None:
            listed = [item for item in listed if keep(item[0])]
        base = f"{rel_dir}/" if rel_dir else ""
        unknown = [base + n for n, raw in listed if raw is not None and not source_mtime_known(raw)]
        if unknown:
            self.read_metadata(unknown)
            listed = [(n, raw and (self.raw(base + n) or raw)) for n, raw in listed]
        out: dict[str, FileInfo] = {}
        for i, (name, raw) in enumerate(listed):
            if cancelled is not None and i % 1000 == 999 and cancelled():
                return None
            if raw is None:
                out[name] = FileInfo(True, False, 0, 0)
            else:
                out[name] = self.info(base + name, raw, stamps)
        return out
