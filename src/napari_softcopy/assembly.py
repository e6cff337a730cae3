"""The manifest assembled at the finish (`assemble`): a walk of the destination in path order
merged with the hash journal's latest records (`hashes.HashJournal.latest`), so that only the
files the journal holds no current hash of are read back and hashed then."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
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
from .listing import Listing
from .manifest import FORMAT_VERSION, HASH, MANIFEST
from .readback import hash_workers, read_back


@dataclass(frozen=True)
class Assembled:
    """What `assemble` wrote: files and bytes listed, hashes taken from the journal, files
    hashed at the finish (and their bytes), seconds, and whether the files came from the
    verification's listing (else from a walk of the destination)."""

    files: int
    bytes: int
    from_journal: int
    hashed: int
    hashed_bytes: int
    seconds: float
    from_listing: bool = False


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
        records = journal.latest() if journal is not None else iter(())
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
        counts = {"files": 0, "bytes": 0, "journal": 0, "hashed": 0, "hashed_bytes": 0}
        window: list[tuple[str, int, str | Future]] = []

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
                # (as json.dumps writes it, without its cost: once per file of the copy)
                line = f'{{"path": {json_string(rel)}, "size": {size}, "{HASH}": "{digest}"}}'
                lines.append(line.encode())
            _write_all(fd, b"\n".join(lines) + b"\n" if lines else b"")

        record = next(records, None)
        if listing is not None:
            files = listing.files(stop)
        else:
            files = sorted_files(dest, marker, stamps, stop)
        for rel, info in files:
            key = path_key(rel)
            while record is not None and record.key < key:
                record = next(records, None)
            if _reusable(record, key, info, caps):
                counts["journal"] += 1
                window.append((rel, info.size, record.digest))
            else:
                window.append((rel, info.size, pool.submit(read_back, dest, rel)))
            if len(window) >= 256:  # (bounded: a window of files in flight, in order)
                write(window)
                window = []
        write(window)
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
    )
