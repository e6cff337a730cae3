"""Verification a folder at a time: one folder compared alone while the acquisition goes on
(`prove_folder`), and the finish's walk that compares only the folders without a standing
proof (`walk_unproven`). Why a proof may stand for a walk: docs/architecture.md, "Why the
finish need not walk every file"; the bookkeeping: `proofs`.

Both compare by the rules of `verify.verify_tree` (the same `_Comparison`, stamps compared):
a proven folder's counts and manifest rows are those its comparison found, its subfolders
are walked or vouched for in turn.
"""

from __future__ import annotations

import os
import shutil
import stat
import threading
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field

from .assembly import ManifestLines
from .destinations import Destination, FileInfo, copy_difference
from .layout import METADATA_NAMES, is_own_temp_name, is_temp_name
from .listing import Listing, ListingWriter, ProvenLines, spool_folder
from .march import _ROOT_FLAGS, Folder, _March, march
from .proofs import Proof, ProofSpool
from .source_looks import HELPER_FROM, SourceLooks, look_at_sources
from .verify import _Comparison, _open_destination
from .verify_report import _INTERRUPTED, VerifyReport

__all__ = ["prove_folder", "walk_unproven"]


@dataclass
class _OneFolder(_Comparison):
    """Compare the files of one folder, not what is below it; note its subfolders. Anything
    it cannot vouch for (a subfolder the copy does not have, a folder at the destination
    only) is a problem: the folder is proven only where all is identical."""

    subfolders: list[str] = field(default_factory=list)

    def match(self, folder: Folder, entry: os.DirEntry, info: FileInfo | None) -> bool:
        if entry.is_dir(follow_symlinks=False):
            if info is None or not info.is_dir:
                self.report._add("missing", folder.prefix + entry.name)
            else:
                self.subfolders.append(entry.name)
            return False
        return super().match(folder, entry, info)

    def dst_only(self, folder: Folder, name: str, info: FileInfo) -> bool:
        if info.is_dir:
            self.report._add("extra", folder.prefix + name)
            return False
        return super().dst_only(folder, name, info)


def prove_folder(
    source: str,
    dest: Destination,
    folder: str,
    *,
    marker: str | None,
    spool: ProofSpool,
    watch: int,
    stop: threading.Event | None = None,
    lines=None,
) -> Proof | None:
    """Compare the files of ``folder`` (below ``source`` and ``dest``) alone, stamps too;
    its `Proof` (rows written to ``spool``) where all is identical, else None. ``lines``:
    makes the manifest lines of a folder without subfolders from its rows
    (`assembly.ManifestLines`; written after them where it can).

    A folder with a file not yet at the destination by name (its copy still to come, as
    behind a backlog, when a folder is tried every quiet spell until its last copy lands)
    is refused from the names alone; a folder of chunk files all copied by this run is
    proven from what those copies set (`_from_copies`); any other is compared."""
    if folder:
        found = _from_copies(source, dest, folder, marker, lines)
        if found is None:
            return None
        if found is not _COMPARE:
            rows, nbytes = found
            for name, info in rows:
                spool.add(folder, name, info)
            offset, length, lines_at, made = spool.block(folder, lines)
            return Proof(offset, length, len(rows), nbytes, 0, (), watch, made, lines_at)
    report = VerifyReport(source, "", False)
    handler = _OneFolder(report, False, marker, None, True, listing=spool)
    handler.dest = dest
    done = march(
        source,
        dest,
        handler,
        start=folder,
        stamps=True,
        cancelled=None if stop is None else stop.is_set,
    )
    if not done or not report.ok:
        spool.forget()
        return None
    leaf = not handler.subfolders and folder  # (the root's manifest lines skip its own)
    offset, length, lines_at, made = spool.block(folder, lines if leaf else None)
    return Proof(
        offset,
        length,
        report.files_checked,
        report.bytes_checked,
        report.metadata_files,
        tuple(handler.subfolders),
        watch,
        made,
        lines_at,
    )


#: `_from_copies`' answer where it cannot tell: the folder is compared in both trees.
_COMPARE = object()


