"""The manifest assembled at the finish (`assemble`): a walk of the destination in path order,
each file's hash taken from the hash journal's latest record of it (this run's kept in
memory, `hashes.HashJournal.fresh`, else the segments' `hashes.HashJournal.latest`), so that
only the files the journal holds no current hash of are read back and hashed then.

A folder proven during the copy has its lines made then (`ManifestLines`, by the same rule,
`_reusable`): the finish copies them whole after the files it lists, in the order the
folders were proven (`listing.ProvenLines`), a few long copies for a day's 100,000 folders.
A file this run's records in memory miss takes, before the segments, the hash the destination
kept of its upload where it still holds the version listed (`Destination.acknowledged_digest`:
S3 on a server that checks each upload's checksum, where the copy keeps no journal at all).
Why they still stand at the finish: they are the rows its proof vouches for (`listing`'s
docstring says why those stand), each with the hash of that very version."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

from .destinations import (
    STATE_DIR,
    Capabilities,
    Destination,
    FileInfo,
    copy_difference,
    same_version,
)
from .hashes import HashJournal, _write_all
from .journal_records import JournalRecord, json_string, path_key
from .layout import is_own_temp_name
from .listing import Listing, Row
from .manifest import FORMAT_VERSION, HASH, MANIFEST
from .platform import degrade
from .readback import hash_workers, read_back


@dataclass(frozen=True)
class Assembled:
    """What `assemble` wrote: files and bytes listed, hashes taken from the journal, files
    hashed at the finish (and their bytes), seconds, whether the files came from the
    verification's listing (else from a walk of the destination), the files whose lines
    were made when their folder was proven (`ManifestLines`; of those from the journal),
    and those whose hash the destination kept from their upload
    (`Destination.acknowledged_digest`; of those from the journal too)."""

    files: int
    bytes: int
    from_journal: int
    hashed: int
    hashed_bytes: int
    seconds: float
    from_listing: bool = False
    from_proofs: int = 0
    from_uploads: int = 0


def sorted_files(
    dest: Destination, marker: str | None, stamps: bool, stop: threading.Event | None = None
) -> Iterator[tuple[str, FileInfo]]:
    """Every regular file of the copy at ``dest`` (`manifest.destination_files`' selection),
    each folder listed sorted by name and descended where its name comes: the order of
    `path_key`. Only the folders on the way down are held."""

    def walk(rel_dir: str) -> Iterator[tuple[str, FileInfo]]:
        if stop is not None and stop.is_set():
            return
        entries = dest.listdir(rel_dir, stamps=stamps) or {}
        for name in sorted(entries):
            info = entries[name]
            if not rel_dir and name in (STATE_DIR, marker):
                continue
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if info.is_dir:
                yield from walk(rel)
            elif info.is_file and not is_own_temp_name(name):
                yield rel, info

    return walk("")


class _CopiedVersion(NamedTuple):
    """The source version a journal record names, as the one rule reads a source file."""

    st_size: int
    st_mtime_ns: int
    st_ino: int
    st_ctime_ns: int


#: Files of a listing whose records are read from the journal's segments at the end, all at
#: once (`HashJournal.find`), at most: about 200 bytes each (path, `FileInfo`), so 6.5 MiB.
#: A day's folders proven during the copy leave none; a bulk copy that outran the prover left
#: 4,101 of 1,000,000 (benchmarks/notes.md item 80). Past it, the merged stream of every
#: record (`HashJournal.latest`), which costs the same for a thousand files as for all.
DEFER_MAX = 32_768


def _reusable(record: JournalRecord | None, key: str, info: FileInfo, caps: Capabilities) -> bool:
    """Whether ``record`` (its path's latest) is the hash of the file ``info`` as it is now:
    ``info`` is a copy of the source version the record names, by the one rule
    (`destinations.copy_difference`: size, mtime or the destination's record of the source,
    and the stamp recorded on the file, where the listing read one)."""
    if record is None or record.key != key or not record.digest:
        return False
    # The stamp recorded on the file, as listed: where the destination keeps stamps, a file
    # listed without one has none (a record of a stamped version is not its hash).
    listed = info.stamp if info.stamp is not None else (b"" if caps.xattrs else None)
    if listed is not None and listed.decode("ascii", "replace") != record.stamp:
        return False  # (checked here: the rule needs the stamp's parts, parsed below)
    if listed and same_version(info, record.size, record.mtime_ns, caps):
        return True  # (nearly every file: the very stamp of the version recorded, above)
    ino, _, ctime = record.stamp.partition(":")
    try:
        version = _CopiedVersion(record.size, record.mtime_ns, int(ino or -1), int(ctime or -1))
    except ValueError:
        return False
    return copy_difference(version, info, caps) is None


def _line(rel: str, size: int, digest: str) -> str:
    """A manifest line (as json.dumps writes it, without its cost: once per file)."""
    return f'{{"path": {json_string(rel)}, "size": {size}, "{HASH}": "{digest}"}}'


class ManifestLines:
    """Makes the manifest lines of a folder being proven (`proofs.ProofSpool.block`) where
    every file has a hash by the rule: this run's record of it (`hashes.HashJournal.fresh`,
    `_reusable`), else the hash the destination kept of the upload of the version listed
    (`Destination.acknowledged_digest`). `used` holds the records taken, for the journal to
    forget once the proof is kept (`hashes.HashJournal.forget_fresh`)."""

    def __init__(self, journal: HashJournal | None, dest: Destination) -> None:
        self.journal = journal
        self.dest = dest
        self.used: list[JournalRecord] = []

    def __call__(self, folder: str, rows: list[Row]) -> bytes | None:
        self.used = []
        fresh = self.journal.fresh() if self.journal is not None else {}
        caps, acknowledged, used = self.dest.capabilities, self.dest.acknowledged_digest, []
        lines = []
        for name, size, mtime_ns, stamp in rows:
            rel = f"{folder}/{name}"
            record = fresh.get(rel)
            info = FileInfo(False, True, size, mtime_ns, stamp)
            if record is not None and _reusable(record, record.key, info, caps):
                used.append(record)
                digest = record.digest
            else:
                digest = acknowledged(rel, info)
                if digest is None:
                    return None  # (the finish takes or makes the hashes of this folder)
            lines.append(_line(rel, size, digest))
        if not lines:
            return None
        self.used = used
        return ("\n".join(lines) + "\n").encode()


def assemble(
    dest: Destination,
    *,
    source: str,
    marker: str | None,
    journal: HashJournal | None,
    stop: threading.Event | None = None,
    listing: Listing | None = None,
) -> Assembled | None:
    """Write the manifest of the copy at ``dest`` (`manifest.MANIFEST`) from a walk of the
    destination and the ``journal``: a file whose latest record matches its size, mtime and
    stamp takes that hash; every other file is read back and hashed now. Streamed in walk
    order, published atomically and durably. None when ``stop`` was set (nothing written).

    With ``listing`` (the final verification's, `verify.VerifyReport.listing`: every file of
    the copy, as that walk listed it), the destination is not walked again
    (`listing`'s docstring says why that listing stands for the copy now).

    Raises
    ------
    OSError
        A file of the copy could not be read back (it names the path), or the manifest
        could not be written.
    """
    t0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        if journal is not None:
            stack.enter_context(journal.paused())
        fresh = journal.fresh() if journal is not None else {}
        # (read only where a file has no record in ``fresh``: a run that copied all itself
        # reads none of it)
        records = _lazily(journal.latest) if journal is not None else iter(())
        caps = dest.capabilities
        stamps = caps.xattrs
        temp = dest.create_temp(MANIFEST)
        stack.callback(dest.release, temp)
        fd = temp.fileno()
        spool = None
        if fd is None:
            # An object store's temporary file takes bytes in order only: the manifest is
            # made in a local temporary file, then sent whole (the header is written last).
            spool = stack.enter_context(tempfile.TemporaryFile(prefix="softcopy-manifest-"))
            fd = spool.fileno()
        # The header first, with counts known only at the end: its place is reserved (JSON
        # allows the blanks after it) and filled in last.
        header = {"napari_softcopy_manifest": FORMAT_VERSION, "hash": HASH, "files": 10**18}
        header |= {"bytes": 10**18, "source": source, "marker": marker, "created": time.time()}
        width = len(json.dumps(header)) + 16
        _write_all(fd, b" " * width + b"\n")
        pool = stack.enter_context(ThreadPoolExecutor(hash_workers(dest), "softcopy-hash"))
        counts = dict.fromkeys(
            ("files", "bytes", "journal", "hashed", "hashed_bytes", "proofs", "uploads"), 0
        )
        acknowledged = dest.acknowledged_digest
        window: list[tuple[str, int, str | Future]] = []
        out: list[bytes] = []  # (what is not written yet, and its bytes)
        out_bytes = [0]

        def write(window: list[tuple[str, int, str | Future]]) -> None:
            lines = []
            for rel, size, digest in window:
                if isinstance(digest, Future):
                    try:
                        size, digest = digest.result()
                    except OSError as exc:
                        raise OSError(
                            exc.errno, f"cannot read back {dest.path / rel} for the manifest: {exc}"
                        ) from None
                    counts["hashed"] += 1
                    counts["hashed_bytes"] += size
                counts["files"] += 1
                counts["bytes"] += size
                lines.append(_line(rel, size, digest).encode())
            if lines:
                put(b"\n".join(lines) + b"\n")

        def put(data: bytes) -> None:
            # (gathered and written a megabyte at a time: a day's manifest is 100,000 blocks
            # and more, and a write each cost as much as the rest of a block's copy)
            out.append(data)
            out_bytes[0] += len(data)
            if out_bytes[0] >= 1 << 20:
                flush()

        def flush() -> None:
            _write_all(fd, b"".join(out))
            out.clear()
            out_bytes[0] = 0

        def push(rel: str, size: int, digest: str | Future) -> None:
            nonlocal window
            window.append((rel, size, digest))
            if len(window) >= 256:  # (bounded: a window of files in flight, in order)
                write(window)
                window = []

        def take(rel: str, info: FileInfo, found: JournalRecord | None, key: str) -> None:
            if _reusable(found, key, info, caps):
                counts["journal"] += 1
                push(rel, info.size, found.digest)
            else:
                push(rel, info.size, pool.submit(read_back, dest, rel))

        record = None

        def from_segments(rel: str, info: FileInfo) -> None:
            nonlocal record  # (the merged stream's, in path order as the files come)
            key = path_key(rel)
            if record is None or record.key < key:
                record = next(records, None)
                while record is not None and record.key < key:
                    record = next(records, None)
            take(rel, info, record, key)

        # The files of a verification's listing whose hash is neither in memory nor kept
        # from their upload: looked up all at once after the others (`HashJournal.find`), up
        # to `DEFER_MAX`; past it, in the segments' merged stream as they come.
        deferred: list | None = [] if journal is not None and listing is not None else None
        given = listing.given() if listing is not None else []  # (`Listing.given`: once)
        if listing is not None:
            files = listing.files(stop, given)
        else:
            files = sorted_files(dest, marker, stamps, stop)
        for rel, info in files:
            found = fresh.get(rel)
            if found is not None:
                take(rel, info, found, found.key)
                continue
            digest = acknowledged(rel, info)
            if digest is not None:  # (the upload's own hash: no segment read for it)
                counts["journal"] += 1
                counts["uploads"] += 1
                push(rel, info.size, digest)
            elif deferred is None:
                from_segments(rel, info)
            else:
                deferred.append((rel, info))
                if len(deferred) > DEFER_MAX:  # (in path order still: the stream takes them)
                    degrade(
                        "looking up the hashes memory lacks in the journal at once",
                        f"more than {DEFER_MAX} files' hashes are not in memory (a resumed "
                        "copy, or one whose proofs lagged); the finish reads every record of "
                        "the journal in path order instead",
                    )
                    for item in deferred:
                        from_segments(*item)
                    deferred = None
        write(window)
        window = []
        flush()
        proven = listing.proven if listing is not None else None
        if proven is not None and not (stop is not None and stop.is_set()):
            given = set(given)  # (their rows were listed above)
            refused = None  # why the kernel would not copy them (then said once)
            with open(proven.lines_path, "rb") as lines:
                for offset, length in proven.ranges(given):
                    kernel = refused is None  # (once refused, not asked again)
                    why = _copy_range(lines.fileno(), offset, length, fd, proven.lines_path, kernel)
                    refused = refused or why
            if refused is not None:
                degrade(
                    "the kernel's copy of the proven folders' manifest lines",
                    f"it refused ({refused}) to copy from {proven.lines_path} to the manifest "
                    f"at {dest.path} (two file systems, or one that cannot); they are read and "
                    "written instead, about 0.2 s more a million files at the finish",
                )
            files, nbytes = proven.counts(given)
            counts["files"] += files
            counts["bytes"] += nbytes
            counts["journal"] += files
            counts["proofs"] += files
        if deferred and journal is not None and not (stop is not None and stop.is_set()):
            got = journal.find({rel for rel, _ in deferred})
            for rel, info in deferred:
                take(rel, info, got.get(rel), path_key(rel))
            write(window)
            flush()
        if stop is not None and stop.is_set():
            return None
        header |= {"files": counts["files"], "bytes": counts["bytes"], "created": time.time()}
        os.pwrite(fd, json.dumps(header).ljust(width).encode(), 0)
        if spool is not None:
            spool.seek(0)
            while block := spool.read(1 << 20):
                temp.write(block)
        dest.publish(temp, fsync=True)
    dest.fsync_dir(STATE_DIR)
    return Assembled(
        counts["files"],
        counts["bytes"],
        counts["journal"],
        counts["hashed"],
        counts["hashed_bytes"],
        round(time.monotonic() - t0, 3),
        listing is not None,
        counts["proofs"],
        counts["uploads"],
    )


def _copy_range(
    src: int, offset: int, length: int, dst: int, where: str, kernel: bool = True
) -> str | None:
    """Append ``length`` bytes at ``offset`` of ``src`` to ``dst`` (at its position): in the
    kernel where it can (`os.copy_file_range`: the proofs' lines of a day, 110 MB, in 0.1 s
    against 0.3 s through Python's buffers), else (or where ``kernel`` is False) read and
    written a megabyte at a time. Returns why the kernel refused (None: it did not)."""
    end = offset + length
    refused = None
    while offset < end:
        n = 0
        if kernel:
            try:
                n = os.copy_file_range(src, dst, end - offset, offset)
            except OSError as exc:  # (EXDEV, EINVAL, EOPNOTSUPP...: the plain way from here on)
                kernel, refused = False, exc.strerror or str(exc)
        if n <= 0:
            data = os.pread(src, min(end - offset, 1 << 20), offset)
            if not data:
                raise OSError(f"the proofs' lines file {where} was cut short")
            _write_all(dst, data)
            n = len(data)
        offset += n
    return refused


def _lazily(make: Callable[[], Iterator[JournalRecord]]) -> Iterator[JournalRecord]:
    """``make()``'s records, made only at the first one asked for."""
    yield from make()
