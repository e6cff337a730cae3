"""The manifest of a verified copy: every file's path, size and BLAKE3 hash, kept at the
destination so that the copy can be proven intact later without its source.

The file is ``.softcopy/manifest.jsonl`` below the destination root (`STATE_DIR`: no Zarr
key starts with a dot, so readers of the archive never see it). JSON Lines, UTF-8: a header
object, then one object per file, each path once, in no order a reader may rely on (the
files the finish listed in walk order, each folder sorted by name, then those of the folders
proven during the copy as they were proven: `assembly`)::

    {"napari_softcopy_manifest": 1, "hash": "blake3", "files": 2, "bytes": 7, ...}
    {"path": "0/c/0/0", "size": 4, "blake3": "<64 hex digits>"}
    {"path": "zarr.json", "size": 3, "blake3": "<64 hex digits>"}

The header also names the source, the marker (which is not listed: it is written after the
manifest) and when the manifest was made. It is written atomically and durably (a temporary
name, fsync, rename), after the final verification and the flush, just before the marker: a
marker at the destination always has the manifest of the same copy beside it.

Why BLAKE3: on the light-sheet benchmark archive (4,098 files, 291 MiB, cached) one thread
hashes at about 1.7 GiB/s with ``blake3`` and 2.9 GiB/s with xxh3-128; the read from the
destination's disk or network dominates either. BLAKE3 is a cryptographic hash (a copy
checked months later is checked against something no accident or edit can match), and
``b3sum`` checks it without napari-softcopy.

When hashed: during the copy, by `hashes.HashJournal` (each published file read back from
the destination at idle priority, `read_back`); the finish assembles the manifest from those
hashes and hashes only the files they do not cover (`assembly.assemble`; docs/move.md). An
S3 copy whose server checks each upload's CRC64NVME keeps no journal: the BLAKE3 made as an
upload's bytes are sent is kept by the destination (`Destination.acknowledged_digest`: its
index, and the metadata of an object of a MiB or more; docs/s3.md).
`build_manifest` reads every file back: the manifest of a copy made without a journal.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .destinations import STATE_DIR, Destination
from .layout import is_own_temp_name
from .readback import _hash_all, hash_workers, read_back, read_fd

if TYPE_CHECKING:
    from .assembly import Assembled
    from .hashes import HashJournal
    from .listing import Listing

__all__ = [
    "HASH",
    "MANIFEST",
    "Manifest",
    "ManifestCheck",
    "ManifestEntry",
    "ManifestError",
    "build_manifest",
    "check_manifest",
    "destination_files",
    "hash_workers",
    "manifest_for_copy",
    "read_back",
    "read_fd",
    "read_manifest",
    "verify_against_manifest",
    "write_manifest",
]

log = logging.getLogger(__name__)

#: The manifest's path below the destination root.
MANIFEST = f"{STATE_DIR}/manifest.jsonl"
#: The content hash it records (the key of each entry's hex digest).
HASH = "blake3"
FORMAT_VERSION = 1
MAX_LISTED = 1000  # paths listed per kind of problem; counts stay exact beyond it


class ManifestError(ValueError):
    """The manifest is missing, unreadable or not one this version understands."""


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One file of the copy: its path below the root (``/``-separated), size and hash."""

    path: str
    size: int
    digest: str


@dataclass
class Manifest:
    """Every file of a verified copy (`entries`, by path) and where it came from."""

    entries: dict[str, ManifestEntry]
    source: str = ""
    marker: str | None = None
    created: float = 0.0

    @property
    def bytes(self) -> int:
        """Bytes of all files listed."""
        return sum(e.size for e in self.entries.values())

    def to_bytes(self) -> bytes:
        """The manifest file's content (header, then entries sorted by path)."""
        header = {
            "napari_softcopy_manifest": FORMAT_VERSION,
            "hash": HASH,
            "files": len(self.entries),
            "bytes": self.bytes,
            "source": self.source,
            "marker": self.marker,
            "created": self.created,
        }
        lines = [json.dumps(header)]
        for path in sorted(self.entries):
            e = self.entries[path]
            lines.append(json.dumps({"path": e.path, "size": e.size, HASH: e.digest}))
        return ("\n".join(lines) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "manifest") -> Manifest:
        """Parse a manifest file's content; `ManifestError` names what is wrong."""
        try:
            lines = data.decode().splitlines()
            header = json.loads(lines[0]) if lines else None
            if not isinstance(header, dict) or "napari_softcopy_manifest" not in header:
                raise ManifestError(f"{where} is not a napari-softcopy manifest")
            if header["napari_softcopy_manifest"] != FORMAT_VERSION or header.get("hash") != HASH:
                raise ManifestError(
                    f"{where} is of another format ({header['napari_softcopy_manifest']}, "
                    f"{header.get('hash')}); check it with the napari-softcopy that wrote it"
                )
            entries = {}
            for line in lines[1:]:
                item = json.loads(line)
                entries[item["path"]] = ManifestEntry(item["path"], int(item["size"]), item[HASH])
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ManifestError(
                f"{where} is damaged ({exc}); it cannot vouch for the copy"
            ) from None
        if len(entries) != header.get("files"):
            raise ManifestError(
                f"{where} lists {len(entries)} files where its header says {header.get('files')}"
                "; it is damaged and cannot vouch for the copy"
            )
        return cls(
            entries, header.get("source", ""), header.get("marker"), header.get("created", 0)
        )


