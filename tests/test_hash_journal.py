"""The hash journal (`napari_softcopy.hashes`): the manifest's hashes computed during the
copy, so that the finish hashes only the files the journal holds no current hash of. Real
writers, the real engine, a real kill -9; every manifest is compared with one computed from
scratch (every file read back and hashed)."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import blake3
import pytest

from faults_support import make_archive
from napari_softcopy import hashes
from napari_softcopy.assembly import assemble
from napari_softcopy.destinations import STATE_DIR, LocalDestination
from napari_softcopy.hashes import FANIN, JOURNAL, SEGMENT, HashJournal
from napari_softcopy.journal_records import FreshRecords, JournalRecord, parse_record
from napari_softcopy.manifest import check_manifest
from napari_softcopy.platform import Notices
from napari_softcopy.simulate import simulate
from napari_softcopy.transfer import copy_file
from support import assert_manifest_is_fresh, engine, wait_for

# The engine alone in a process of its own, killed there (the CLI would run it in another).
_COPY_IN_CHILD = """
import sys
from napari_softcopy import CopyEngine, CopyOptions
CopyEngine(sys.argv[1], sys.argv[2], CopyOptions(low_priority=False)).start()
sys.stdin.read()
"""


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    path = tmp_path / "state"
    monkeypatch.setenv("NAPARI_SOFTCOPY_STATE_DIR", str(path))
    return path


@pytest.fixture
def manifest_log(caplog):
    caplog.set_level(logging.INFO, logger="napari_softcopy.manifest")
    return caplog


def assembled_counts(caplog) -> tuple[int, int, int]:
    """(files, hashes from the journal, files hashed at the finish) of the last manifest."""
    for record in reversed(caplog.records):
        found = re.search(
            r"manifest of (\d+) files.*: (\d+) hashes from the copy's journal[^,]*, (\d+) files",
            record.getMessage(),
        )
        if found:
            return tuple(map(int, found.groups()))
    raise AssertionError("no manifest was logged")


def segments(dst: Path) -> list[Path]:
    return sorted(dst.glob(f"{JOURNAL}*{SEGMENT}"))


def journal_records(dst: Path) -> list[JournalRecord]:
    """Every record of the journal's segments that parses."""
    lines = [line for p in segments(dst) for line in p.read_bytes().splitlines(keepends=True)]
    return [r for r in map(parse_record, lines) if r is not None]


def test_manifest_after_a_live_copy_equals_one_from_scratch(tmp_path, manifest_log):
    """A tensorstore acquisition copied live: its manifest, made mostly from the journal, is
    the one every file read back gives; the journal is gone once the marker is written."""
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    writer = threading.Thread(target=simulate, args=(src, "demo"), daemon=True)
    writer.start()
    wait_for(lambda: (src / "zarr.json").exists(), what="the writer to start")
    e = engine(src, dst, finish_quiet=0.5)
    try:
        writer.join(120)
        assert e.wait(120) and e.status().state == "verified", e.status().message
    finally:
        e.stop()
    entries = assert_manifest_is_fresh(dst)
    files, from_journal, hashed = assembled_counts(manifest_log)
    assert files == len(entries) > 100
    # Every file was hashed as it was copied (none read back, during the copy or after).
    assert (from_journal, hashed) == (files, 0)
    assert os.listdir(dst / STATE_DIR) == ["manifest.jsonl"], "the journal outlived the manifest"


def test_a_file_rewritten_after_its_hash_was_recorded_gets_its_new_hash(tmp_path, manifest_log):
    """The hardest rewrite: same size, mtime put back (only the stamp differs)."""
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    chunks = make_archive(src, n_chunks=40, chunk_bytes=8 * 1024, marker=False)
    rel = sorted(chunks)[3]
    e = engine(src, dst)
    try:
        wait_for(
            lambda: sum(r.rel == rel and bool(r.digest) for r in journal_records(dst)),
            what="the chunk's hash in the journal",
        )
        st = os.stat(src / rel)
        new = bytes(b ^ 0xFF for b in chunks[rel])
        (src / rel).write_bytes(new)
        os.utime(src / rel, ns=(st.st_atime_ns, st.st_mtime_ns))
        wait_for(lambda: (dst / rel).read_bytes() == new, what="the rewrite's copy")
        e.finish(force=True)
        assert e.wait(60) and e.status().state == "verified", e.status().message
    finally:
        e.stop()
    entries = assert_manifest_is_fresh(dst)
    assert entries[rel].digest == blake3.blake3(new).hexdigest()
    files, from_journal, _hashed = assembled_counts(manifest_log)
    assert from_journal >= files // 2, "the copy's hashes were not used"


