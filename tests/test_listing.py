"""The finish's listing (`listing`): the files of the walk in path order, and the proven
folders' manifest lines taken whole (`ProvenLines`), each file once in the manifest
(`assembly.assemble`)."""

from __future__ import annotations

import json
from array import array

import blake3

from napari_softcopy.assembly import _line, assemble
from napari_softcopy.destinations import FileInfo, LocalDestination
from napari_softcopy.listing import Listing, ListingWriter, ProvenLines, spool_folder
from napari_softcopy.manifest import MANIFEST, read_manifest
from napari_softcopy.proofs import Proof, ProofSpool


def test_proven_lines_are_taken_whole_and_a_folder_listed_again_gives_its_rows(tmp_path):
    """Three folders proven with their lines (one proven twice: its first lines are left
    unread, so the lines are taken in two runs, not three), one vouched for by rows, and a
    recheck listing one proven folder again: the manifest has every file once, the proven
    lines as made, and for the folder listed again the file's own hash (its rows given and
    merged with the recheck's, the later kept), not its stale proof's line."""
    dest = LocalDestination(tmp_path / "dst")
    files = {"a/0": b"a0", "a/1": b"a1", "b/0": b"b0", "c/0": b"c0", "d/0": b"d0", "top": b"t"}
    for rel, data in files.items():
        (tmp_path / "dst" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "dst" / rel).write_bytes(data)
    info = {rel: FileInfo(False, True, len(data), 1, None) for rel, data in files.items()}
    fake = {rel: f"{n:064x}" for n, rel in enumerate(files, 1)}  # (as made when proven)
    spool = ProofSpool()
    proofs: dict[str, Proof] = {}

    def prove(folder: str, names: list[str]) -> None:
        for name in names:
            spool.add(folder, name, info[f"{folder}/{name}"])

        def lines(folder: str, rows: list) -> bytes:
            made = [_line(f"{folder}/{r[0]}", r[1], fake[f"{folder}/{r[0]}"]) for r in rows]
            return ("\n".join(made) + "\n").encode()

        offset, length, lines_at, made = spool.block(folder, lines)
        proofs[folder] = Proof(offset, length, len(names), 2 * len(names), 0, (), 1, made, lines_at)

    try:
        prove("a", ["1", "0"])
        prove("b", ["0"])  # (its first proof: stale, left unread)
        prove("b", ["0"])
        prove("c", ["0"])
        proven = ProvenLines(spool.path, spool.lines_path, proofs)
        for folder in ("c", "a", "b"):  # (vouched for in walk order, not proof order)
            proven.add(folder, proofs[folder])
        spool.add("d", "0", info["d/0"])  # (vouched for by its rows: no lines made)
        offset, length, _, _ = spool.block("d")
        listing = Listing(
            [(spool.path, ["d"], array("q", (offset, length)))],
            borrowed=(spool.path,),
            proven=proven,
        )
        walk = ListingWriter(spool_folder())
        walk.add("", "top", info["top"])
        recheck = ListingWriter(walk.folder)
        recheck.add("c", "0", info["c/0"])  # (listed again: a recheck after the walk)
        listing = listing.merged(walk.close()).merged(recheck.close())
        done = assemble(dest, source="/src", marker=None, journal=None, listing=listing)
        assert listing.given() == ["c"]  # (listed again by the recheck: its rows given)
        ranges = list(proven.ranges(set(listing.given())))
        assert (proven.files, proven.bytes) == (4, 8)  # (what a listing gives is its own)
        listing.discard()
    finally:
        spool.discard()
    lines = (tmp_path / "dst" / MANIFEST).read_text().splitlines()
    paths = [json.loads(line)["path"] for line in lines[1:]]
    assert sorted(paths) == sorted(files) and len(paths) == len(set(paths))
    manifest = read_manifest(dest)
    for rel, data in files.items():
        expected = blake3.blake3(data).hexdigest() if rel in ("c/0", "d/0", "top") else fake[rel]
        assert manifest.entries[rel].digest == expected, rel
    assert (done.files, done.bytes, done.from_proofs) == (6, 11, 3)
    assert len(ranges) == 2  # (a's lines, then b's second proof's: c's were given as rows)