def destination_files(
    dest: Destination, marker: str | None, stop: threading.Event | None = None
) -> Iterator[tuple[str, int]]:
    """``(path, size)`` of every regular file of the copy at ``dest``: everything but the
    private folder (`STATE_DIR`), the ``marker`` at the root and napari-softcopy's own
    temporary files. Links are not followed (the copy makes none)."""
    folders = [""]
    while folders:
        if stop is not None and stop.is_set():
            return
        rel_dir = folders.pop()
        entries = dest.listdir(rel_dir)
        for name, info in sorted((entries or {}).items()):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if not rel_dir and name in (STATE_DIR, marker):
                continue
            if info.is_dir:
                folders.append(rel)
            elif info.is_file and not is_own_temp_name(name):
                yield rel, info.size


def build_manifest(
    dest: Destination,
    *,
    source: str,
    marker: str | None,
    stop: threading.Event | None = None,
) -> Manifest | None:
    """Read every file of the copy back from ``dest`` and hash it; None when ``stop`` was set.

    Call it after the verification and the flush, before the marker.

    Raises
    ------
    OSError
        A file of the copy could not be read back (it names the path).
    """
    entries: dict[str, ManifestEntry] = {}
    paths = [rel for rel, _size in destination_files(dest, marker, stop)]
    for result in _hash_all(dest, paths, hash_workers(dest), stop):
        if len(result) == 2:
            rel, exc = result
            raise OSError(exc.errno, f"cannot read back {dest.path / rel} for the manifest: {exc}")
        rel, size, digest = result
        entries[rel] = ManifestEntry(rel, size, digest)
    if stop is not None and stop.is_set():
        return None
    return Manifest(entries, source, marker, time.time())


def write_manifest(dest: Destination, manifest: Manifest) -> None:
    """Publish ``manifest`` at ``dest`` (`MANIFEST`) atomically and durably."""
    dest.write_file(MANIFEST, manifest.to_bytes())


def read_manifest(dest: Destination) -> Manifest:
    """The manifest at ``dest``.

    Raises
    ------
    ManifestError
        There is none, or it cannot be read or parsed (the message names the path and why).
    """
    where = str(dest.path / MANIFEST)
    try:
        with dest.read(MANIFEST) as f:
            data = f.read()
    except FileNotFoundError:
        raise ManifestError(
            f"{dest.path} has no manifest ({MANIFEST}): it was not copied by napari-softcopy "
            "0.2 or later, or not to the end; compare it with its source instead "
            f"(napari-softcopy verify SOURCE {dest.path})"
        ) from None
    except OSError as exc:
        raise ManifestError(f"cannot read {where}: {exc.strerror or exc}") from None
    return Manifest.from_bytes(data, where)


@dataclass
class ManifestCheck:
    """What `check_manifest` found: files listed but missing, present but not listed (extra),
    of another size, or of other content; each list is cut at `MAX_LISTED`, counts are exact."""

    destination: str
    marker: str | None = None
    marker_present: bool = True
    files_checked: int = 0
    bytes_checked: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    size: list[str] = field(default_factory=list)
    content: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("missing", "extra", "size", "content", "unreadable"), 0
        )
    )

    def add(self, kind: str, item: object) -> None:
        self.counts[kind] += 1
        listed = getattr(self, kind)
        if len(listed) < MAX_LISTED:
            listed.append(item)

    @property
    def ok(self) -> bool:
        """True when the destination holds exactly what the manifest lists, and its marker
        (a manifest without its marker belongs to a copy never verified complete)."""
        return self.marker_present and not any(self.counts.values())

    def lines(self) -> Iterator[str]:
        """One line per listed problem."""
        for kind, why in (
            ("missing", "missing"),
            ("extra", "not in the manifest"),
            ("size", "size differs from the manifest"),
            ("content", "content differs from the manifest (BLAKE3)"),
        ):
            for rel in getattr(self, kind):
                yield f"{why}: {rel}"
        for rel, why in self.unreadable:
            yield f"unreadable: {rel}: {why}"
        if not self.marker_present:
            yield f"no marker {self.marker!r}: the copy was never verified complete"

    def to_dict(self) -> dict:
        """The report as JSON-ready data (``counts`` by kind, ``listed`` paths by kind)."""
        return {
            "destination": self.destination,
            "ok": self.ok,
            "marker": self.marker_present,
            "files_checked": self.files_checked,
            "bytes_checked": self.bytes_checked,
            "counts": dict(self.counts),
            "listed": {k: getattr(self, k) for k in self.counts},
        }

    def summary(self) -> str:
        """The one-line verdict."""
        c = self.counts
        verdict = "intact" if self.ok else "DIFFERENT"
        if not self.marker_present:
            verdict = "NOT VERIFIED"
        return (
            f"{verdict}: {self.destination}: {self.files_checked} files, "
            f"{self.bytes_checked / 2**20:.1f} MiB checked against its manifest (BLAKE3); "
            f"{c['missing']} missing, {c['extra']} extra, {c['size']} of another size, "
            f"{c['content']} of other content, {c['unreadable']} unreadable"
        )