def test_kill_9_then_resume_gives_the_right_manifest(tmp_path, manifest_log):
    """A copy killed once its journal holds hashes; meanwhile one chunk is rewritten with its
    size and mtime put back, one grows, and a journal segment ends in a torn line. The
    resumed copy reuses the earlier run's hashes where they still hold, and only there."""
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    chunks = make_archive(src, n_chunks=60, chunk_bytes=8 * 1024, marker=False)
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen(
        [sys.executable, "-c", _COPY_IN_CHILD, str(src), str(dst)], env=env, stdin=subprocess.PIPE
    )
    try:
        wait_for(
            lambda: sum(bool(r.digest) for r in journal_records(dst)) >= len(chunks),
            what="the journal to hold every chunk's hash",
        )
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    same, grown = sorted(chunks)[5], sorted(chunks)[6]
    st = os.stat(src / same)
    (src / same).write_bytes(bytes(b ^ 0x5A for b in chunks[same]))
    os.utime(src / same, ns=(st.st_atime_ns, st.st_mtime_ns))
    (src / grown).write_bytes(chunks[grown] + b"more")
    segment = segments(dst)[0]
    with open(segment, "ab") as f:
        f.write(b'"c/0"\t9\t8192\t1\t""\t00')  # (torn)
    e = engine(src, dst)
    try:
        e.finish(force=True)
        assert e.wait(60) and e.status().state == "verified", e.status().message
    finally:
        e.stop()
    entries = assert_manifest_is_fresh(dst)
    assert entries[same].digest == blake3.blake3((src / same).read_bytes()).hexdigest()
    assert entries[grown].size == len(chunks[grown]) + 4
    _files, from_journal, _hashed = assembled_counts(manifest_log)
    assert from_journal >= len(chunks) - 2, "the earlier run's hashes were not used"


def _copy(src: Path, dest: LocalDestination, rel: str, journal: HashJournal) -> None:
    result = copy_file(str(src / rel), dest, rel, stop=threading.Event())
    assert result.committed
    journal.published(rel, result.size, result.mtime_ns, result.stamp)


