"""The finish's steps at a day's scale, on synthetic proofs and a synthetic hash journal, with
nothing else of a copy: the manifest assembled from the proven folders' lines
(`assembly.assemble`), the walk that vouches for the proven folders
(`verify_folders.walk_unproven`), and the journal lookup of the few files whose records are
not in memory (`HashJournal.find` against the merged stream, `HashJournal.latest`).

    python -m benchmarks.finish_steps [--timepoints 500] [--wanted 455] [--reps 3]

The day's geometry (`benchmarks.day`, manyfiles): per timepoint 221 leaf folders of nine
files below three levels of folders, 110,500 leaf folders at 500 timepoints. Prints the
seconds of each step per repetition as JSON (benchmarks/notes.md items 80 and 82).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time

from napari_softcopy.assembly import _line, assemble
from napari_softcopy.destinations import STATE_DIR, FileInfo, LocalDestination
from napari_softcopy.hashes import HashJournal, _segment_name
from napari_softcopy.journal_records import JournalRecord, path_key
from napari_softcopy.proofs import Proof, ProofSpool, StandingProofs, _pack
from napari_softcopy.verify_folders import walk_unproven

FILES = 9  # a leaf folder's files
SIZE = 4608  # bytes a file
STAMP = b"12:34"


def leaf_folders(timepoints: int) -> list[str]:
    """The leaf folders of the day's geometry, in the order they are written."""
    return [f"0/{t}/0/{z}/{y}" for t in range(timepoints) for z in range(13) for y in range(17)]


def prove_all(spool: ProofSpool, timepoints: int) -> dict[str, bytes]:
    """Every folder proven with its rows, and each leaf with its manifest lines: the packed
    proofs, as `FolderProofs.clean` gives them."""
    packed: dict[str, bytes] = {}
    info = FileInfo(False, True, SIZE, 1_700_000_000_000_000_000, STAMP)

    def lines(folder: str, rows: list) -> bytes:
        return ("\n".join(_line(f"{folder}/{r[0]}", SIZE, "ab" * 32) for r in rows) + "\n").encode()

    def prove(folder: str, files: int, subfolders: tuple[str, ...]) -> None:
        for x in range(files):
            spool.add(folder, str(x), info)
        offset, length, lines_at, made = spool.block(folder, None if subfolders else lines)
        proof = Proof(offset, length, files, SIZE * files, 0, subfolders, 1, made, lines_at)
        packed[folder] = _pack(proof)

    prove("0", 0, tuple(str(t) for t in range(timepoints)))
    for t in range(timepoints):
        prove(f"0/{t}", 0, ("0",))
        prove(f"0/{t}/0", 0, tuple(str(z) for z in range(13)))
        for z in range(13):
            prove(f"0/{t}/0/{z}", 0, tuple(str(y) for y in range(17)))
            for y in range(17):
                prove(f"0/{t}/0/{z}/{y}", FILES, ())
    return packed


def write_journal(dest: LocalDestination, timepoints: int) -> list[str]:
    """The journal of a day's copy as level-1 segments of 65,536 records (16 batches each,
    merged), and every path recorded."""
    rels = [f"{leaf}/{x}" for leaf in leaf_folders(timepoints) for x in range(FILES)]
    for n, start in enumerate(range(0, len(rels), 65536), 1):
        records = sorted(
            JournalRecord(path_key(rel), (1 << 40) | (start + i), rel, SIZE, 1, "12:34", "ab" * 32)
            for i, rel in enumerate(rels[start : start + 65536])
        )
        path = dest.path / STATE_DIR / _segment_name(1, 1, n)
        path.write_bytes(b"".join(r.line() for r in records))
    return rels


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--timepoints", type=int, default=500)
    p.add_argument("--wanted", type=int, default=455, help="leaf folders whose records to find")
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)
    work = tempfile.mkdtemp(prefix="softcopy-finish-steps-")
    spool = ProofSpool()
    try:
        src, dst = os.path.join(work, "src"), os.path.join(work, "dst")
        os.makedirs(f"{src}/0")
        os.makedirs(f"{dst}/0")
        os.makedirs(f"{dst}/{STATE_DIR}")
        packed = prove_all(spool, args.timepoints)
        proofs = StandingProofs(packed, _subfolders(args.timepoints))
        dest = LocalDestination(dst)
        rels = write_journal(dest, args.timepoints)
        leaves = leaf_folders(args.timepoints)
        chosen = random.Random(1).sample(range(len(leaves)), min(args.wanted, len(leaves)))
        wanted = {f"{leaves[i]}/{x}" for i in chosen for x in range(FILES)}
        journal = HashJournal(dest, low_priority=False)
        runs = []
        for _ in range(args.reps):
            t0 = time.monotonic()
            report, _proven = walk_unproven(src, dst, proofs, spool, marker=None, dest=dest)
            t1 = time.monotonic()
            done = assemble(dest, source=src, marker=None, journal=None, listing=report.listing)
            t2 = time.monotonic()
            found = journal.find(wanted)
            t3 = time.monotonic()
            keys = sorted(path_key(rel) for rel in wanted)
            stream, record, streamed = journal.latest(), None, 0
            for key in keys:
                while record is None or record.key < key:
                    record = next(stream, None)
                    if record is None:
                        break
                streamed += record is not None and record.key == key
            t4 = time.monotonic()
            report.listing.discard()
            assert done.files == report.files_checked == len(rels), (done, report.summary())
            assert len(found) == streamed == len(wanted)
            runs.append(
                {
                    "walk_unproven_s": round(t1 - t0, 3),
                    "assemble_s": round(t2 - t1, 3),
                    "find_s": round(t3 - t2, 3),
                    "latest_stream_s": round(t4 - t3, 3),
                }
            )
        journal.close()
        dest.close()
        print(json.dumps({"folders": len(proofs), "files": len(rels), "runs": runs}, indent=1))
    finally:
        spool.discard()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _subfolders(timepoints: int) -> dict[str, tuple[str, ...]]:
    """The subfolders of every folder above the leaves (as `FolderProofs` keeps them)."""
    out: dict[str, tuple[str, ...]] = {"0": tuple(str(t) for t in range(timepoints))}
    for t in range(timepoints):
        out[f"0/{t}"] = ("0",)
        out[f"0/{t}/0"] = tuple(str(z) for z in range(13))
        for z in range(13):
            out[f"0/{t}/0/{z}"] = tuple(str(y) for y in range(17))
    return out


if __name__ == "__main__":
    sys.exit(main())
