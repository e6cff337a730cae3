import os
import shutil
import sys
import threading
import time

import numpy as np
import pytest
import zarr

from napari_softcopy import InputError, verify, verify_report
from napari_softcopy.assembly import sorted_files
from napari_softcopy.destinations import STATE_DIR, LocalDestination
from napari_softcopy.verify import recheck, verify_tree


def make_archive(path):
    a = zarr.create_array(path, shape=(4, 32, 32), chunks=(1, 16, 16), dtype="uint16")
    a[:] = np.random.default_rng(0).integers(1, 1000, (4, 32, 32), dtype="uint16")


def copy_tree(src, dst):
    shutil.copytree(src, dst, copy_function=shutil.copy2)


def test_identical_trees(tmp_path):
    make_archive(tmp_path / "s")
    copy_tree(tmp_path / "s", tmp_path / "d")
    report = verify_tree(tmp_path / "s", tmp_path / "d", checksum=True)
    assert report.ok and report.files_checked == 17 and report.metadata_files == 1


@pytest.mark.parametrize("processes", [1, 2])
def test_a_tree_is_never_reported_identical_to_itself(tmp_path, processes):
    """The Python API refuses what the command line refuses: no report that reads "ok"."""
    make_archive(tmp_path / "s")
    (tmp_path / "link").symlink_to(tmp_path / "s")
    for other, why in [
        (tmp_path / "s", "same folder"),
        (tmp_path / "link", "same folder"),
        (tmp_path / "s" / "c", "inside the source"),
        (tmp_path, "inside the destination"),
    ]:
        with pytest.raises(InputError, match=why):
            verify_tree(tmp_path / "s", other, checksum=True, processes=processes)