def test_the_finish_hashes_only_the_files_the_journal_holds_no_current_hash_of(tmp_path):
    """Counted, not timed. No stamps here (as on a destination without extended attributes):
    a version rewritten with its size and mtime put back differs from the last one hashed
    only by the order of publishes, and a publish the hasher could not take (queue full)
    leaves an invalidation, so the older hash is not reused."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for i in range(30):
        (src / f"f{i:02d}").write_bytes(os.urandom(1000 + i))
    dest = LocalDestination(dst, xattrs=False)
    try:
        first = HashJournal(dest, low_priority=False)
        first.start()
        for i in range(30):
            _copy(src, dest, f"f{i:02d}", first)
        wait_for(lambda: first.hashed == 30, what="every file hashed")
        first.close()
        # A second run whose hasher is behind: its queue holds one file.
        second = HashJournal(dest, low_priority=False, queue_size=1)
        assert second.run == first.run + 1
        (src / "new").write_bytes(b"new file")
        _copy(src, dest, "new", second)  # (queued, never hashed: no thread runs)
        st = os.stat(src / "f07")
        (src / "f07").write_bytes(os.urandom(st.st_size))
        os.utime(src / "f07", ns=(st.st_atime_ns, st.st_mtime_ns))
        _copy(src, dest, "f07", second)  # (queue full: invalidated)
        done = assemble(dest, source=str(src), marker=None, journal=second)
    finally:
        dest.close()
    assert (done.files, done.from_journal, done.hashed) == (31, 29, 2)
    entries = assert_manifest_is_fresh(dst)
    assert entries["f07"].digest == blake3.blake3((src / "f07").read_bytes()).hexdigest()


def _copy_hashed(src: Path, dest: LocalDestination, rel: str, journal: HashJournal) -> None:
    result = copy_file(str(src / rel), dest, rel, stop=threading.Event(), digest=True)
    assert result.committed
    journal.published(rel, result.size, result.mtime_ns, result.stamp, result.digest)


def test_the_records_kept_in_memory_are_each_paths_latest_and_the_rest_read_back(
    tmp_path, monkeypatch
):
    """This run's records kept in memory (`HashJournal.fresh`): a background hash of an
    earlier publish that comes after a later one does not replace the later's; beyond
    `FRESH_MAX` the oldest are dropped (said once in the copy's notices), and the finish
    takes theirs from the segments. The manifest is right either way, no file read back."""
    monkeypatch.setattr(hashes, "FRESH_MAX", 10)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for i in range(30):
        (src / f"f{i:02d}").write_bytes(os.urandom(1000 + i))
    dest = LocalDestination(dst)
    try:
        journal = HashJournal(dest, low_priority=False, flush_s=0.0)
        _copy(src, dest, "f29", journal)  # (no hash of its bytes: queued, no thread yet)
        (src / "f29").write_bytes(os.urandom(2000))
        notices = Notices()
        for i in range(30):
            notices.thread_target(lambda i=i: _copy_hashed(src, dest, f"f{i:02d}", journal))()
        # Said once, not silently: the finish reads the dropped ones back from the segments.
        [line] = notices.lines()
        assert "more than 10 files copied" in line
        assert "reads the other files' hashes back from the hash journal" in line
        latest = journal.fresh()["f29"]
        journal.start()  # (hashes the queued, older publish of f29: an older record)
        wait_for(
            lambda: any(r.rel == "f29" and not r.digest for r in journal_records(dst)),
            what="the older publish's record (an invalidation: the file changed since)",
        )
        assert len(journal.fresh()) == 10 and journal.fresh_dropped == 20
        assert journal.fresh()["f29"] == latest and latest.digest
        done = assemble(dest, source=str(src), marker=None, journal=journal)
        journal.discard()
    finally:
        dest.close()
    assert (done.files, done.from_journal, done.hashed) == (30, 30, 0)
    assert_manifest_is_fresh(dst)


def test_a_listings_files_without_records_in_memory_take_theirs_from_one_read_of_the_segments(
    tmp_path, monkeypatch
):
    """The finish's manifest from a verification's listing: the files whose records were
    dropped from memory take theirs from the segments, looked up all at once after the
    others (`HashJournal.find`: each segment read once, only their lines parsed), or past
    `assembly.DEFER_MAX` from the merged stream as before: the same manifest, each file's
    latest record (an invalidation where the file changed since a hash; a non-ASCII name as
    the segments escape it), no file read back that the journal holds a hash of."""
    from napari_softcopy import assembly
    from napari_softcopy.verify import verify_tree

    monkeypatch.setattr(hashes, "FRESH_MAX", 10)
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "d").mkdir(parents=True)
    names = [f"d/f{i:02d}" for i in range(29)] + ["d/\u00e9t\u00e9"]
    for rel in names:
        (src / rel).write_bytes(os.urandom(1000 + len(rel)))
    dest = LocalDestination(dst)
    try:
        journal = HashJournal(dest, low_priority=False, flush_s=0.0)
        notices = Notices()
        for rel in names:
            notices.thread_target(lambda rel=rel: _copy_hashed(src, dest, rel, journal))()
        (src / "d/f03").write_bytes(b"changed")  # (copied again: its hash still to come)
        _copy(src, dest, "d/f03", journal)
        journal.close()  # (the queued publish: an invalidation, its latest record)
        assert journal.fresh_dropped > 0
        found = journal.find({"d/f00", "d/f03", "d/\u00e9t\u00e9", "d/none"})
        assert set(found) == {"d/f00", "d/f03", "d/\u00e9t\u00e9"}
        assert found["d/f00"].digest and not found["d/f03"].digest
        report = verify_tree(src, dst, marker=None, stamps=True, listing=True)
        assert report.ok, report.summary()
        runs = []
        for defer_max in (assembly.DEFER_MAX, 3):
            monkeypatch.setattr(assembly, "DEFER_MAX", defer_max)
            done = assemble(
                dest, source=str(src), marker=None, journal=journal, listing=report.listing
            )
            runs.append(
                ((done.files, done.from_journal, done.hashed), assert_manifest_is_fresh(dst))
            )
        report.listing.discard()
        journal.discard()
    finally:
        dest.close()
    (counts, entries), (counts_streamed, entries_streamed) = runs
    assert counts == counts_streamed == (30, 29, 1)  # (d/f03 read back: no current hash)
    assert entries == entries_streamed


def test_segments_are_merged_in_the_background_keeping_the_latest_record(tmp_path):
    """Many small batches: the segments are merged as they gather (a bounded number of files
    however long the copy), and the manifest is still right."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dest = LocalDestination(dst)
    try:
        journal = HashJournal(dest, low_priority=False, flush_s=0.0)
        journal.start()
        for i in range(80):
            (src / f"f{i % 20:02d}").write_bytes(os.urandom(500 + i))  # (each copied 4 times)
            _copy(src, dest, f"f{i % 20:02d}", journal)
            wait_for(lambda n=i + 1: journal.hashed == n, what="the file hashed")
        done = assemble(dest, source=str(src), marker=None, journal=journal)
        merged = segments(dst)
        journal.discard()
    finally:
        dest.close()
    assert (done.files, done.from_journal) == (20, 20)
    assert len(merged) < 20, "segments were not merged"
    assert any(p.name.startswith("hashes-1-") for p in merged)
    assert_manifest_is_fresh(dst)
    assert segments(dst) == []


def test_the_finish_writes_its_last_segment_without_merging(tmp_path):
    """The finish's flush (`paused`) writes the last records as a segment of their own and
    merges nothing, even where that segment is a level's `FANIN`-th: `latest` merges the
    segments in memory right after (a merge first read and wrote them all once more)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dest = LocalDestination(dst)
    try:
        journal = HashJournal(dest, low_priority=False, flush_s=0.0)
        journal.start()
        for i in range(FANIN - 1):  # (one segment each: flushed at once, flush_s=0)
            (src / f"f{i:02d}").write_bytes(os.urandom(500 + i))
            _copy(src, dest, f"f{i:02d}", journal)
            wait_for(lambda n=i + 1: len(segments(dst)) == n, what="the file's segment")
        journal._closing.set()  # (the thread stops at its next look: the finish's flush only)
        journal._thread.join(5.0)
        (src / "last").write_bytes(os.urandom(700))
        result = copy_file(str(src / "last"), dest, "last", stop=threading.Event(), digest=True)
        journal.published("last", result.size, result.mtime_ns, result.stamp, result.digest)
        with journal.paused():
            names = [p.name for p in segments(dst)]
            latest = list(journal.latest())
        journal.discard()
    finally:
        dest.close()
    assert len(names) == FANIN and all(n.startswith("hashes-0-") for n in names), names
    assert [r.rel for r in latest] == [f"f{i:02d}" for i in range(FANIN - 1)] + ["last"]
    assert latest[-1].digest == blake3.blake3((src / "last").read_bytes()).hexdigest()


def test_a_full_destination_holds_the_journals_records_until_it_can_write_them(tmp_path, caplog):
    """A real full disk (a tmpfs): the journal's write is refused, its records are kept (not
    given up: the finish would then hash every file) and written once there is room; the
    finish's flush (`paused`) raises meanwhile, so that the finish waits and asks again."""
    from faults_support import tmpfs

    caplog.set_level(logging.INFO, logger="napari_softcopy.hashes")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("f0", "f1", "late"):
        (src / name).write_bytes(os.urandom(1000))
    notices = Notices()  # (the journal's thread reports to those of its starter's copy)
    latest = {}

    def copy_while_the_disk_fills(disk: Path) -> None:
        dest = LocalDestination(disk / "dst")
        journal = HashJournal(dest, low_priority=False, flush_s=0.0)
        journal.start()
        try:
            for rel in ("f0", "f1"):
                _copy_hashed(src, dest, rel, journal)
            wait_for(lambda: len(journal_records(disk / "dst")) == 2, what="a first segment")
            late = copy_file(str(src / "late"), dest, "late", stop=threading.Event(), digest=True)
            with open(disk / "filler", "wb") as f, pytest.raises(OSError, match="No space"):
                while True:  # (the disk full)
                    f.write(os.urandom(1 << 16))
                    f.flush()
            journal.published("late", late.size, late.mtime_ns, late.stamp, late.digest)
            wait_for(lambda: "keeps its records" in caplog.text, what="the write refused")
            assert journal.broken is None and notices.lines() == []
            with pytest.raises(OSError, match="No space"), journal.paused():
                pass
            (disk / "filler").unlink()  # (room again)
            wait_for(lambda: len(journal_records(disk / "dst")) == 3, what="the records written")
            with journal.paused():
                latest.update((r.rel, r.digest) for r in journal.latest())
            journal.discard()
        finally:
            journal.close()
            dest.close()

    with tmpfs(tmp_path / "disk", "1m") as disk:
        notices.thread_target(lambda: copy_while_the_disk_fills(disk))()
    assert latest == {
        rel: blake3.blake3((src / rel).read_bytes()).hexdigest() for rel in ("f0", "f1", "late")
    }
    assert notices.lines() == []


