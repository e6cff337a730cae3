"""The one rule on destinations that keep coarse mtimes or no xattrs: a record at the
destination of what each file was copied from (`destinations.records`) keeps it exact, so a
file is written once unless its source changed, a rerun writes nothing, and verify says
what the copy says. On real mounts: exFAT (1 s, no xattrs, case-insensitive), SFTP through
sshfs (1 s, no xattrs), SMB through rclone mount (1 ms, setxattr EIO)."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mounts import Mount, mounted
from napari_softcopy.destinations import (
    STATE_DIR,
    LocalDestination,
    SourceRecord,
    copy_difference,
    mtime_matches,
)
from napari_softcopy.destinations.records import (
    RECORDS_DIR,
    SourceRecords,
    _parse,
    record_file,
)
from napari_softcopy.transfer import sync_file
from napari_softcopy.verify import verify_tree

COARSE = ("exfat", "sftp", "smb")
#: A source mtime within a second, far enough from its edges that a rewrite 1 us later is
#: in the same second (and the same millisecond) at the destination.
T0 = 1_700_000_000_250_000_000
_roots = itertools.count()


@pytest.fixture(scope="module", params=COARSE)
def mount(request, tmp_path_factory) -> Iterator[Mount]:
    with mounted(request.param, tmp_path_factory.mktemp(request.param), size_mb=64) as m:
        yield m


@pytest.fixture
def pair(mount, tmp_path) -> tuple[Path, Path]:
    source = tmp_path / "src"
    (source / "c" / "0").mkdir(parents=True)
    return source, mount.path / f"dest{next(_roots)}"


def _write(path: Path, data: bytes, mtime_ns: int) -> os.stat_result:
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return os.lstat(path)


def _sync(source: Path, dest: LocalDestination, rel: str):
    fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY)
    try:
        st = os.stat(rel, dir_fd=fd, follow_symlinks=False)
        result = sync_file(
            rel, st, dest, force=False, stop=threading.Event(), src_dir_fd=fd, settle_s=0.0
        ).copy
    finally:
        os.close(fd)
    return result


def test_each_file_is_written_once_and_a_same_size_rewrite_within_the_precision_is_copied(pair):
    source, root = pair
    dest = LocalDestination(root)
    assert dest.capabilities.records, dest.summary
    rel = "c/0/0"
    _write(source / rel, b"version 1", T0)
    assert _sync(source, dest, rel).committed
    assert _sync(source, dest, rel) is None  # unchanged: not written again
    # Rewritten 1 us later with its size unchanged: the copy's mtime there is the new
    # version's too, to the destination's precision (size and mtime cannot tell them apart).
    _write(source / rel, b"version 2", T0 + 1_000)
    precision = dest.capabilities.mtime_precision_ns
    assert mtime_matches(dest.stat(rel).mtime_ns, T0 + 1_000, precision)
    result = _sync(source, dest, rel)
    assert result is not None and result.committed
    with dest.read(rel) as f:
        assert f.read() == b"version 2"
    assert _sync(source, dest, rel) is None
    dest.close()


def test_a_rewrite_with_size_and_mtime_put_back_is_copied_without_xattrs(pair):
    """No xattrs there: the source stamp (inode, ctime) lives in the record."""
    source, root = pair
    dest = LocalDestination(root)
    rel = "c/0/1"
    _write(source / rel, b"aaaa", T0)
    assert _sync(source, dest, rel).committed
    _write(source / rel, b"bbbb", T0)  # same size, mtime put back; the ctime moved
    assert _sync(source, dest, rel).committed
    with dest.read(rel) as f:
        assert f.read() == b"bbbb"
    dest.close()


def test_verify_says_what_the_copy_says_and_a_rerun_writes_nothing(pair):
    source, root = pair
    dest = LocalDestination(root)
    names = [f"c/0/{i}" for i in range(20)]
    for i, rel in enumerate(names):
        _write(source / rel, b"x" * (i + 1), T0 + i * 7_919)
        assert _sync(source, dest, rel).committed
    dest.close()  # (records written)
    report = verify_tree(source, root)
    assert report.ok, list(report.lines())
    # A second run (a new destination object, as a rerun makes) copies nothing.
    again = LocalDestination(root)
    assert [rel for rel in names if _sync(source, again, rel) is not None] == []
    # A same-size rewrite within the precision is a difference for verify too.
    _write(source / names[3], b"y" * 4, T0 + 3 * 7_919 + 1)
    report = verify_tree(source, root)
    assert not report.ok
    assert [rel for rel, _ in report.mismatched] == [names[3]]
    again.close()


def test_a_file_without_a_record_is_compared_within_the_precision(pair):
    """Copied by another tool (or its record lost with a killed run): size and mtime within
    the destination's precision decide, as rclone and rsync --modify-window do."""
    source, root = pair
    dest = LocalDestination(root)
    rel = "c/0/2"
    _write(source / rel, b"data", T0)
    assert _sync(source, dest, rel).committed
    dest.close()
    for name in os.listdir(root / RECORDS_DIR):
        os.unlink(root / RECORDS_DIR / name)
    again = LocalDestination(root)
    assert again.stat(rel).record is None
    assert _sync(source, again, rel) is None
    assert verify_tree(source, root).ok
    again.close()