def _from_copies(
    source: str, dest: Destination, folder: str, marker: str | None, lines: ManifestLines | None
) -> tuple[list[tuple[str, FileInfo]], int] | object | None:
    """What proves ``folder`` without comparing it, at a local destination: None where a
    file of it at the source has no file of its name there (not proven now, whatever the
    comparison would say: the names and their types as both folders list them, nothing
    stat-ed: 28-33 us of CPU for a folder of ten files against 145-178 us compared,
    benchmarks/notes.md); its rows and bytes where every file is this run's copy by the
    one rule; else `_COMPARE` (a subfolder, a metadata file, a file without this run's
    record of it, anything else at the destination: the comparison decides).

    Why the copies' records stand for the destination's listing: each is what the copy set
    on the file it published (`hashes.HashJournal.fresh`, through ``lines``: size, mtime
    and the stamp set before the rename; only records with a hash, made once a publish went
    through). The copy holds the destination's lock, and each publish or delete it makes
    there marks the folder after its record, so one made since the folder's mark makes the
    proof stale (`FolderProofs.commit`, or later). The names at the destination are
    listed, so a copy deleted or a file extra there is still found. What it does not see,
    unlike the comparison: a copy changed in place at the destination by someone else in
    the seconds between its publish and the proof, as nothing sees one changed after the
    proof before `napari-softcopy verify` (docs/architecture.md, "What events cannot
    tell"). Only where the destination keeps stamps and nanosecond mtimes and keeps no
    records (what the copy set is then exactly what a listing reads), and lists names
    alone (`Destination.kinds`)."""
    at_dest = dest.kinds(folder)
    if at_dest is None:
        return _COMPARE
    caps = dest.capabilities
    compare = (
        lines is None
        or not caps.xattrs
        or caps.mtime_precision_ns != 1
        or caps.records
        or caps.latency_bound
        or not caps.stable_mtime
    )
    fresh = {} if lines is None else lines.journal.fresh()
    prefix = f"{folder}/"
    try:
        fd = os.open(f"{source}/{folder}", _ROOT_FLAGS | os.O_NOFOLLOW)
    except OSError:
        return _COMPARE
    rows: list[tuple[str, FileInfo]] = []
    nbytes = 0
    try:
        with os.scandir(fd) as it:
            for entry in it:
                name = entry.name
                rel = prefix + name
                if is_temp_name(name) or rel == marker:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    compare = True
                    continue
                if not at_dest.pop(name, False):  # (none there, or no file: not a copy)
                    if entry.is_file(follow_symlinks=False):
                        return None
                    compare = True
                if compare or name in METADATA_NAMES:
                    compare = True  # (only names from here on: the comparison decides)
                    continue
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted by the writer while we looked (as `_Comparison`)
                record = fresh.get(rel)
                if record is None or not record.digest or not stat.S_ISREG(st.st_mode):
                    compare = True
                    continue
                info = FileInfo(False, True, record.size, record.mtime_ns, record.stamp.encode())
                if copy_difference(st, info, caps) is not None:
                    compare = True
                    continue
                rows.append((name, info))
                nbytes += st.st_size
    finally:
        os.close(fd)
    if compare or any(not (is_own_temp_name(n) or prefix + n == marker) for n in at_dest):
        return _COMPARE
    return rows, nbytes