def test_a_record_of_an_earlier_run_stands_only_for_the_version_it_hashed(tmp_path):
    """A killed run may have published a version it never recorded: here a rewrite with size
    and mtime put back, copied without a record. The stamp on the copy (the source's inode
    and ctime) is not the recorded one, so the next run hashes the file again."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for name in ("a", "b"):
        (src / name).write_bytes(os.urandom(2000))
    dest = LocalDestination(dst)
    try:
        first = HashJournal(dest, low_priority=False)
        first.start()
        for name in ("a", "b"):
            _copy(src, dest, name, first)
        wait_for(lambda: first.hashed == 2, what="both files hashed")
        st = os.stat(src / "a")
        (src / "a").write_bytes(os.urandom(st.st_size))
        os.utime(src / "a", ns=(st.st_atime_ns, st.st_mtime_ns))
        assert copy_file(str(src / "a"), dest, "a", stop=threading.Event()).committed
        first.close()  # (the record of that copy lost, as in a kill)
        done = assemble(dest, source=str(src), marker=None, journal=HashJournal(dest))
    finally:
        dest.close()
    assert (done.files, done.from_journal, done.hashed) == (2, 1, 1)
    entries = assert_manifest_is_fresh(dst)
    assert entries["a"].digest == blake3.blake3((src / "a").read_bytes()).hexdigest()


@pytest.mark.parametrize("xattrs", [True, False])
def test_a_local_file_is_hashed_through_its_descriptor_as_through_the_interface(tmp_path, xattrs):
    """The hasher's local path (`HashJournal._hash_local`: the file opened once in its
    folder's kept descriptor, described by that descriptor) records what the `Destination`
    interface's stat, read and stat again record; a file that is no longer the version
    published (another size, another mtime, gone, a folder) is not hashed by either."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "a" / "b").mkdir(parents=True)
    for rel, size in (("a/b/x", 5000), ("a/b/y", 0), ("a/z", 3 << 20), ("top", 17)):
        (src / rel).write_bytes(os.urandom(size))
    dest = LocalDestination(dst, xattrs=xattrs)
    try:
        journal = HashJournal(dest, low_priority=False)
        assert journal._folders is not None
        for rel in ("a/b/x", "a/b/y", "a/z", "top", "a/b/x"):  # (back to a folder left)
            result = copy_file(str(src / rel), dest, rel, stop=threading.Event())
            size, mtime = result.size, result.mtime_ns
            local = journal._hash_local(rel, size, mtime)
            assert local == journal._hash_by_path(rel, size, mtime)
            assert local is not None
            assert local[2] == blake3.blake3((src / rel).read_bytes()).hexdigest()
            assert (local[1] != "") == xattrs  # (the stamp, where the copy records one)
            assert journal._hash_local(rel, size + 1, mtime) is None
            assert journal._hash_local(rel, size, mtime + 10**9) is None
        os.unlink(dst / "top")
        with pytest.raises(FileNotFoundError):
            journal._hash_local("top", 17, 0)
        assert journal._hash_local("a/b", 0, 0) is None  # (a folder is not a file)
        journal._folders.close()
    finally:
        dest.close()