def test_a_copy_read_back_while_the_destination_uploads_it_stays_a_copy(pair, mount):
    """What the copy's own readers do (the hash journal reads each published file back)
    while a share uploads it: through ``rclone mount`` that open makes the copy show the
    time of the open, until the upload is done. Every look at a copy meanwhile (the rescan,
    the verification, a helper process's) must still judge it a copy, or it is copied again.
    """
    source, root = pair
    dest = LocalDestination(root)
    # Big enough that rclone's upload of each takes a while (the window in which a reader's
    # open moves the mtime), few enough to stay quick.
    names = [f"c/0/{i}" for i in range(4)]
    sources = {}
    for i, rel in enumerate(names):
        sources[rel] = _write(source / rel, os.urandom(3 << 20), T0 + i * 7_919)
        assert _sync(source, dest, rel).committed
    dest.save_records()
    verifier = LocalDestination(root, create=False)  # (a verification's view, records read)
    assert verifier.capabilities == dest.capabilities
    precision = dest.capabilities.mtime_precision_ns
    moved: set[str] = set()
    misjudged: list[str] = []
    stop = threading.Event()

    def read_back() -> None:
        while not stop.is_set():
            for rel in names:
                with open(root / rel, "rb") as f:
                    f.read(1 << 16)

    reader = threading.Thread(target=read_back, daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    try:
        # Until each copy's mtime was seen moved (where the destination moves it) or the
        # deadline: rclone uploads a closed file 5 s after its last close.
        while time.monotonic() < deadline and len(moved) < len(names):
            for rel in names:
                for judge in (dest, verifier):
                    info = judge.stat(rel)
                    if not mtime_matches(info.mtime_ns, sources[rel].st_mtime_ns, precision):
                        moved.add(rel)
                    why = copy_difference(sources[rel], info, judge.capabilities)
                    if why is not None:
                        misjudged.append(f"{rel}: {why} (mtime {info.mtime_ns})")
            if dest.capabilities.stable_mtime and time.monotonic() > deadline - 25:
                break  # (a stable destination: 5 s of reading is enough to show it)
    finally:
        stop.set()
        reader.join(10)
    assert not misjudged, misjudged[:5]
    if not dest.capabilities.stable_mtime:  # else nothing moved, nothing was tested
        assert moved, f"no mtime moved on {mount.kind} while its copies were read back"
    else:
        assert not moved, f"{mount.kind} moved {sorted(moved)} but says its mtimes are stable"
    verifier.close()
    dest.close()
    assert verify_tree(source, root).ok


# -- the record files themselves (any filesystem) --------------------------------------------
@pytest.fixture
def root_fd(tmp_path) -> Iterator[int]:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


def test_records_are_batched_per_folder_and_read_back(tmp_path, root_fd):
    records = SourceRecords(root_fd)
    record = SourceRecord(10, T0, b"12:34")
    for i in range(100):
        records.add(f"a/b/{i}", record, T0)
    records.add("top", record, T0)
    assert records.lookup("a/b/5", T0) == record  # (held in memory until written)
    records.flush()
    files = sorted(os.listdir(tmp_path / RECORDS_DIR))
    assert files == sorted(Path(record_file(d)).name for d in ("a/b", ""))
    fresh = SourceRecords(root_fd, writable=False)
    assert fresh.lookup("a/b/99", T0) == record
    assert fresh.lookup("a/b/99", T0 + 1) is None  # changed there since: not trusted
    assert fresh.lookup("top", T0) == record


def test_a_torn_or_glued_line_is_dropped_not_misread(tmp_path, root_fd):
    records = SourceRecords(root_fd)
    records.add("d/x", SourceRecord(1, T0), T0)
    records.add("d/y", SourceRecord(2, T0), T0)
    records.flush()
    path = tmp_path / record_file("d")
    text = path.read_text()
    # A crash tore the last line; the next run appended after the torn part.
    path.write_text(text[:-9])
    records = SourceRecords(root_fd)
    records.add("d/z", SourceRecord(3, T0), T0)
    records.flush()
    assert set(_parse(path.read_text())[0]) == {"x"}  # y torn, z glued to it: both dropped
    records.add("d/z", SourceRecord(3, T0), T0)
    records.flush()
    assert set(_parse(path.read_text())[0]) == {"x", "z"}


def test_names_with_tabs_and_newlines_round_trip(root_fd):
    records = SourceRecords(root_fd)
    odd = "a\tb\nc\\d"
    records.add(f"f/{odd}", SourceRecord(1, T0), T0)
    records.flush()
    assert SourceRecords(root_fd).lookup(f"f/{odd}", T0) == SourceRecord(1, T0)


def test_a_record_file_of_rewrites_is_compacted_when_read(tmp_path, root_fd):
    records = SourceRecords(root_fd)
    for version in range(500):  # a shard rewritten 500 times
        records.add("s/shard", SourceRecord(version, T0 + version), T0)
    records.flush()
    path = tmp_path / record_file("s")
    assert path.read_text().count("\n") == 500
    fresh = SourceRecords(root_fd)
    assert fresh.lookup("s/shard", T0) == SourceRecord(499, T0 + 499)
    assert path.read_text().count("\n") == 1
    assert [n for n in os.listdir(tmp_path / RECORDS_DIR)] == [path.name]  # no temp left


def test_the_records_folder_is_not_part_of_the_copy(tmp_path):
    dest = LocalDestination(tmp_path / "d")
    (tmp_path / "d" / STATE_DIR).mkdir(exist_ok=True)  # (the copy's record of its probe)
    (tmp_path / "d" / "zarr.json").write_text("{}")
    assert set(dest.listdir("")) == {"zarr.json"}
    dest.close()


def test_a_slow_record_write_holds_up_no_copy_and_no_read(tmp_path, root_fd):
    """On a network share a record file's write is a round trip or more: the copy threads'
    `add`, and the finish's walk reading a folder's records, must not wait for it."""
    records = SourceRecords(root_fd)
    record = SourceRecord(10, T0, None)
    records.add("slow/a", record, T0)
    records.add("other/b", record, T0)
    records.add("third/e", record, T0)
    records.flush()
    assert records.lookup("other/b", T0) == record  # (read back: now in memory)
    records.add("slow/c", record, T0)
    records.add("third/f", record, T0)  # (being written while "third" is read)
    # The record file of "slow" is a FIFO now: appending to it blocks until it is read,
    # as a write to a share that does not answer for a while (real, no mock).
    path = tmp_path / record_file("slow")
    path.unlink()
    os.mkfifo(path)
    flushing = threading.Thread(target=records.flush, daemon=True)
    flushing.start()
    written = b""
    try:
        deadline = time.monotonic() + 10
        while records._n_pending and time.monotonic() < deadline:  # (the flush took them)
            time.sleep(0.005)
        done, seen = threading.Event(), {}

        def meanwhile() -> None:
            records.add("other/d", record, T0)  # a copy thread publishing elsewhere
            seen["other/b"] = records.lookup("other/b", T0)
            seen["third/e"] = records.lookup("third/e", T0)  # (not in memory: read)
            seen["third/f"] = records.lookup("third/f", T0)  # (in the flush's hands)
            done.set()

        threading.Thread(target=meanwhile, daemon=True).start()
        assert done.wait(10), "a copy or a read waited for another folder's record write"
        assert flushing.is_alive()  # (still blocked in the write: the test tested it)
        assert set(seen.values()) == {record}, seen
    finally:
        with open(path, "rb") as fifo:  # let the write through
            written = fifo.read()
        flushing.join(10)
    assert written.startswith(b"c\t10\t")
    assert not flushing.is_alive()
    records.flush()
    fresh = SourceRecords(root_fd, writable=False)
    assert fresh.lookup("other/d", T0) == record
    assert fresh.lookup("third/f", T0) == record
