"""An S3 bucket (AWS, or an S3-compatible server: MinIO, Ceph RGW, SeaweedFS...) as a
`Destination`, through obstore (Rust ``object_store``: its calls release the GIL, multipart
uploads run their parts concurrently, failed requests are retried with backoff).

What is stored, per file
------------------------
One object ``prefix/rel`` with the file's bytes. An object store keeps no mtime of ours and
no extended attributes, so the destination keeps an index,
``prefix/.softcopy/s3-index.json.z``: per object the source's size, mtime in nanoseconds,
stamp (inode and ctime), the BLAKE3 the manifest takes (where the server checks each
upload's CRC64NVME) and the ETag the server gave it. It is what makes the one rule
(`copy_difference`) work here exactly as on a disk, to the nanosecond. An index entry counts
only while the listed object still has that ETag (an object rewritten by anything else is
looked at again with a HEAD), so the index can be stale but never wrong.

An object of at least `META_FROM` bytes also carries these as user metadata
(``x-amz-meta-*``: `META_MTIME`, `META_STAMP`, `META_BLAKE3`, and an xxh3-128 digest,
`META_DIGEST`), which a HEAD reads; a smaller one carries none (it made every small upload
cost the server about 7 % more CPU). The index is written at `flush` (before the marker), at
`close` and every `INDEX_EVERY_S` while copying: after a kill -9, an object published since
is looked at with a HEAD, and copied again if it carries no metadata.
Each write after the first sends only the entries that changed since the last, as a part of
its own (`s3_tree.index_part`: the index's token and a number, read in order after it);
every `s3_tree.INDEX_PARTS` parts the whole index is written again under a new token, which
makes the old parts count no more (then they are deleted).

Publishing
----------
A PUT is atomic: the object appears whole or not at all, so there is no temporary name and
no rename. Bytes are kept in memory up to `s3_objects.SPILL_BYTES`; a larger file is spilled to an
unnamed local temporary file and sent as a multipart upload of `PART_BYTES` parts,
`PART_CONCURRENCY` at a time (memory stays bounded whatever the file size). A file never
published leaves nothing at the destination.

Multipart uploads a killed copy left below the prefix are aborted when a copy starts
(`s3_uploads`). The engine is the only writer below the prefix while it copies (as on a
disk): `stat` and `listdir` answer from the listing made at the start and the objects
published since (`s3_tree.ObjectTree`: the tree, the metadata and the index). A
verification opening the root in the copy's process reads that very tree, without a
listing (`s3_copiers`: why it may).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import importlib.util
import io
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import BinaryIO

import blake3

from . import s3_copiers as copiers
from .base import (
    STATE_DIR,
    Capabilities,
    Destination,
    DestinationChanged,
    FileInfo,
    TempFile,
)
from .s3_checksums import (
    CHECKSUM,
    checks_upload_checksums,
    takes_checksum_header,
)
from .s3_objects import BIG_SLOTS, ObjectInfo, ObjectReader, S3TempFile, etag_of
from .s3_settings import (
    S3Location,
    S3SettingsError,
    describe_error,
    endpoint_of,
    is_transient,
    parse_s3_url,
    store_config,
)
from .s3_stores import make_stores
from .s3_tree import INDEX, INDEX_EVERY_S, META_BLAKE3, META_MTIME, META_STAMP, ObjectTree
from .s3_uploads import abort_left_behind

#: (`INDEX`, `META_MTIME`, ... are `s3_tree`'s, `CHECKSUM` `s3_checksums`', named here too:
#: what is stored per object)
__all__ = [
    "CHECKSUM",
    "INDEX",
    "INDEX_EVERY_S",
    "META_BLAKE3",
    "META_DIGEST",
    "META_FROM",
    "META_MTIME",
    "META_STAMP",
    "S3Destination",
]

META_DIGEST = "softcopy-xxh3-128"
#: Objects of at least this size carry the source's mtime, stamp and hashes as metadata too,
#: beside the index (`publish`). Our metadata made each small PUT cost this server about
#: 7 % more CPU and 5-11 % more time (SeaweedFS on two cores, 20,000 PUTs of 4.6 kB in
#: turns), and a copy of 20,002 small files is 1-6 % faster without it, while it saves,
#: after a kill -9, only the re-upload of an object published since the last index write
#: (`INDEX_EVERY_S`) instead of a HEAD: below a MiB, about the same request
#: (benchmarks/notes.md item 85).
META_FROM = 1 << 20
ROOT_ID = f"{STATE_DIR}/s3-root"
PART_BYTES = 8 * 1024 * 1024
PART_CONCURRENCY = 8
#: Bytes of an object read back held at once (`read`).
READ_CHUNK = 1 << 20
#: Where napari-softcopy's own objects are (in no manifest, not in the index).
_OWN = f"{STATE_DIR}/"


class S3Destination(Destination):
    """A destination below ``s3://bucket/prefix``.

    Parameters
    ----------
    url : str
        ``s3://bucket/prefix``.
    create : bool
        A copy writes there (it records the root's identity, `check`); a verification only
        reads (nothing is written).
    env : mapping, optional
        The environment to take settings from (`s3_settings.store_config`); os.environ.

    Raises
    ------
    S3SettingsError
        The URL or the settings are unusable, or the server refused or could not be
        reached (one line, no secret).
    """

    def __init__(self, url: str, *, create: bool = True, env: Mapping[str, str] | None = None):
        if importlib.util.find_spec("obstore") is None:
            raise S3SettingsError(
                f"{url}: S3 destinations need obstore; pip install 'napari-softcopy[s3]'"
            ) from None

        self.location: S3Location = parse_s3_url(url)
        self.path = self.location.url  # type: ignore[assignment] (for messages: a URL)
        self.endpoint = endpoint_of(env)
        self._settings = store_config(env)
        copier = None if create else copiers.copier_of(self)
        if copier is not None:  # (its stores: making one took 10-80 ms of the finish)
            self._store, self._probe = copier._store, copier._probe
            self.checksum = copier.checksum
        else:
            self._make_stores(checksum=CHECKSUM)
        self.capabilities = Capabilities(
            mtime_precision_ns=1,  # (recorded as metadata, to the nanosecond)
            xattrs=True,  # (the stamp is recorded as metadata)
            atomic_replace=True,  # (a PUT replaces an object whole)
            case_sensitive=True,
            max_name_bytes=255,  # (a key may be 1,024 bytes; a name from a disk is <= 255)
            copy_file_range=False,
            fsync=True,  # (a PUT is durable once answered)
        )
        self._root_id: bytes | None = None
        self._closed = False
        self._big_slots = threading.Semaphore(BIG_SLOTS)  # (`s3_objects.SMALL_BYTES`)
        #: A file `write_file` puts after writing the index (the marker): not worth writing
        #: the whole index again for (a later run reads its metadata with one HEAD).
        self._unindexed: str | None = None
        #: Whether this reader reads the tree of the copy writing to the same root in this
        #: process instead of listing the prefix (`s3_copiers`: why it may).
        self.from_copy = copier is not None
        if copier is not None:
            self._tree = copier._tree
        else:
            self._tree = ObjectTree(self._store, self._probe, self._fail, self._io_error)
            self._tree.owner = create
            self._tree.list_all()
        self._lock = self._tree.lock
        if create:  # (what the server does with checksums: `s3_checksums`)
            if not takes_checksum_header(self._probe, self.endpoint, self._fail):
                self._make_stores(checksum=None)
            if checks_upload_checksums(
                self.checksum, self.location, self.endpoint, self._settings[0], env
            ):
                self.capabilities = dataclasses.replace(
                    self.capabilities, verified_upload_digest=True
                )
            self._root_id = self._own_root()
            copiers.register(self)
            # Only this copy writes below the prefix: what a killed one left is aborted.
            abort_left_behind(self.location, str(self.path), self.endpoint, self._settings[0], env)

    def _make_stores(self, checksum: str | None) -> None:
        self._store, self._probe = make_stores(self.location, self._settings, checksum)
        self.checksum = checksum
        if hasattr(self, "_tree"):
            self._tree.store = self._store

    def acknowledged_digest(self, rel: str, info: FileInfo) -> str | None:
        """The BLAKE3 (hex) of the bytes of ``rel``'s object, hashed as a copy's PUT sent
        them and acknowledged by a server that checked their CRC64NVME, where that object is
        still the version ``info`` lists (its size, source mtime and stamp). It is kept on
        the object the PUT made (`ObjectInfo.digest`), in its metadata from `META_FROM`
        bytes (`META_BLAKE3`), and in the index, whose entry counts only while the object
        listed has its ETag and size (`s3_tree`): so it names that object's bytes, for this
        run's uploads and an earlier run's. An object published again or deleted since is
        another entry, with its own digest or none. None for an object put by another tool,
        or by a copy whose server checked no checksum."""
        obj = self._tree.get(rel)
        if (
            obj is None
            or obj.digest is None
            or obj.size != info.size
            or obj.mtime_ns != info.mtime_ns
            or obj.stamp != info.stamp
        ):
            return None
        return obj.digest.hex()

    # -- the root ------------------------------------------------------------------------
    def _fail(self, exc: BaseException) -> Exception:
        """Bad settings (no bucket, refused keys) are the user's to fix: `S3SettingsError`.
        A server that does not answer may come back: OSError EIO, which the engine waits
        for (a verification opening the destination again meanwhile, say)."""
        message = describe_error(exc, self.location, self.endpoint)
        if is_transient(message):
            return OSError(errno.EIO, message)
        return S3SettingsError(message)

    def _io_error(self, exc: BaseException) -> OSError:
        """An obstore error as the OSError the engine retries with backoff (EIO: "cannot
        write to the destination (...); retrying in N s"), in one line without a secret.
        obstore retries each request itself first (`retry_config`), briefly, so that a
        server away for longer shows as a waiting copy rather than a hung one."""
        if isinstance(exc, OSError):
            return exc
        return OSError(errno.EIO, describe_error(exc, self.location, self.endpoint))

    def _own_root(self) -> bytes:
        """The root's identity: a random id in `ROOT_ID`, made by the first copy there."""
        import obstore

        try:
            if self._tree.raw(ROOT_ID) is not None:
                return bytes(obstore.get(self._probe, ROOT_ID).bytes())
            root_id = secrets.token_hex(16).encode()
            obstore.put(self._probe, ROOT_ID, root_id)
        except Exception as exc:
            raise self._fail(exc) from None
        return root_id

    def close(self) -> None:
        """Write the index if it changed (a later run then needs no HEAD per object): the
        copy's own; a reader (a verification, the chunk map) writes nothing."""
        if not self._closed:
            self._closed = True
            copiers.unregister(self)
            if self._tree.owner and not self.from_copy:
                with contextlib.suppress(OSError, Exception):
                    self._tree.write_index()

    def check(self) -> None:
        """Raise `DestinationChanged` when the root's identity object is gone or another (the
        prefix was emptied or the bucket re-created behind the copy's back)."""
        import obstore

        if self._root_id is None:
            return
        try:
            now = bytes(obstore.get(self._probe, ROOT_ID).bytes())
        except FileNotFoundError:
            now = None
        except Exception:
            # A server that does not answer has not changed: the copies fail meanwhile, and
            # the engine waits for it with a visible "retrying in N s".
            return
        if now != self._root_id:
            raise DestinationChanged(
                errno.ESTALE,
                f"destination {self.path} is no longer the one the copy started in (its "
                "objects were removed or the bucket re-created); run the same command again",
            )

    def free_space(self) -> int | None:
        return None  # (a bucket has no size to fill)

    def flush(self) -> None:
        """Every PUT answered is durable; the index is written so a later run trusts it."""
        self._tree.write_index()

    def save_records(self) -> None:
        """Nothing to write: a verification in this process reads the copy's tree itself
        (`s3_copiers`), and the final one runs in this process (`walk_helpers_help`). A
        reader in another process lists the prefix and reads the index the copy writes
        every `INDEX_EVERY_S` and at `flush`; an object published since costs it a HEAD.
        (Writing 50,000 entries here took 0.4 s, before each verification.)"""

    def walk_helpers_help(self) -> bool:
        """False: a helper process would list the whole prefix again (2-5 s at 50,000
        objects), where the walk in this process reads the copy's tree in memory."""
        return False

    def fsync_dir(self, rel_dir: str = "") -> None:
        """Nothing to do: an object store has no folder entries."""

    def suggested_workers(self) -> int:
        """Uploads in flight: each waits on the network, and obstore releases the GIL. 96:
        the server's CPU per small upload falls with the uploads in flight (SeaweedFS, 3,000
        PUTs of 700 B in turns: 0.78 ms each with 8, 0.68 with 32, 0.58-0.59 with 128 or 256;
        s5cmd sends 256 at once), and on two cores its CPU is the copy's time. It falls no
        further from 96: 10,000 PUTs of 4.6 kB, 5 rounds in turns, cost the server 4.4-5.3 s
        with 96, 128 and 256 alike (item 56). Not 128: the 50,002-file copy then peaked at
        146-151 MiB of RSS (96: 130 MiB; the goal is 150), mostly glibc's arenas
        (``MALLOC_ARENA_MAX=2``: 127 MiB). A file held beyond `s3_objects.SMALL_BYTES` takes
        one of `BIG_SLOTS` (benchmarks/notes.md item 52)."""
        return 96

    # -- reading -------------------------------------------------------------------------
    def stat(self, rel: str, *, stamp: bool = False) -> FileInfo | None:
        return self._tree.stat(rel, stamp)

    def source_stamp(self, rel: str) -> bytes | None:
        info = self.stat(rel, stamp=True)
        return info.stamp if info is not None else None

    def listdir(
        self,
        rel_dir: str,
        cancelled: Callable[[], bool] | None = None,
        *,
        keep: Callable[[str], bool] | None = None,
        stamps: bool = False,
    ) -> dict[str, FileInfo] | None:
        """The folder's entries from the tree in memory; `STATE_DIR` is not part of the copy
        and is not listed."""
        return self._tree.listdir(rel_dir, cancelled, keep, stamps)

    def read(self, rel: str) -> BinaryIO:
        import obstore

        try:
            result = obstore.get(self._store, rel)
        except Exception as exc:
            raise self._io_error(exc) from None
        return io.BufferedReader(ObjectReader(result, self._io_error, READ_CHUNK), READ_CHUNK)

    # -- writing -------------------------------------------------------------------------
    def makedirs(self, rel_dir: str) -> None:
        """Nothing to make: a folder exists in an object store while something is below it."""

    def create_temp(self, rel: str) -> S3TempFile:
        from .names import UnholdableName, name_problem, unholdable_message

        # (as on a disk, a name is refused before anything is uploaded, never retried)
        reason = name_problem(rel.rpartition("/")[2], self.capabilities)
        if reason is not None:
            raise UnholdableName(errno.ENAMETOOLONG, unholdable_message(rel, reason, self.path))
        if rel.startswith(_OWN):
            # (ours: in no manifest, and never waiting for a slot a copier holds)
            return S3TempFile(rel)
        b3 = blake3.blake3() if self.capabilities.verified_upload_digest else None
        return S3TempFile(rel, b3=b3, slots=self._big_slots)

    def publish(
        self,
        temp: TempFile,
        *,
        mtime_ns: int | None = None,
        atime_ns: int | None = None,
        stamp: bytes | None = None,
        fsync: bool = False,
    ) -> None:
        """PUT the bytes; the source's mtime, stamp and digest go into the index, and as the
        object's metadata too where it is at least `META_FROM` bytes (or in no index)."""
        import obstore

        assert isinstance(temp, S3TempFile)
        if mtime_ns is None:
            mtime_ns = time.time_ns()
        digest = None
        if temp.b3 is not None:  # (where the server checks the upload: `acknowledged_digest`)
            digest = temp.b3.digest()
        # (the index holds no object of ours under STATE_DIR)
        indexed = temp.rel != self._unindexed and not temp.rel.startswith(_OWN)
        attributes = {"Content-Type": "application/octet-stream"}
        if temp.size >= META_FROM or not indexed:
            attributes[META_MTIME] = str(mtime_ns)
            attributes[META_DIGEST] = temp.hexdigest()
            if stamp is not None:
                attributes[META_STAMP] = stamp.decode()
            if digest is not None:
                attributes[META_BLAKE3] = digest.hex()
        try:
            if temp.spill is not None:
                temp.spill.seek(0)
                result = obstore.put(
                    self._store,
                    temp.rel,
                    temp.spill,
                    attributes=attributes,
                    chunk_size=PART_BYTES,
                    max_concurrency=PART_CONCURRENCY,
                )
            else:
                result = obstore.put(
                    self._store,
                    temp.rel,
                    temp.buffer,  # (a buffer: no copy of it)
                    attributes=attributes,
                    use_multipart=False,
                )
        except Exception as exc:
            raise self._io_error(exc) from None
        temp.published = True
        # (made before the lock is taken: 96 uploads in flight finish into it)
        # (answered: the server checked the CRC64NVME of these very bytes; their hash is kept
        # on the object in the copy's tree and in the index, for the manifest)
        obj = ObjectInfo(temp.size, etag_of(result), mtime_ns, stamp, digest=digest)
        with self._lock:
            self._tree.add(temp.rel, obj)
            if indexed:
                self._tree.mark(temp.rel)
            due = self._tree.index_due()
        if due:
            self._tree.write_index()

    def release(self, temp: TempFile, *, uncache: bool = False) -> None:
        """Drop the bytes (nothing was sent unless published)."""
        assert isinstance(temp, S3TempFile)
        temp.buffer = b""
        temp.release_slot()
        if temp.spill is not None:
            temp.spill.close()
            temp.spill = None

    def unlink(self, rel: str) -> bool:
        import obstore

        with self._lock:
            known = self._tree.raw(rel) is not None
        if not known:
            return False
        try:
            obstore.delete(self._store, rel)
        except Exception as exc:
            raise self._io_error(exc) from None
        with self._lock:
            self._tree.remove(rel)
            if not rel.startswith(_OWN):  # (the index holds none of ours)
                self._tree.mark(rel)
        return True

    def write_file(self, rel: str, data: bytes, *, mtime_ns: int | None = None) -> None:
        """PUT small ``data`` as ``rel`` (the marker: the index is written first, so a
        reader that sees the marker finds the index of the copy complete). ``rel`` itself
        does not make the index due again: writing every entry once more after the marker
        (0.1-0.2 s at 50,000 objects) would save a later run one HEAD."""
        self._tree.write_index()
        self._unindexed = rel
        try:
            super().write_file(rel, data, mtime_ns=mtime_ns)
        finally:
            self._unindexed = None