def check_manifest(
    dest: Destination,
    manifest: Manifest | None = None,
    *,
    stop: threading.Event | None = None,
) -> ManifestCheck:
    """Check the copy at ``dest`` against its manifest (read from ``dest`` when None): every
    listed file there, of its size and content (read back with the page cache dropped), and
    no other file.

    Raises
    ------
    ManifestError
        No usable manifest.
    """
    if manifest is None:
        manifest = read_manifest(dest)
    report = ManifestCheck(str(dest.path), manifest.marker)
    if manifest.marker:
        report.marker_present = dest.stat(manifest.marker) is not None
    present = dict(destination_files(dest, manifest.marker, stop))
    to_read = []
    for rel, entry in manifest.entries.items():
        size = present.pop(rel, None)
        if size is None:
            report.add("missing", rel)
        elif size != entry.size:
            report.add("size", rel)
        else:
            to_read.append(rel)
    for rel in sorted(present):
        report.add("extra", rel)
    for result in _hash_all(dest, to_read, hash_workers(dest), stop):
        if len(result) == 2:
            rel, exc = result
            report.add("unreadable", (rel, exc.strerror or str(exc)))
            continue
        rel, size, digest = result
        entry = manifest.entries[rel]
        report.files_checked += 1
        report.bytes_checked += size
        if size != entry.size:  # (changed between the listing and the read)
            report.add("size", rel)
        elif digest != entry.digest:
            report.add("content", rel)
    return report


def manifest_for_copy(
    dest: Destination,
    *,
    source: str,
    marker: str | None,
    stop: threading.Event | None = None,
    journal: HashJournal | None = None,
    listing: Listing | None = None,
) -> Assembled | None:
    """Write the manifest of a verified copy (the engine's step after the flush, before the
    marker), taking the hashes the copy recorded in ``journal`` and hashing only the files it
    holds no hash of (`assembly.assemble`), from the final verification's ``listing`` where
    given (else a walk of the destination); None when ``stop`` was set (nothing written)."""
    from .assembly import assemble

    done = assemble(dest, source=source, marker=marker, journal=journal, stop=stop, listing=listing)
    if done is not None:
        log.info(
            "%s: manifest of %d files, %.1f MiB (%s): %d hashes from the copy's journal (%d "
            "in lines made as their folders were proven; %d kept from their upload), %d files "
            "(%.1f MiB) hashed in %.2f s",
            dest.path,
            done.files,
            done.bytes / 2**20,
            "as the verification listed them" if done.from_listing else "the destination walked",
            done.from_journal,
            done.from_proofs,
            done.from_uploads,
            done.hashed,
            done.hashed_bytes / 2**20,
            done.seconds,
        )
    return done


def verify_against_manifest(path: str | os.PathLike, *, json_out: bool = False) -> bool:
    """``napari-softcopy verify DEST``: check the copy at ``path`` against its manifest and
    its marker, print each difference and the one-line verdict (or JSON); True when intact.

    Raises
    ------
    InputError
        ``path`` is not a folder, or holds no manifest (the message names the fix).
    """
    from .checks import InputError, check_folder
    from .destinations import is_s3_url, open_destination

    if not is_s3_url(path):
        check_folder(path, "destination")
    dest = open_destination(path, create=False)
    try:
        try:
            manifest = read_manifest(dest)
        except ManifestError as exc:
            if dest.stat(MANIFEST) is None:
                raise InputError(str(exc)) from None
            print(f"DIFFERENT: {exc}")
            return False
        report = check_manifest(dest, manifest)
    finally:
        dest.close()
    if json_out:
        print(json.dumps(report.to_dict()))
    else:
        for line in report.lines():
            print(line)
        print(report.summary())
    return report.ok