@dataclass
class _Unproven(_Comparison):
    """The finish's walk: folders with a standing proof (`proofs`) are vouched for by it
    (counted, their rows or, where it has them, their manifest lines taken from the proofs'
    spool, their subfolders looked up in turn), every other folder is walked as
    `verify_tree` walks it."""

    proofs: Mapping[str, Proof] = field(default_factory=dict, repr=False)
    push: object = None  # the walk's stack's append: a folder to walk
    proven: list[str] = field(default_factory=list, repr=False)
    with_rows: list[str] = field(default_factory=list, repr=False)  # (those without lines)
    spans: array = field(default_factory=lambda: array("q"), repr=False)
    lines: ProvenLines | None = field(default=None, repr=False)
    checked_at_source: int = 0  # (unwatched proven folders found as proven at the source)
    looks: SourceLooks | None = None  # (`look_at_sources`, made before the walk; None: none)

    def match(self, folder: Folder, entry: os.DirEntry, info: FileInfo | None) -> bool:
        if info is not None and info.is_dir and entry.is_dir(follow_symlinks=False):
            rel = folder.prefix + entry.name
            if rel in self.proofs:
                self._vouch(rel)
                return False
        return super().match(folder, entry, info)

    def _vouch(self, top: str) -> None:
        """Count the proven folder ``top`` and every proven one below it; queue the rest."""
        # (once for each of a day's 100,000 folders at the finish: kept to plain steps)
        get, unwatched, stack = self.proofs.get, self.unwatched, [top]
        proven, with_rows, spans, lines = self.proven, self.with_rows, self.spans, self.lines
        files = nbytes = metadata = 0
        while stack:
            rel = stack.pop()
            proof = get(rel)
            if proof is None or (
                unwatched and rel in unwatched and not self._unchanged(rel, proof)
            ):
                # (a subfolder of a proven one: at the destination too)
                self.push((rel, True, True))
                continue
            proven.append(rel)
            subfolders = proof.subfolders
            if subfolders:
                stack.extend([f"{rel}/{name}" for name in subfolders])
            if proof.lines and not subfolders and lines is not None:
                lines.add(rel, proof)
            else:
                with_rows.append(rel)
                spans.extend((proof.offset, proof.length))
            files += proof.files
            nbytes += proof.bytes
            metadata += proof.metadata
        report = self.report
        report.files_checked += files
        report.bytes_checked += nbytes
        report.metadata_files += metadata

    @property
    def unwatched(self) -> frozenset[str]:
        return getattr(self.proofs, "unwatched", frozenset())

    def _unchanged(self, rel: str, proof: Proof) -> bool:
        """Whether the look at the unwatched proven folder ``rel``'s source, made before the
        walk (`look_at_sources`), found it as proven (no look made: walked)."""
        if self.looks is None or rel in self.looks.changed:
            return False
        self.checked_at_source += 1
        return True


def walk_unproven(
    source: str,
    destination: str,
    proofs: Mapping[str, Proof],
    spool: ProofSpool,
    *,
    marker: str | None,
    stop: threading.Event | None = None,
    dest: Destination | None = None,
    helper_from: int = HELPER_FROM,
) -> tuple[VerifyReport, list[str]]:
    """Verify ``destination`` against ``source`` as `verify.verify_tree` does (stamps
    compared, a listing for the manifest), walking only the root and the folders without a
    proof in ``proofs`` (`proofs.FolderProofs.clean`). Returns the report (its
    `VerifyReport.folders_walked` counts the folders walked) and the folders vouched for.

    ``dest``: the copy's own open destination, through which the proofs were made: walked
    through it too, and left open (its records of what each file was copied from, where the
    file system cannot say, are read from memory: nothing is written back first); else
    ``destination`` is opened here, as `verify` opens it.

    The unwatched proven folders (``proofs.unwatched``) are looked at on their source side
    first (`source_looks.look_at_sources`, in a helper process too from ``helper_from`` of
    them): vouched for where found as proven, else walked; all walked where the destination
    keeps no stamps (no extended attributes: size and mtime alone cannot tell a rewrite).
    `VerifyReport.source_looks_in_helper` counts those the helper made."""
    report = VerifyReport(source, destination, False)
    writer = ListingWriter(spool_folder())
    lines = ProvenLines(spool.path, spool.lines_path, proofs)
    handler = _Unproven(
        report, False, marker, None, True, listing=writer, proofs=proofs, lines=lines
    )
    own = dest is None
    if own:
        dest = _open_destination(destination)
    handler.dest = dest
    try:
        root_fd = os.open(source, _ROOT_FLAGS)
        try:
            unwatched = handler.unwatched
            if unwatched and dest is not None and dest.capabilities.xattrs:
                handler.looks = look_at_sources(
                    root_fd,
                    spool.path,
                    proofs,
                    unwatched,
                    dest.capabilities,
                    helper_from=helper_from,
                    stop=stop,
                )
            walk = _March(root_fd, dest, handler, None, True, None if stop is None else stop.is_set)
            handler.push = walk.stack.append
            done = walk.run("", source_there=True, dest_there=dest is not None)
        finally:
            os.close(root_fd)
        if not done:
            report._add("unreadable", _INTERRUPTED)
    except BaseException:
        writer.abandon()
        shutil.rmtree(writer.folder, ignore_errors=True)  # (its own folder)
        raise
    finally:
        if dest is not None and own:
            dest.close()
    report.folders_checked_at_source = handler.checked_at_source
    report.source_looks_in_helper = 0 if handler.looks is None else handler.looks.in_helper
    listing = writer.close()
    proven = Listing(
        [(spool.path, handler.with_rows, handler.spans)], borrowed=(spool.path,), proven=lines
    )
    report.listing = proven.merged(listing)
    return report, handler.proven
