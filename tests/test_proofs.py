"""The finish walks only what changed since it was proven (issue 22 item 4).

Folders are compared alone during the acquisition once quiet (`proofs`, `verify_folders`);
the finish walks the root and the folders without a standing proof. The writers are real
(zarr-python), the events the kernel's; nothing here is timed: the counts of folders walked
and vouched for are asserted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr

from napari_softcopy.engine import Tuning
from napari_softcopy.verify import verify_tree
from support import assert_identical, assert_manifest_is_fresh, engine, wait_for

#: Folders proven as soon as they have been quiet a moment (the default waits 2 s).
QUICK = Tuning(prove_quiet_s=0.3, prove_interval_s=0.05)


def write_array(src: Path, value: int = 1) -> zarr.Array:
    """4 x 8 x 64 bytes in chunks of 8: 256 chunk files in 32 folders ``c/i/j`` (v3)."""
    a = zarr.create_array(
        src, shape=(4, 8, 64), chunks=(1, 1, 8), dtype="uint8", fill_value=0, compressors=None
    )
    a[:] = (np.arange(4 * 8 * 64).reshape(4, 8, 64) * value % 251 + 1).astype("uint8")
    return a


def folders(root: Path) -> set[str]:
    """Every folder below ``root`` (``""``: the root), ``/``-separated."""
    out = set()
    for dirpath, _dirs, _files in os.walk(root):
        rel = Path(dirpath).relative_to(root).as_posix()
        out.add("" if rel == "." else rel)
    return out


def proven(e) -> set[str]:
    """The folders whose proof stands now (none before the engine watches the source)."""
    if e._proofs is None:
        return set()
    return set(e._proofs.clean(e._watching.folder_watches()))


def wait_until_proven(e, src: Path) -> set[str]:
    """Wait until every folder of ``src`` is proven; the folders."""
    every = folders(src)
    wait_for(lambda: proven(e) >= every, 120, "every folder proven")
    return every


HELD = "c/2/5/3"  # (the chunk `rewrite_after_proofs` rewrites)


def end_at_marker(e, src: Path) -> None:
    """The acquisition's marker; the copy's end awaited (it must end, verified or not)."""
    (src / "complete").write_text("")
    assert e.wait(120), e.status().message


@contextlib.contextmanager
def ended_identical(e, src: Path, dst: Path) -> Iterator[None]:
    """The body runs beside the copy ``e``; then the acquisition's marker (`end_at_marker`),
    the engine stopped whatever happened, and the copy found identical with a manifest of
    its current bytes."""
    try:
        yield
        end_at_marker(e, src)
    finally:
        e.stop()
        e.wait(10)
    assert_identical(src, dst)
    assert_manifest_is_fresh(dst)


def rewrite_then_finish(e, a: zarr.Array, src: Path, rel: str) -> None:
    """Rewrite the chunk ``rel`` (``c/i/j/k`` of `write_array`'s ``a``) in place: same size,
    new bytes (250 x 8), its mtime put back (size and mtime alone would call the old copy
    current: only its stamp or record tells); then the marker, and wait for the copy's end."""
    chunk = src / rel
    st = chunk.stat()
    i, j, k = map(int, rel.split("/")[1:])
    a[i, j, 8 * k : 8 * k + 8] = np.full(8, 250, dtype="uint8")
    os.utime(chunk, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert chunk.stat().st_size == st.st_size
    end_at_marker(e, src)


def rewrite_after_proofs(src: Path, dst: Path, monkeypatch) -> tuple[object, set[str]]:
    """Copy an archive live until every folder is proven, then rewrite the chunk `HELD` just
    before the marker (`rewrite_then_finish`), its hint held back from the live copy (as
    when its event waits behind thousands: only the finish can catch it). Returns the ended
    engine and the folders proven before."""
    e = engine(src, dst, tuning=QUICK, wait_for_source=True)
    try:
        a = write_array(src)
        every = wait_until_proven(e, src)
        add_hints = e._pending.add_hints
        monkeypatch.setattr(
            e._pending,
            "add_hints",
            lambda hints, **kw: add_hints([h for h in hints if h[0] != HELD], **kw),
        )
        rewrite_then_finish(e, a, src, HELD)
    finally:
        e.stop()
        e.wait(10)
    assert (dst / HELD).read_bytes() == bytes([250] * 8)
    return e, every


def test_a_file_rewritten_after_its_folder_was_proven_is_copied_before_the_marker(
    tmp_path, monkeypatch
):
    """The rewrite's event marks its folder, so the finish walks that folder again and
    copies the file before the marker, even where the live copy has not copied it yet (here
    its hint is held back from the copy, as when its event waits behind thousands of others:
    only the finish can catch it)."""
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    e, every = rewrite_after_proofs(src, dst, monkeypatch)
    assert len(every) == 38  # (the root, c, c/0..3, 32 folders of chunks)
    assert_identical(src, dst)
    assert_manifest_is_fresh(dst)
    v = e.status().verification
    # Only the root and the folder of the rewritten chunk are walked after the marker.
    assert v["folders_walked"] <= 3, v
    assert v["folders_proven"] >= len(every) - 3, v
    assert v["files_checked"] == 256 + 1  # (the chunks and the array's zarr.json)


def test_a_file_deleted_at_the_destination_behind_the_copy_is_found_by_verify(tmp_path):
    """The copy's proofs are of what it wrote (the destination is held by its lock): a file
    deleted there by someone else after its folder was proven is not looked at again by the
    finish (docs/architecture.md says why), and `napari-softcopy verify`, which walks both
    trees, names it."""
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    e = engine(src, dst, tuning=QUICK, wait_for_source=True)
    try:
        write_array(src)
        wait_until_proven(e, src)
        (dst / "c/1/1/0").unlink()
        end_at_marker(e, src)
    finally:
        e.stop()
        e.wait(10)
    assert e.status().verification["folders_proven"] > 30
    report = verify_tree(src, dst, marker="complete")
    assert report.missing == ["c/1/1/0"] and report.n_missing == 1
    cli = subprocess.run(
        [sys.executable, "-m", "napari_softcopy.cli", "verify", str(src), str(dst)],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert "c/1/1/0" in cli.stdout + cli.stderr


def test_events_lost_after_the_folders_were_proven_make_the_finish_walk_everything(tmp_path):
    limit = Path("/proc/sys/fs/inotify/max_queued_events")
    try:
        # (another test of the machine may hold it at 16 right now: never put that back)
        original = limit.read_text() if int(limit.read_text()) > 16 else "16384\n"
        limit.write_text("16\n")  # read at inotify_init: only this engine gets the small queue
    except OSError:
        pytest.skip("cannot lower fs.inotify.max_queued_events here (needs root)")
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    a = zarr.create_array(
        src, shape=(4, 8, 64), chunks=(1, 1, 8), dtype="uint8", fill_value=0, compressors=None
    )
    try:
        e = engine(src, dst, tuning=QUICK)
        wait_for(lambda: e.status().scans >= 1, what="first scan")
    finally:
        limit.write_text(original)
    try:
        a[:] = 7  # (overflows too, maybe: proven again once quiet)
        wait_until_proven(e, src)
        # Hold the proving, so that the overflow below surely comes after the last proof.
        e._pause_proving(True)
        overflows = e.status().event_overflows
        for i in range(2000):  # a burst of renames, as tensorstore writes: overflows 16
            tmp = src / "c/0/0" / f"{i}.__lock"
            tmp.write_bytes(b"x")
            os.replace(tmp, src / "c/0/0" / f"x{i}")
        wait_for(lambda: e.status().event_overflows > overflows, 60, "an overflow")
        end_at_marker(e, src)
    finally:
        e.stop()
        e.wait(10)
    assert_identical(src, dst)
    s = e.status()
    assert s.verification["folders_proven"] == 0, s.verification
    assert s.verification["folders_walked"] >= 38, s.verification
    assert any("lost" in n and "every folder" in n for n in s.notices), s.notices


def test_delivered_all_means_every_earlier_event_was_handled(tmp_path):
    """The finish trusts the proofs only once `InotifyWatcher.delivered_all` says every event
    of a change made before it was handled: each time it says so here, the handler has seen
    every file written before the call."""
    from napari_softcopy.watcher import InotifyWatcher

    seen: set[str] = set()

    class Handler:
        def dispatch(self, event) -> None:
            seen.add(os.path.basename(os.fsdecode(event.src_path)))

    watcher = InotifyWatcher(str(tmp_path), Handler(), lambda: None)
    watcher.start()
    try:
        wait_for(watcher.delivered_all, 30, "the reader idle")
        for burst in range(20):
            names = {f"{burst}-{i}" for i in range(200)}
            for name in names:
                (tmp_path / name).write_bytes(b"x")
            wait_for(watcher.delivered_all, 60, "every event handled")
            assert names <= seen, sorted(names - seen)[:5]
        assert watcher.reads > 0
    finally:
        watcher.stop()
        watcher.join(5)


def test_a_listing_leaves_the_spools_it_borrowed(tmp_path):
    """The finish's listing reads the proven folders' rows from the proofs' spool, which must
    outlive it (a cancelled finish proves on, and tries again): `Listing.discard` deletes
    only its own spools."""
    from array import array

    from napari_softcopy.listing import Listing

    own, borrowed = tmp_path / "own", tmp_path / "borrowed"
    own.write_bytes(b"")
    borrowed.write_bytes(b"")
    listing = Listing([(str(own), [], array("q"))]).merged(
        Listing([(str(borrowed), [], array("q"))], borrowed=(str(borrowed),))
    )
    listing.discard()
    assert not own.exists() and borrowed.exists()


#: Few watches, given back by folders idle for a second (after they were proven); the looks
#: at their source shared with a helper process from the first (as from 4,096 in a day's run).
FEW_WATCHES = dataclasses.replace(
    QUICK, max_watches=8, watch_release_idle_s=1.0, source_look_helper_folders=1
)


def unwatched_proven(e, src: Path) -> list[str]:
    """Chunk folders (``c/i/j``) proven and without a watch now."""
    watches = e._watching.folder_watches() or {}
    return sorted(f for f in proven(e) if f.count("/") == 2 and f not in watches)


def write_array_then_more_folders(e, src: Path) -> zarr.Array:
    """`write_array`; once its folders are proven, new folders (a file each) whose watches
    make the proven ones, idle since, give theirs back."""
    a = write_array(src)
    wait_for(
        lambda: (
            e._proofs is not None
            and e.status().files_pending == 0
            and e._proofs.counts[1] == 0
            and any(f.count("/") == 2 for f in proven(e))
        ),
        60,
        "every folder watched proven (some gave their watch back before)",
    )
    made = [0.0]

    def another_folder() -> list[str]:  # (a watch each: once they are idle, they give way)
        if time.monotonic() - made[-1] >= 0.1:
            folder = src / "more" / str(len(made))
            folder.mkdir(parents=True)
            (folder / "f").write_bytes(b"x" * len(made))
            made.append(time.monotonic())
        return unwatched_proven(e, src)

    wait_for(another_folder, 60, "a proven folder without its watch")
    return a


def test_folders_without_their_watch_are_vouched_for_by_a_look_at_the_source(tmp_path):
    """Past the watch limit a folder's changes have no event: a folder watched all along
    since its proof (the same watch descriptor) is vouched for by the events; one that gave
    its watch back, by a look at the source (every file's size, mtime and stamp as proven),
    not a walk of both trees."""
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    e = engine(src, dst, tuning=FEW_WATCHES, wait_for_source=True)
    with ended_identical(e, src, dst):
        write_array_then_more_folders(e, src)
        wait_for(
            lambda: e.status().files_pending == 0 and e._proofs.counts[1] == 0,
            60,
            "every watched folder proven",
        )
    s = e.status()
    v = s.verification
    assert s.folders_unwatched > 0, "some folders must have given their watch back"
    assert v["folders_checked_at_source"] > 0, v
    # (fewer than a chunk: the helper, fed first, made them all)
    assert v["source_looks_in_helper"] >= v["folders_checked_at_source"], v
    assert v["folders_proven"] + v["folders_walked"] >= 38 + 2, v


def test_a_rewrite_in_a_folder_without_its_watch_is_caught_before_the_marker(tmp_path):
    """The hardest case past the watch limit: a chunk of a proven folder that has given its
    watch back (no event can come from it) rewritten with its size and mtime put back, just
    before the marker. The look at the source finds its stamp moved (a new ctime, or a new
    inode): the folder is walked, the chunk copied again before the marker."""
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    e = engine(src, dst, tuning=FEW_WATCHES, wait_for_source=True)
    try:
        a = write_array_then_more_folders(e, src)
        folder = unwatched_proven(e, src)[0]
        rewrite_then_finish(e, a, src, f"{folder}/3")
    finally:
        e.stop()
        e.wait(10)
    assert (dst / folder / "3").read_bytes() == bytes([250] * 8)
    assert_identical(src, dst)
    assert_manifest_is_fresh(dst)
    # (the rewrite was found by the helper process's look: it made every look)
    assert e.status().verification["source_looks_in_helper"] > 0, e.status().verification


def test_without_xattrs_at_the_destination_unwatched_folders_are_walked_and_it_is_said(tmp_path):
    """On a destination without extended attributes (exFAT: its copies carry no stamp) the
    look at an unwatched folder's source cannot tell a rewrite with its mtime put back: such
    folders are walked in both trees, and the user is told once (a notice), not left to
    find the finish slower."""
    from mounts import mounted

    src = tmp_path / "acq.zarr"
    with mounted("exfat", tmp_path / "exfat", size_mb=64) as m:
        dst = m.path / "copy.zarr"
        e = engine(src, dst, tuning=FEW_WATCHES, wait_for_source=True)
        try:
            write_array_then_more_folders(e, src)
            end_at_marker(e, src)
        finally:
            e.stop()
            e.wait(10)
        # (exFAT keeps mtimes to 1 s: its copies compared by their records and their bytes)
        assert verify_tree(src, dst, checksum=True).ok
        s = e.status()
    assert s.state == "verified", s.message
    v = s.verification
    assert v["folders_checked_at_source"] == 0 and v["source_looks_in_helper"] == 0, v
    said = [n for n in s.notices if n.startswith("the look at the source of folders without")]
    assert said == [
        "the look at the source of folders without a watch is off: the destination keeps no "
        "extended attributes, so folders without a watch are compared in both trees at the "
        "finish"
    ], s.notices


def test_proofs_cost_under_180_bytes_a_folder_and_read_back_whole():
    """A day's 100,000 folders keep their proofs packed (about 280 bytes a folder as tuples
    of Python ints: 28 MB); every field, subfolders and the watch check read back as
    committed."""
    import tracemalloc

    from napari_softcopy.proofs import FolderProofs, Proof

    proofs = FolderProofs()
    folders = [f"{t}/0/{y}" for t in range(400) for y in range(50)]
    number = {folder: i for i, folder in enumerate(folders)}

    def made(folder: str) -> Proof:  # (made anew each time: the test holds none of them)
        i = number[folder] + 1000
        return Proof(i * 300, 280 + i, 10, 46_000 + i, i % 3, ("a", "b") * (i % 100 == 0), i)

    try:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for folder in folders:
            proofs.mark(folder)
        for folder, mark, epoch in list(proofs.candidates(float("inf"))):
            assert proofs.commit(folder, mark, epoch, made(folder))
        kept = (tracemalloc.get_traced_memory()[0] - before) / len(folders)
    finally:
        tracemalloc.stop()
    assert kept < 180, f"{kept:.0f} bytes a folder"
    watches = {f: made(f).watch for f in folders}
    watches[folders[3]] += 1  # (watched again since: the events do not vouch)
    del watches[folders[5]]  # (its watch given back: nor here)
    proofs.mark(folders[7])  # (changed since: no proof of it stands)
    standing = proofs.clean(watches)
    assert standing.unwatched == {folders[3], folders[5]}
    assert folders[7] not in standing and len(standing) == len(folders) - 1
    assert all(standing[f] == made(f) for f in folders if f != folders[7])
    proofs.discard()


def test_proofs_beyond_their_cap_drop_the_oldest():
    """Memory bounded by a cap, not by the folders: beyond `FolderProofs.max_proofs` the
    oldest proofs go (their folders are walked at the finish, said once in the copy's
    notices); a folder proven again is the newest."""
    from napari_softcopy.platform import Notices
    from napari_softcopy.proofs import FolderProofs, Proof

    proofs = FolderProofs(max_proofs=64)
    notices = Notices()

    def prove_all() -> None:
        for n in (*range(200), 3, *range(200, 230)):
            folder = f"f{n}"
            proofs.mark(folder)
            [(_, mark, epoch)] = [c for c in proofs.candidates(float("inf")) if c[0] == folder]
            assert proofs.commit(folder, mark, epoch, Proof(0, 0, 1, 1, 0, (), n))

    try:
        notices.thread_target(prove_all)()
        # Said once, not silently: the finish will walk the dropped proofs' folders.
        [line] = notices.lines()
        assert "more than 64 folders proven" in line
        standing = proofs.clean({f"f{n}": n for n in range(230)})
        assert len(standing) <= 64 and proofs.dropped == 231 - len(standing)
        assert "f229" in standing and "f3" in standing and "f0" not in standing
    finally:
        proofs.discard()


def test_the_manifest_lines_of_proven_folders_are_made_as_they_are_proven(tmp_path):
    """A folder without subfolders proven during the copy has its manifest lines made then,
    from the hashes of this run's copies of its files: the finish copies them whole, and the
    manifest equals one made by reading every file back. A chunk rewritten after its folder
    was proven (`rewrite_after_proofs`'s case) is covered by the test above: its folder's
    lines are not used, and `assert_manifest_is_fresh` there finds the new bytes' hash."""
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    e = engine(src, dst, tuning=QUICK, wait_for_source=True)
    with ended_identical(e, src, dst):
        write_array(src)
        wait_until_proven(e, src)
    v = e.status().verification
    # (the 32 folders of chunks have no subfolders: each one's 8 lines made when proven)
    assert v["manifest_from_proofs"] == 256, v
    assert 0 < v["manifest_s"] < 60, v  # (the drain's share the manifest took: said)
    assert e._hashes is None  # (discarded with what it kept: the manifest holds it)


def test_a_proof_asked_for_alone_stands_as_clean_says():
    """`FolderProofs.standing` (a periodic rescan's question, folder by folder) answers as
    `clean`'s snapshot would: none once marked, and unwatched where the watch differs."""
    from napari_softcopy.proofs import FolderProofs, Proof

    proofs = FolderProofs(max_proofs=64)
    try:
        proofs.mark("a")
        [(_, mark, epoch)] = list(proofs.candidates(float("inf")))
        assert proofs.commit("a", mark, epoch, Proof(0, 0, 3, 30, 0, ("b",), 7))
        proof, unwatched = proofs.standing("a", 7)
        assert (proof.files, proof.subfolders, unwatched) == (3, ("b",), False)
        assert proofs.standing("a", None)[1] and proofs.standing("a", 8)[1]
        assert "a" in proofs.clean({"a": 7})
        assert "a" in proofs.clean({}).unwatched
        proofs.mark("a")
        assert proofs.standing("a", 7) is None and proofs.standing("z", 7) is None
    finally:
        proofs.discard()


def test_a_refused_folder_waits_twice_as_long_each_time_and_is_never_vouched_for():
    """Behind a backlog a folder is refused until its last copy lands (item 66: about 45
    times behind 90 s). Each refusal doubles its wait (1, 2, 4, 8, 16, 16 quiet spells), a
    mark starts it over, a folder marked after it is still found while it waits, and no
    proof of it stands meanwhile (its mark is pending: the copy may still change it)."""
    from napari_softcopy.proofs import FolderProofs, Proof

    q = 2.0
    proofs = FolderProofs(max_proofs=64, quiet_s=q)

    def due(folder: str, at: float) -> bool:
        return folder in {c[0] for c in proofs.candidates(at - q)}

    try:
        proofs.mark("a")
        [(_, mark, epoch)] = list(proofs.candidates(float("inf")))
        assert proofs.commit("a", mark, epoch, Proof(0, 0, 3, 30, 0, (), 7))
        proofs.mark("a")  # (a file event: the proof no longer stands)
        [(_, mark, _)] = list(proofs.candidates(float("inf")))
        for spells in (1, 2, 4, 8, 16, 16):
            before = time.monotonic()
            proofs.postpone("a", mark)  # (refused: a copy still to come)
            after = time.monotonic()
            assert not due("a", before + spells * q)
            assert due("a", after + spells * q + 1e-3)
            assert "a" not in proofs.clean({"a": 7}) and proofs.standing("a", 7) is None
            assert proofs.counts == (0, 1)
        proofs.mark("b")  # (after "a" in the table, due while "a" waits: skipped, not a stop)
        assert [c[0] for c in proofs.candidates(time.monotonic() + 1e-3)] == ["b"]
        proofs.postpone("a", mark - 1)  # (an older mark's refusal: nothing)
        proofs.mark("a")  # (its copy published: tried after one spell again)
        after = time.monotonic()
        proofs.postpone("a", mark)  # (the refusal of the mark before: no wait)
        assert due("a", after + q + 1e-3)
        [(_, mark, epoch)] = [c for c in proofs.candidates(float("inf")) if c[0] == "a"]
        assert proofs.commit("a", mark, epoch, Proof(0, 0, 3, 30, 0, (), 7))
        assert "a" in proofs.clean({"a": 7})
    finally:
        proofs.discard()


def test_a_copy_below_a_waiting_folder_has_it_tried_after_one_spell_again():
    """A folder is refused while a subfolder of its is missing at the destination, and the
    first copy below that subfolder makes it there without a mark of the folder: the copy's
    publish (`mark_copied`) ends the wait of every folder above it (not only its own), and
    marks its own folder; the marks above stay, so no proof of them stands sooner."""
    from napari_softcopy.proofs import FolderProofs

    q = 2.0
    proofs = FolderProofs(max_proofs=64, quiet_s=q)

    def due(folder: str, at: float) -> bool:
        return folder in {c[0] for c in proofs.candidates(at - q)}

    try:
        for folder in ("", "p", "p/s"):
            proofs.mark(folder)
        marks = {c[0]: c[1] for c in proofs.candidates(float("inf"))}
        for _ in range(3):  # (refused three times: waiting 4 spells now)
            for folder in ("", "p"):
                proofs.postpone(folder, marks[folder])
        after = time.monotonic()
        assert not due("p", after + 3 * q) and not due("", after + 3 * q)
        proofs.mark_copied("p/s/t/x")  # (the first copy below "p/s": "p/s/t" made there)
        after = time.monotonic()
        assert due("p", after + q + 1e-3) and due("", after + q + 1e-3)
        found = {c[0]: c[1] for c in proofs.candidates(after + 1e-3)}
        assert found["p"] == marks["p"] and found[""] == marks[""]  # (marks unchanged)
        assert found["p/s/t"] > max(marks.values())  # (its own folder marked)
        assert proofs.clean({}) == {} and proofs.standing("p", None) is None
    finally:
        proofs.discard()


def test_the_look_at_the_source_finds_every_change_a_proof_cannot_stand(tmp_path):
    """`source_unchanged` against rows as a proof keeps them: each kind of change makes it
    False (the folder is then walked), a writer's temporary file does not, and rows without
    stamps (a destination without xattrs) never stand."""
    import threading

    from napari_softcopy.destinations import LocalDestination
    from napari_softcopy.proofs import NO_WATCH, Proof
    from napari_softcopy.source_looks import source_unchanged
    from napari_softcopy.transfer import copy_file

    src, dest = tmp_path / "src", LocalDestination(tmp_path / "dst")
    changes = {
        "rewritten": lambda f: _rewrite_keeping_size_and_mtime(f / "3"),
        "new file": lambda f: (f / "new").write_bytes(b"x"),
        "deleted": lambda f: (f / "2").unlink(),
        "new folder": lambda f: (f / "sub").mkdir(),
        "temporary": lambda f: (f / "3.__lock").write_bytes(b"x"),
        "none": lambda f: None,
    }
    root_fd = os.open(src.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for kind in changes:
            for k in range(5):
                (src / kind).mkdir(parents=True, exist_ok=True)
                (src / kind / str(k)).write_bytes(os.urandom(100 + k))
                rel = f"{kind}/{k}"
                copy_file(str(src / rel), dest, rel, stop=threading.Event())
        for kind, change in changes.items():
            listed = dest.listdir(kind, stamps=True)
            rows = sorted((n, i.size, i.mtime_ns, i.stamp) for n, i in listed.items())
            proof = Proof(0, 0, 5, 0, 0, (), NO_WATCH)
            folder, caps = f"src/{kind}", dest.capabilities
            assert source_unchanged(root_fd, folder, proof.subfolders, rows, caps)
            change(src / kind)
            expected = kind in ("temporary", "none")
            assert source_unchanged(root_fd, folder, proof.subfolders, rows, caps) == expected, kind
            unstamped = [(n, size, mtime, None) for n, size, mtime, _ in rows]
            assert not source_unchanged(root_fd, folder, proof.subfolders, unstamped, caps)
    finally:
        os.close(root_fd)
        dest.close()


def _rewrite_keeping_size_and_mtime(path: Path) -> None:
    st = path.stat()
    path.write_bytes(os.urandom(st.st_size))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_folder_with_a_copy_still_to_come_is_refused_by_its_names_alone(tmp_path):
    """A folder tried before its last copy landed (every quiet spell behind a backlog) is
    refused from the names at both sides (`verify_folders._from_copies`), not
    compared; a writer's temporary file, a subfolder or a file extra at the destination do
    not refuse it (the comparison decides those)."""
    import threading

    from napari_softcopy.destinations import LocalDestination
    from napari_softcopy.proofs import ProofSpool
    from napari_softcopy.transfer import copy_file
    from napari_softcopy.verify_folders import _from_copies, prove_folder

    src, dst = tmp_path / "src", tmp_path / "dst"
    dest, spool = LocalDestination(dst), ProofSpool()
    changes = {
        "none": (lambda f: None, True),
        "temporary at the source": (lambda f: (src / f / "3.__lock").write_bytes(b"x"), True),
        "extra at the destination": (lambda f: (dst / f / "x").write_bytes(b"x"), False),
        "subfolder": (lambda f: [(r / f / "sub").mkdir() for r in (src, dst)], True),
        "deleted at the destination": (lambda f: (dst / f / "2").unlink(), False),
        "a folder there": (lambda f: [(dst / f / "2").unlink(), (dst / f / "2").mkdir()], False),
        "still to come": (lambda f: (src / f / "new").write_bytes(b"x"), False),
    }
    try:
        for folder in changes:
            for n in range(5):
                (src / folder).mkdir(parents=True, exist_ok=True)
                (src / folder / str(n)).write_bytes(os.urandom(100 + n))
                copy_file(str(src / folder / str(n)), dest, f"{folder}/{n}", stop=threading.Event())
        for folder, (change, proven) in changes.items():
            change(folder)
            refused = folder in ("deleted at the destination", "a folder there", "still to come")
            assert (_from_copies(str(src), dest, folder, "complete", None) is None) == refused, (
                folder
            )
            proof = prove_folder(str(src), dest, folder, marker="complete", spool=spool, watch=1)
            assert (proof is not None) == proven, folder
    finally:
        spool.discard()
        dest.close()


def test_a_folder_of_this_runs_copies_is_proven_from_them_as_the_comparison_proves_it(tmp_path):
    """A folder of chunk files all copied by this run is proven from what those copies set
    (`verify_folders._from_copies`: the destination's names listed, no file stat-ed or
    stamp read back there), with the very rows and manifest lines the comparison of both
    trees makes. Whatever that comparison would find is found: a copy deleted or a file
    extra at the destination, a source rewritten with its size and mtime put back; a file
    this run did not copy, or a subfolder, and the folder is compared in both trees."""
    import pickle
    import threading

    from napari_softcopy.assembly import ManifestLines
    from napari_softcopy.destinations import LocalDestination
    from napari_softcopy.hashes import HashJournal
    from napari_softcopy.proofs import ProofSpool
    from napari_softcopy.transfer import copy_file
    from napari_softcopy.verify_folders import _COMPARE, _from_copies, prove_folder

    src, dst = tmp_path / "src", tmp_path / "dst"
    dest = LocalDestination(dst)
    journal, earlier = HashJournal(dest, low_priority=False), HashJournal(dest)
    changes = {
        "none": (lambda: None, "from copies"),
        "temporary at the source": (
            lambda: (src / k / "3.__lock").write_bytes(b"x"),
            "from copies",
        ),
        "deleted at the destination": (lambda: (dst / k / "2").unlink(), None),
        "extra at the destination": (lambda: (dst / k / "x").write_bytes(b"x"), None),
        "rewritten": (lambda: _rewrite_keeping_size_and_mtime(src / k / "3"), None),
        "subfolder": (lambda: [(r / k / "sub").mkdir() for r in (src, dst)], "compared"),
        "copied by an earlier run": (lambda: None, "compared"),
    }
    spool = ProofSpool()
    try:
        for k in changes:
            for n in range(5):
                (src / k).mkdir(parents=True, exist_ok=True)
                (src / k / str(n)).write_bytes(os.urandom(100 + n))
                r = copy_file(
                    str(src / k / str(n)), dest, f"{k}/{n}", stop=threading.Event(), digest=True
                )
                run = earlier if k == "copied by an earlier run" else journal
                run.published(f"{k}/{n}", r.size, r.mtime_ns, r.stamp, r.digest)

        def blocks(proof) -> tuple[list, bytes]:
            data = Path(spool.path).read_bytes()[proof.offset :]
            lines = Path(spool.lines_path).read_bytes()[proof.lines_at :]
            return pickle.loads(data[: proof.length]), lines[: proof.lines]

        for k, (change, expected) in changes.items():
            change()
            lines = ManifestLines(journal, dest)
            fast = _from_copies(str(src), dest, k, "complete", lines)
            proof = prove_folder(
                str(src), dest, k, marker="complete", spool=spool, watch=7, lines=lines
            )
            compared = prove_folder(str(src), dest, k, marker="complete", spool=spool, watch=7)
            if expected is None:
                assert fast in (None, _COMPARE) and proof is None and compared is None, k
                continue
            assert (fast is not _COMPARE) == (expected == "from copies"), k
            assert proof is not None and compared is not None, k
            assert blocks(proof)[0] == blocks(compared)[0], k  # (the same rows as listed)
            assert proof[2:7] == compared[2:7], k  # (files, bytes, metadata, subfolders, watch)
            if expected == "from copies":
                assert proof.lines and len(blocks(proof)[1].splitlines()) == 5, k  # (a line a file)
    finally:
        spool.discard()
        journal.close()
        earlier.close()
        dest.close()


def test_folders_proven_during_a_long_first_scan_are_not_compared_again(tmp_path, monkeypatch):
    """A finished archive's first scan lasts the whole copy (it queues at most
    `Tuning.pending_limit` at a time), and the folders its copies fill are proven meanwhile;
    once it is whole, only the watched folders without a standing proof are marked to be
    proven (those there before the copy, that no copy marked): each folder is compared and
    proven once, its manifest lines made then, and the copy ends identical."""
    import napari_softcopy.engine.walks as walks

    src, dst = tmp_path / "src", tmp_path / "dst"
    write_array(src)
    proved: list[str] = []  # (each folder proven, as often as it was)
    scans_then: list[int] = []  # (the scans whole when it was)
    real = walks.prove_folder

    def counted(*args, **kwargs):
        proof = real(*args, **kwargs)
        if proof is not None:
            proved.append(args[2])
            scans_then.append(e._counters.scans)
        return proof

    monkeypatch.setattr(walks, "prove_folder", counted)
    # 256 files of 64 bytes at 2 kB/s, 4 queued at a time: the scan lasts about 8 s.
    e = engine(src, dst, tuning=dataclasses.replace(QUICK, pending_limit=4), bandwidth_mb_s=0.002)
    with ended_identical(e, src, dst):
        every = wait_until_proven(e, src)
        before_marker = list(proved)  # (the marker's event marks the root: proven again)
        assert 0 in scans_then, scans_then  # (folders were proven during the first scan)
    assert sorted(before_marker) == sorted(every), sorted(before_marker)