def test_the_manifest_names_the_bytes_copied_not_what_the_destination_returns(tmp_path):
    """Hashed as copied: a destination that stores something else than it was given (here a
    byte flipped in the copy just after its publish, size and mtime kept) is caught by a
    check against the manifest, because the manifest holds the hash of the source's bytes.
    (A hash read back from the destination would have recorded the wrong bytes as right.)"""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    data = {f"c/{i}": os.urandom(3000 + i) for i in range(5)}
    (src / "c").mkdir()
    for rel, payload in data.items():
        (src / rel).write_bytes(payload)
    dest = LocalDestination(dst)
    try:
        journal = HashJournal(dest, low_priority=False)
        journal.start()
        for rel in data:
            result = copy_file(str(src / rel), dest, rel, stop=threading.Event(), digest=True)
            assert result.digest == blake3.blake3(data[rel]).hexdigest()
            if rel == "c/2":  # (the destination keeps another byte than it was handed)
                st = os.stat(dst / rel)
                with open(dst / rel, "r+b") as f:
                    f.seek(100)
                    f.write(bytes([data[rel][100] ^ 0x01]))
                os.utime(dst / rel, ns=(st.st_atime_ns, st.st_mtime_ns))
            journal.published(rel, result.size, result.mtime_ns, result.stamp, result.digest)
        done = assemble(dest, source=str(src), marker=None, journal=journal)
        assert (done.files, done.from_journal, done.hashed) == (5, 5, 0)
        assert journal.hashed == 0, "a copy hashed as copied was read back as well"
        journal.discard()
        check = check_manifest(dest)
    finally:
        dest.close()
    assert not check.ok
    assert check.summary().count("1 of other content") == 1, check.summary()