def test_flipped_byte_needs_checksum(tmp_path):
    make_archive(tmp_path / "s")
    copy_tree(tmp_path / "s", tmp_path / "d")
    chunk = tmp_path / "d" / "c" / "2" / "1" / "0"
    st = chunk.stat()
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    os.utime(chunk, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime
    assert verify_tree(tmp_path / "s", tmp_path / "d").ok
    report = verify_tree(tmp_path / "s", tmp_path / "d", checksum=True)
    assert not report.ok
    assert report.mismatched == [("c/2/1/0", "content differs")]


def test_size_change_found_without_checksum(tmp_path):
    make_archive(tmp_path / "s")
    copy_tree(tmp_path / "s", tmp_path / "d")
    with open(tmp_path / "d" / "c" / "0" / "0" / "0", "ab") as f:
        f.write(b"!")
    report = verify_tree(tmp_path / "s", tmp_path / "d")
    assert not report.ok and report.mismatched[0][0] == "c/0/0/0"
    assert "size" in report.mismatched[0][1]


def test_metadata_compared_by_content(tmp_path):
    make_archive(tmp_path / "s")
    copy_tree(tmp_path / "s", tmp_path / "d")
    meta = tmp_path / "d" / "zarr.json"
    st = meta.stat()
    meta.write_text(meta.read_text().replace("uint16", "uint61"))
    os.utime(meta, ns=(st.st_atime_ns, st.st_mtime_ns))
    report = verify_tree(tmp_path / "s", tmp_path / "d")
    assert report.mismatched == [("zarr.json", "content differs")]


def test_missing_extra_and_marker(tmp_path):
    make_archive(tmp_path / "s")
    copy_tree(tmp_path / "s", tmp_path / "d")
    (tmp_path / "d" / "c" / "3" / "1" / "1").unlink()
    (tmp_path / "d" / "stray").write_text("x")
    (tmp_path / "s" / "complete").write_text("done")
    (tmp_path / "s" / "0.__lock").write_text("temp")  # writers' temp files are ignored
    report = verify_tree(tmp_path / "s", tmp_path / "d", marker="complete")
    assert report.missing == ["c/3/1/1"] and report.extra == ["stray"]
    assert not report.ok
    lines = list(report.lines())
    assert any(line.startswith("missing") and "c/3/1/1" in line for line in lines)


@pytest.mark.parametrize("processes", [1, 2])
def test_the_destinations_private_folder_is_not_part_of_the_copy(tmp_path, processes):
    """``.softcopy`` at the destination root holds napari-softcopy's own records (the
    manifest): neither extra nor compared, in any part of a split walk; a folder of that
    name inside the archive is the archive's, and compared like any other."""
    make_archive(tmp_path / "s")
    copy_tree(tmp_path / "s", tmp_path / "d")
    own = tmp_path / "d" / STATE_DIR
    own.mkdir()
    (own / "manifest").write_text("{}")
    (tmp_path / "s" / "c" / STATE_DIR).mkdir()
    (tmp_path / "s" / "c" / STATE_DIR / "0").write_text("the archive's")
    report = verify_tree(tmp_path / "s", tmp_path / "d", processes=processes)
    assert report.missing == [f"c/{STATE_DIR}/0"] and report.n_extra == 0
    assert report.files_checked == 18


def test_files_in_directories_missing_at_the_source_are_extra(tmp_path):
    make_archive(tmp_path / "s")
    copy_tree(tmp_path / "s", tmp_path / "d")
    shutil.rmtree(tmp_path / "s" / "c" / "3")
    report = verify_tree(tmp_path / "s", tmp_path / "d")
    assert sorted(report.extra) == ["c/3/0/0", "c/3/0/1", "c/3/1/0", "c/3/1/1"]


def _damage(dst):
    """One file missing, one metadata file changed in place (size and mtime kept), one extra;
    returns how to undo it."""
    missing = dst / "c" / "1" / "0" / "1"
    saved = missing.read_bytes(), missing.stat()
    missing.unlink()
    meta = dst / "zarr.json"
    st = meta.stat()
    meta.write_text(meta.read_text().replace("uint16", "uint61"))
    os.utime(meta, ns=(st.st_atime_ns, st.st_mtime_ns))
    (dst / "c" / "3" / "extra").write_bytes(b"x")
    return missing, saved, meta


def test_recheck_compares_only_what_the_walk_found_and_counts_the_whole_tree(tmp_path):
    src, dst = tmp_path / "s", tmp_path / "d"
    make_archive(src)
    copy_tree(src, dst)
    missing, (data, st), meta = _damage(dst)
    report = verify_tree(src, dst)
    assert (report.n_missing, report.n_mismatched, report.n_extra) == (1, 1, 1)

    still = recheck(report)  # nothing repaired yet: the same three problems
    assert still is not None
    assert (still.missing, still.extra) == (["c/1/0/1"], ["c/3/extra"])
    assert still.mismatched == [("zarr.json", "content differs")]

    missing.write_bytes(data)  # the repairs, as the engine's copies would make them
    os.utime(missing, ns=(st.st_atime_ns, st.st_mtime_ns))
    shutil.copy2(src / "zarr.json", meta)
    (dst / "c" / "3" / "extra").unlink()
    chunk = dst / "c" / "0" / "0" / "0"  # changed after the walk found it identical
    chunk.write_bytes(b"changed")
    done = recheck(report)
    assert done is not None and done.ok
    full = verify_tree(src, dst)
    assert not full.ok  # only a walk sees what the walk behind the report had passed
    counts = [(r.files_checked, r.bytes_checked, r.metadata_files) for r in (done, full)]
    assert counts[0] == counts[1]


def test_recheck_leaves_to_a_walk_what_a_report_does_not_list(tmp_path, monkeypatch):
    src, dst = tmp_path / "s", tmp_path / "d"
    make_archive(src)
    copy_tree(src, dst)
    shutil.rmtree(dst / "c" / "2")  # a folder missing: its files are listed
    assert recheck(verify_tree(src, dst)) is not None
    (dst / "c" / "1").rename(dst / "c" / "1-moved")
    (dst / "c" / "1").write_bytes(b"a file where the source has a folder")
    assert recheck(verify_tree(src, dst)) is None
    monkeypatch.setattr(verify_report, "MAX_LISTED", 2)  # more problems than listed
    monkeypatch.setattr(verify, "MAX_LISTED", 2)
    (dst / "c" / "1").unlink()
    (dst / "c" / "1-moved").rename(dst / "c" / "1")
    assert recheck(verify_tree(src, dst)) is None


def _damaged_copy(tmp_path):
    """A copy of a 3-array archive with every kind of difference, in several folders."""
    src, dst = tmp_path / "s", tmp_path / "d"
    for name in ("a", "b", "c"):
        make_archive(src / name)
    copy_tree(src, dst)
    (dst / "a" / "c" / "0" / "0" / "0").unlink()  # missing
    (dst / "b" / "c" / "1" / "1" / "0").write_bytes(b"short")  # mismatched (size)
    (dst / "c" / "c" / "2" / "extra").write_bytes(b"x")  # extra file
    (dst / "only-here" / "deep").mkdir(parents=True)  # a folder the source does not have
    (dst / "only-here" / "deep" / "f").write_bytes(b"x")
    shutil.rmtree(dst / "c" / "c" / "3")  # a file where the source has a folder
    (dst / "c" / "c" / "3").write_bytes(b"x")
    # folders where the source has files (their names in part 1 and part 0 of two)
    for file in (dst / "a" / "c" / "1" / "1" / "0", dst / "b" / "zarr.json"):
        file.unlink()
        (file / "inside").mkdir(parents=True)
        (file / "inside" / "f").write_bytes(b"x")
    return src, dst


def _as_sets(report):
    return (
        report.files_checked,
        report.bytes_checked,
        report.metadata_files,
        set(report.missing),
        set(report.mismatched),
        set(report.extra),
        set(report.unreadable),
        report.n_missing + report.n_mismatched + report.n_extra + report.n_unreadable,
        report._counted,
    )


def test_a_walk_split_between_processes_reports_what_one_process_does(tmp_path):
    src, dst = _damaged_copy(tmp_path)
    one = verify_tree(src, dst)
    assert (one.n_missing, one.n_mismatched, one.n_extra) == (1, 4, 2)
    for processes in (2, 3):
        assert _as_sets(verify_tree(src, dst, processes=processes)) == _as_sets(one)
    part = verify.VerifyReport(str(src), str(dst), False)
    verify._Comparison(part, False, None, None, False, part=1, parts=2).run(None)
    assert 0 < part.files_checked < one.files_checked  # (a real share of the work)
    helpers = verify.start_helpers(1)  # started ahead, as the engine does
    assert _as_sets(verify_tree(src, dst, helpers=helpers)) == _as_sets(one)
    assert not any(h.process.running for h in helpers)  # (their report was used, they ended)


def test_a_part_helper_that_fails_is_walked_by_the_caller(tmp_path, monkeypatch, caplog):
    """A helper can only make a walk faster: one that dies (here: an interpreter that
    cannot import the package) or writes garbage changes nothing in the report."""
    src, dst = _damaged_copy(tmp_path)
    expected = _as_sets(verify_tree(src, dst))
    monkeypatch.setattr(verify.WalkHelper, "_MAIN", "import sys; sys.exit('no package here')")
    assert _as_sets(verify_tree(src, dst, processes=2)) == expected
    assert "no package here" in caplog.text
    # (it reads its part first, as a real helper does: one that exits before it is told its
    # part fails on the broken pipe instead, another failure, which made this test flaky)
    garbage = "import sys; sys.stdin.buffer.read(1); sys.stdout.write('garbage, not a frame')"
    monkeypatch.setattr(verify.WalkHelper, "_MAIN", garbage)
    assert _as_sets(verify_tree(src, dst, processes=2)) == expected
    assert "unreadable answer" in caplog.text
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    assert _as_sets(verify_tree(src, dst, processes=2)) == expected


def test_a_split_walk_that_finds_a_clean_tree_reports_it_ok(tmp_path):
    make_archive(tmp_path / "s")
    copy_tree(tmp_path / "s", tmp_path / "d")
    report = verify_tree(tmp_path / "s", tmp_path / "d", processes=2, checksum=True)
    assert report.ok and report.files_checked == 17 and report.metadata_files == 1


def test_a_folder_problem_only_one_part_saw_still_fails_the_walk(tmp_path):
    """Every part lists every folder; one that could not list a folder (say, gone for it
    alone) would leave that folder's files of its part uncounted: merged, the problem
    counts once, whichever parts saw it."""
    parts = [verify.VerifyReport("s", "d", False) for _ in range(3)]
    for i, report in enumerate(parts):
        comparison = verify._Comparison(report, False, None, None, False, part=i, parts=3)
        if i:  # the helpers: part 1 and part 2 could not open folder "x"
            comparison._add_folder_problem("unreadable", ("x", "Input/output error"))
    merged = parts[0]
    merged._merge(parts[1])
    merged._merge(parts[2])
    assert not merged.ok and merged.unreadable == [("x", "Input/output error")]
    assert merged.n_unreadable == 1 and "_folder_problems" not in merged.to_dict()


def test_a_stop_while_a_helper_walks_ends_the_walk_at_once_and_not_ok(tmp_path, monkeypatch):
    """A helper stuck (say, on a hung network mount) must not hold up a stop, and a walk
    stopped before a helper's part came back is incomplete: never ok."""
    make_archive(tmp_path / "s")
    copy_tree(tmp_path / "s", tmp_path / "d")
    monkeypatch.setattr(verify.WalkHelper, "_MAIN", "import time; time.sleep(120)")
    helpers = verify.start_helpers(1)
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()  # (whenever it comes, the outcome is the same)
    began = time.monotonic()
    report = verify_tree(tmp_path / "s", tmp_path / "d", stop=stop, helpers=helpers)
    assert time.monotonic() - began < 10
    assert not report.ok and report.unreadable == [("", "verification interrupted")]
    assert not helpers[0].process.running  # ended, not left behind


def _tricky_copy(tmp_path):
    """Three arrays whose names sort across a folder's boundary ("a", "a.b": "a/..." comes
    between them in the manifest's order), a file beside folders, a name beyond ASCII."""
    src, dst = tmp_path / "s", tmp_path / "d"
    for name in ("a", "a.b", "b"):
        make_archive(src / name)
    (src / "a" / "c" / "0.x").write_bytes(b"beside folders 0 and 1")
    (src / "\u00e9t\u00e9").write_bytes(b"e")
    copy_tree(src, dst)
    return src, dst


def _listed(files):
    return [(rel, info.size, info.mtime_ns, info.stamp) for rel, info in files]


@pytest.mark.parametrize("processes", [1, 2])
def test_the_walks_listing_is_the_copy_in_the_manifests_order(tmp_path, processes):
    """The manifest is made from the final verification's listing, not from a second walk
    of the destination: that listing must be every file of the copy, in the order and with
    the size, mtime and stamp a walk of the destination gives (split between processes,
    each part's folders merged)."""
    src, dst = _tricky_copy(tmp_path)
    (dst / "d-marker").write_bytes(b"m")  # (the marker and the private folder: not listed)
    (dst / STATE_DIR).mkdir()
    (dst / STATE_DIR / "f").write_bytes(b"ours")
    report = verify_tree(src, dst, marker="d-marker", processes=processes, listing=True)
    assert report.ok and report.listing is not None
    spools = list(report.listing.spools)
    assert len(spools) == processes
    dest = LocalDestination(dst, create=False)
    try:
        expected = _listed(sorted_files(dest, "d-marker", True))
    finally:
        dest.close()
    assert len(expected) == report.files_checked == 3 * 17 + 2
    assert _listed(report.listing.files()) == expected
    folder = report.listing.folder
    assert all(os.path.dirname(p) == folder for p in spools)
    report.listing.discard()
    assert not os.path.exists(folder)


def test_a_recheck_adds_what_it_finds_identical_to_the_listing(tmp_path):
    src, dst = _tricky_copy(tmp_path)
    gone = dst / "a.b" / "c" / "1" / "0" / "1"
    gone.unlink()
    report = verify_tree(src, dst, listing=True)
    assert report.missing == ["a.b/c/1/0/1"]
    assert "a.b/c/1/0/1" not in [rel for rel, _ in report.listing.files()]
    shutil.copy2(src / "a.b" / "c" / "1" / "0" / "1", gone)  # (the engine's copy, again)
    done = recheck(report)
    assert done is not None and done.ok
    dest = LocalDestination(dst, create=False)
    try:
        assert _listed(done.listing.files()) == _listed(sorted_files(dest, None, True))
    finally:
        dest.close()
    assert len(done.listing.spools) == 2  # (the walk's and the recheck's, in one folder)
    done.listing.discard()
    assert not os.path.exists(report.listing.folder)


def test_a_listing_gives_its_files_in_path_order_whatever_order_its_blocks_came_in(tmp_path):
    """Blocks in several spools (parts of a walk, rechecks), one folder's files split across
    them and across blocks of one spool, files sorting between subfolders at every level, a
    folder holding only folders: every file once, in `path_key` order; of a name given
    twice, the later spool's row."""
    from napari_softcopy.destinations import FileInfo
    from napari_softcopy.journal_records import path_key
    from napari_softcopy.listing import ListingWriter, spool_folder

    paths = [
        "zarr.json", "a0", "a.b", "0", "a/0", "a/0.x", "a/1/c", "a/1/b", "a/1.5", "a/9",
        "a/10/z", "b/c/d/e", "b/c/d.x", "b/c0", "\u00e9", "a/1/c0/k",
    ]  # fmt: skip
    folder = spool_folder()
    writers = [ListingWriter(folder) for _ in range(3)]
    for n, rel in enumerate(reversed(paths)):  # (scattered: each a block of its own)
        parent, _, name = rel.rpartition("/")
        writers[n % 3].add(parent, name, FileInfo(False, True, len(rel), n))
    writers[2].add("a/1", "b", FileInfo(False, True, 99, 99))  # (again, later: kept)
    listing = writers[0].close()
    for writer in writers[1:]:
        listing = listing.merged(writer.close())
    try:
        got = [(rel, info.size, info.mtime_ns) for rel, info in listing.files()]
    finally:
        listing.discard()
    assert [rel for rel, _, _ in got] == sorted(paths, key=path_key)
    assert dict((rel, size) for rel, size, _ in got)["a/1/b"] == 99
    assert not os.path.exists(folder)