def test_a_record_stands_for_a_listed_file_only_with_the_stamp_it_names():
    """`assembly._reusable`: where the destination keeps stamps, a file listed without one
    (or with another) does not take the hash of a stamped version; where it keeps none, the
    one rule's size and mtime decide."""
    from napari_softcopy.assembly import _reusable
    from napari_softcopy.destinations import Capabilities, FileInfo
    from napari_softcopy.journal_records import JournalRecord, path_key

    key = path_key("c/0")
    record = JournalRecord(key, 1, "c/0", 10, 1_000, "7:9", "ab" * 32)
    stamped, plain = Capabilities(xattrs=True), Capabilities(xattrs=False)
    assert _reusable(record, key, FileInfo(False, True, 10, 1_000, b"7:9"), stamped)
    assert not _reusable(record, key, FileInfo(False, True, 10, 1_000, b"7:8"), stamped)
    assert not _reusable(record, key, FileInfo(False, True, 10, 1_000, None), stamped)
    assert _reusable(record, key, FileInfo(False, True, 10, 1_000, None), plain)
    assert not _reusable(record, key, FileInfo(False, True, 10, 1_001, None), plain)
    assert not _reusable(record, key, FileInfo(False, True, 11, 1_000, None), plain)


def test_a_record_reads_back_as_written_and_a_torn_one_is_dropped():
    """Any path (quotes, backslashes, tabs, newlines, non-ASCII, undecodable bytes) reads
    back; a line cut short anywhere is dropped, never read as another record (a cut in a
    number would otherwise give another sequence or size); a segment of the earlier JSON
    form still reads."""
    from napari_softcopy.journal_records import path_key

    for rel in ["c/0/1", 'a"b\\c/\tx\ny', "é/ü", "bad\udcff/name"]:
        for record in (
            JournalRecord(
                path_key(rel),
                1 << 40 | 12345,
                rel,
                4608,
                1_700_000_000_123_456_789,
                "123:456",
                "ab" * 32,
            ),
            JournalRecord(path_key(rel), 1 << 40 | 12346, rel),
        ):
            line = record.line()
            assert parse_record(line) == record
            assert all(parse_record(line[:cut]) is None for cut in range(len(line)))
    glued = b'"c/' + JournalRecord(path_key("c/1"), 10, "c/1", 1, 2, "3:4", "0" * 64).line()
    assert parse_record(glued) is None  # (a torn line glued to the next by a crash)
    old = b'{"p": "c/0", "q": 9, "s": 1, "m": 2, "t": "3:4", "b3": "' + b"0" * 64 + b'"}\n'
    assert parse_record(old) == JournalRecord(path_key("c/0"), 9, "c/0", 1, 2, "3:4", "0" * 64)


def test_records_kept_in_memory_are_packed_and_read_back_as_kept():
    """Issue 22 item 2: `FreshRecords` keeps a record as one packed bytes object a path
    (under 260 bytes a record with its path and the dict's entry, by tracemalloc: 544 as a
    tuple), and gives back exactly the record kept: odd paths and stamps, an invalidation,
    a digest that is not lowercase hex (kept as it is), the latest by sequence, a forget
    only of the very record kept."""
    import tracemalloc

    from napari_softcopy.journal_records import FreshRecords, path_key

    fresh = FreshRecords(100)
    records = []
    for i, rel in enumerate(["c/0/1", 'a"b\\c/\tx\ny', "é/ü", "bad\udcff/name", "up/per"]):
        digest = ("AB" * 32) if rel == "up/per" else os.urandom(32).hex()
        stamp = "123:456\udcff" if i == 3 else f"{i}:1700000000123456789"
        records.append(JournalRecord(path_key(rel), 1 << 40 | i, rel, i, -1 - i, stamp, digest))
    records.append(JournalRecord(path_key("gone/0"), 1 << 40 | 9, "gone/0"))  # (invalidation)
    for record in records:
        assert not fresh.keep(record)
    assert [fresh[r.rel] for r in records] == records and len(fresh) == len(records)
    older = records[0]._replace(seq=1)
    assert not fresh.keep(older) and fresh.get("c/0/1") == records[0]  # (a later one kept)
    fresh.forget([older])  # (not the record kept: stays)
    assert "c/0/1" in fresh
    fresh.forget([records[0]])
    assert fresh.get("c/0/1") is None and len(fresh) == len(records) - 1

    n = 4096
    rels = [f"c/{i // 2000}/{i // 100 % 20}/{i // 10 % 10}/{i % 10}/0" for i in range(n)]
    tracemalloc.start()
    try:
        big = FreshRecords(n)
        base = tracemalloc.get_traced_memory()[0]
        for i, rel in enumerate(rels):
            digest, stamp = os.urandom(32).hex(), f"{1_000_000 + i}:{1_733_500_000_123_456_789 + i}"
            big.keep(JournalRecord(path_key(rel), i, rel, 4600, 1_733_500_000_1, stamp, digest))
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert held / n < 260, f"{held / n:.0f} bytes a record"


def test_records_dropped_say_where_the_finish_takes_their_hashes():
    notices, records = Notices(), FreshRecords(2)
    dropped = [records.keep(JournalRecord(f"k{i}", i, f"f{i}", 1, 1, "", "")) for i in range(3)]
    assert dropped == [False, False, True]
    notices.thread_target(records.say_dropped)()
    [line] = notices.lines()
    assert line.startswith("keeping the manifest's hashes in memory is off: more than 2 files")
    assert "back from the hash journal" in line
