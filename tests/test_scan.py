"""The engine's resume scan (`engine.scan`) over a real tree and its real copy."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from napari_softcopy import CopyEngine, CopyOptions, scan_walk
from napari_softcopy.destinations import LocalDestination
from napari_softcopy.engine import Tuning
from napari_softcopy.engine import scan as engine_scan
from napari_softcopy.transfer import copy_file
from support import assert_identical, engine, wait_for

FILES = 200


@pytest.fixture
def copied(tmp_path):
    """A finished archive of `FILES` chunk files in 10 folders, and its copy made by the
    engine's own `copy_file` (mtimes kept, source stamps recorded)."""
    src, dst = tmp_path / "a.zarr", tmp_path / "c.zarr"
    src.mkdir()
    (src / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group"}))
    rels = ["zarr.json"]
    for i in range(FILES):
        folder = src / "c" / str(i // 20)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / str(i % 20)).write_bytes(os.urandom(100 + i))
        rels.append(f"c/{i // 20}/{i % 20}")
    dest = LocalDestination(dst)
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for rel in rels:
            assert copy_file(rel, dest, rel, stop=threading.Event(), src_dir_fd=fd).committed
    finally:
        os.close(fd)
        dest.close()
    return src, dst


def _scan(src, dst, *, deep: bool = False) -> list[str]:
    """One scan of the engine over ``src`` and its copy ``dst``: the paths it queued."""
    engine = _scanned(src, dst, deep=deep)
    assert engine._counters.files_at_destination == FILES + 1
    return engine.queued


def _scanned(src, dst, *, deep: bool = False, split_after_s: float = float("inf")) -> CopyEngine:
    """The engine after one first scan (split from ``split_after_s`` on); what it queued, in
    order of path, as its ``queued``."""
    tuning = Tuning(scan_split_after_s=split_after_s)
    engine = CopyEngine(src, dst, CopyOptions(), tuning=tuning)
    engine._dest = LocalDestination(dst, create=False)
    engine._src_fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    try:
        engine._scan(initial=True, deep=deep)
        queued = []
        while (item := engine._pending.take(timeout=0)) is not None:
            queued.append(item.path)
        engine.queued = sorted(queued)
        return engine
    finally:
        os.close(engine._src_fd)
        engine._dest.close()


def test_a_resume_scan_asks_the_one_rule_only_about_files_that_may_differ(copied, monkeypatch):
    """A current copy's file (the source's size, its exact mtime) is settled without the
    rule's three calls; a file of another size or mtime still goes to the rule."""
    src, dst = copied
    (src / "c/0/1").write_bytes(b"another size")
    st = os.stat(src / "c/0/2")
    os.utime(src / "c/0/2", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    asked = []

    def counting(source, copy, capabilities, read_stamp=None):
        asked.append(copy)
        return real(source, copy, capabilities, read_stamp)

    real = scan_walk.is_copy_of
    monkeypatch.setattr(scan_walk, "is_copy_of", counting)
    assert _scan(src, dst) == ["c/0/1", "c/0/2"]
    assert len(asked) == 2  # (before: one call for each of the 201 files)


def test_a_deep_scan_still_finds_a_rewrite_with_size_and_mtime_put_back(copied):
    """The shortcut is for ordinary scans only: a deep scan compares every stamp."""
    src, dst = copied
    path = src / "c/3/4"
    st, data = os.stat(path), path.read_bytes()
    path.unlink()
    path.write_bytes(data[::-1])  # (a new inode: another version, same size)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _scan(src, dst) == []
    assert _scan(src, dst, deep=True) == ["c/3/4"]


def _found(engine: CopyEngine) -> dict:
    """What a scan found and did, to compare two scans of the same trees."""
    c = engine._counters
    return {
        "queued": engine.queued,
        "counts": (c.files_at_destination, c.bytes_at_destination, c.chunks_at_destination),
        "temp": c.temp_files,
        "errors": sorted((e["path"], e["message"]) for e in c.errors),
        "newest": engine._newest_ctime_ns,
        "scans": c.scans,
    }


def _mixed(src, dst) -> None:
    """Every kind of name a scan handles, in each of two top folders (``c``, ``d``): a split
    scan hands one of them whole to its helper and walks the other itself."""
    for i in range(8):  # ("d": an archive's second array, copied as ``c`` is)
        (src / f"d/{i}").mkdir(parents=True)
        (dst / f"d/{i}").mkdir(parents=True)
        for j in range(5):
            (src / f"d/{i}/{j}").write_bytes(os.urandom(50 + j))
            shutil.copy2(src / f"d/{i}/{j}", dst / f"d/{i}/{j}")  # (mtime to the ns)
    for top in ("c", "d"):
        (src / f"{top}/0/1").write_bytes(b"another size")  # stale
        (src / f"{top}/2/3").unlink()  # at the destination only: a delete to mirror
        (src / f"{top}/4/new").write_bytes(b"new")  # at the source only
        (src / f"{top}/5/9.__lock").write_bytes(b"")  # a writer's temporary file
        (src / f"{top}/6/link").symlink_to("0")  # never followed, reported
        (dst / f"{top}/7/0.abc.softcopy-tmp").write_bytes(b"left by a killed run")
        for i in range(10, 20):  # more folders than the helper takes at once
            (src / f"{top}/{i}").mkdir()
            (src / f"{top}/{i}/0").write_bytes(os.urandom(10 + i))


def _own_temps(dst) -> None:
    for top in ("c", "d"):
        (dst / f"{top}/7/0.abc.softcopy-tmp").write_bytes(b"left by a killed run")


def _edges(src, dst) -> None:
    """Beside `_mixed`'s, names the comparison of a folder whole (`ScanHandler.lstat_names`)
    must leave to `match`: a source 1 ns newer than its copy, a file where the copy is a
    folder and a folder where it is a file, a chunk named as the marker below the root, a
    FIFO with a file of its name at the destination."""
    st = os.stat(src / "c/1/1")
    os.utime(src / "c/1/1", ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    (dst / "c/1/2").unlink()
    (dst / "c/1/2").mkdir()
    (src / "c/1/3").unlink()
    (src / "c/1/3").mkdir()
    (src / "c/1/3/0").write_bytes(b"x")
    (src / "c/3/complete").write_bytes(b"a chunk, not the marker")
    shutil.copy2(src / "c/3/complete", dst / "c/3/complete")
    os.mkfifo(src / "c/8/fifo")
    (dst / "c/8/fifo").write_bytes(b"")


def test_a_folder_decided_whole_from_lstats_is_decided_as_name_by_name(copied, monkeypatch):
    """A resume scan decides a folder's current copies from the destination's plain lstats
    (`ScanHandler.lstat_names`) and hands every other name to `match`: it queues, counts,
    reports and removes what a scan of one name at a time does, and asks `match` only of
    those names."""
    src, dst = copied
    _mixed(src, dst)
    _edges(src, dst)
    asked = []
    real_match = scan_walk.ScanHandler.match

    def counting(self, folder, entry, info):
        asked.append(folder.prefix + entry.name)
        return real_match(self, folder, entry, info)

    monkeypatch.setattr(scan_walk.ScanHandler, "match", counting)
    whole = _found(_scanned(src, dst))
    monkeypatch.undo()
    # (of `copied`'s 201 files and `_mixed`'s 40 copies, only the folders and these reach it)
    folders = [f"{top}/{i}" for top in "cd" for i in (*range(8 + 2 * (top == "c")), *range(10, 20))]
    assert sorted(asked) == sorted(
        ["c", "d", "zarr.json", "c/1/1", "c/1/2", "c/1/3", "c/1/3/0", "c/3/complete", "c/8/fifo"]
        + folders
        + [f"{top}/{i}/0" for top in "cd" for i in range(10, 20)]
        + [f"{top}/{rel}" for top in "cd" for rel in ("0/1", "4/new", "5/9.__lock", "6/link")]
    )
    _own_temps(dst)
    real_init = scan_walk.ScanHandler.__init__

    def name_by_name(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.takes_lstats = False

    monkeypatch.setattr(scan_walk.ScanHandler, "__init__", name_by_name)
    assert _found(_scanned(src, dst)) == whole
    assert {"c/1/1", "c/1/2", "c/1/3/0", "c/0/1"} <= set(whole["queued"])
    assert "c/3/complete" not in whole["queued"] and "c/8/fifo" not in whole["queued"]


def test_a_long_first_scan_shared_with_a_helper_process_finds_the_same(copied, caplog):
    """From `Tuning.scan_split_after_s` on, the first scan hands whole folders to a helper
    process: what it queues, counts, reports and removes is what one process finds."""
    src, dst = copied
    _mixed(src, dst)
    alone = _found(_scanned(src, dst))
    _own_temps(dst)
    caplog.set_level(logging.INFO, logger="napari_softcopy")
    shared = _scanned(src, dst, split_after_s=0)
    handed = [r.getMessage() for r in caplog.records if "shared" in r.getMessage()]
    assert handed == [handed[0]] and int(handed[0].split()[4]) >= 1, handed  # ("shared N")
    assert _found(shared) == alone
    expected = {"0/1", "2/3", "4/new"} | {f"{i}/0" for i in range(10, 20)}
    assert alone["queued"] == sorted(f"{top}/{rel}" for top in "cd" for rel in expected)
    assert alone["temp"] == 2
    assert [p for p, _ in alone["errors"]] == ["c/6/link", "d/6/link"]
    assert not list(dst.rglob("*.softcopy-tmp"))  # removed by the engine, as alone
    assert not any("failed" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("found", [12, 13])
def test_a_first_scan_of_a_large_tree_starts_its_helper_at_once(copied, caplog, monkeypatch, found):
    """Where the watcher found `scan_walk.SPLIT_AT_ONCE_FOLDERS` folders at the start (the
    root, ``c`` and its 10: 12 here), the first scan shares its walk at once, not after
    `Tuning.scan_split_after_s` (an hour here); below that number it walks alone."""
    src, dst = copied
    monkeypatch.setattr(engine_scan, "SPLIT_AT_ONCE_FOLDERS", found)
    caplog.set_level(logging.INFO, logger="napari_softcopy")
    e = engine(src, dst, tuning=Tuning(scan_split_after_s=3600))
    try:
        wait_for(lambda: e.status().scans >= 1, what="the first scan")
    finally:
        e.stop()
        e.wait(30)
    shared = [r.getMessage() for r in caplog.records if "shared" in r.getMessage()]
    assert len(shared) == (found <= 12), shared
    assert e.status().files_at_destination == FILES + 1


def test_a_split_scan_streams_a_half_copied_archive(tmp_path, caplog):
    """Thousands of files to copy found by the helper reach the engine in many messages
    (held back by the pipe, never all at once): the same queue as one process."""
    src, dst = tmp_path / "a.zarr", tmp_path / "c.zarr"
    for i in range(40):
        (src / f"c/{i}").mkdir(parents=True)
        for j in range(60):
            (src / f"c/{i}/{j}").write_bytes(b"x" * j)
    dst.mkdir()
    caplog.set_level(logging.INFO, logger="napari_softcopy")
    alone = _found(_scanned(src, dst))
    shared = _found(_scanned(src, dst, split_after_s=0))
    assert any("shared" in r.getMessage() for r in caplog.records)
    assert len(alone["queued"]) == 2400 > 4 * scan_walk._BATCH
    assert shared == alone


def test_a_split_scan_whose_helper_dies_walks_its_folder_itself(copied, caplog, monkeypatch):
    """A helper killed with folders in work (SIGKILL, each time one is handed to it): the
    engine walks them itself, and the scan finds what one process finds."""
    src, dst = copied
    _mixed(src, dst)
    alone = _found(_scanned(src, dst))
    _own_temps(dst)
    real_send = scan_walk.ScanHelper.send

    def send_then_kill(self, rel):
        sent = real_send(self, rel)
        os.kill(self.process.pid, signal.SIGKILL)
        return sent

    monkeypatch.setattr(scan_walk.ScanHelper, "send", send_then_kill)
    caplog.set_level(logging.INFO, logger="napari_softcopy")
    shared = _found(_scanned(src, dst, split_after_s=0))
    assert any("scan helper failed" in r.getMessage() for r in caplog.records)
    assert shared == alone


def test_a_first_scan_that_cannot_be_split_says_so_once(copied, caplog):
    """With one core to run on, the first scan walks alone and says why, once, in the log
    and the status's notices (a fast path that does not apply is never silent)."""
    src, dst = copied
    cores = os.sched_getaffinity(0)
    caplog.set_level(logging.INFO, logger="napari_softcopy")
    os.sched_setaffinity(0, {min(cores)})
    try:
        engine = _scanned(src, dst, split_after_s=0)
    finally:
        os.sched_setaffinity(0, cores)
    said = "the first scan's helper process is off: one CPU core available"
    assert [n for n in engine.status().notices if "first scan" in n] == [said]
    assert [r.getMessage() for r in caplog.records if "first scan" in r.getMessage()] == [said]
    assert [r.levelno for r in caplog.records if "first scan" in r.getMessage()] == [
        logging.WARNING
    ]
    assert engine.queued == [] and engine._counters.files_at_destination == FILES + 1


#: An engine whose first scan is split at once and held up by a slow copy (10 files pending
#: at most, 10 kB/s): its helper process lives for as long as the test needs.
_SLOW_ENGINE = """
import sys
from napari_softcopy import CopyEngine, CopyOptions
from napari_softcopy.engine import Tuning
engine = CopyEngine(
    sys.argv[1], sys.argv[2], CopyOptions(bandwidth_mb_s=0.01),
    tuning=Tuning(scan_split_after_s=0, pending_limit=10),
)
engine.start()
engine.wait()
"""


def _scan_helper_of(pid: int) -> int | None:
    """The process id of ``pid``'s scan helper, if it runs one."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            try:
                if b"scan_walk" in Path(f"/proc/{child}/cmdline").read_bytes():
                    return child
            except OSError:
                continue
    return None


def _ended(pid: int) -> bool:
    """Whether the process ``pid`` has ended (gone, or a zombie not reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def test_a_copy_killed_mid_split_scan_leaves_no_helper_and_resumes_identical(tmp_path, monkeypatch):
    """SIGKILL of the engine while its helper walks: the helper ends with it (it only
    reads: nothing of it stays behind), and a rerun resumes the copy to an identical one."""
    monkeypatch.setenv("NAPARI_SOFTCOPY_STATE_DIR", str(tmp_path / "state"))
    src, dst = tmp_path / "a.zarr", tmp_path / "c.zarr"
    (src / "c").mkdir(parents=True)
    (src / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group"}))
    for i in range(40):
        (src / f"c/{i}").mkdir()
        for j in range(10):
            (src / f"c/{i}/{j}").write_bytes(os.urandom(100 + j))
    (src / "complete").write_text("done\n")
    engine = subprocess.Popen([sys.executable, "-c", _SLOW_ENGINE, str(src), str(dst)])
    try:
        helper = wait_for(lambda: _scan_helper_of(engine.pid), what="the scan helper")
        engine.kill()
        engine.wait(30)
        wait_for(lambda: _ended(helper), what="the scan helper to end with the engine")
    finally:
        engine.kill()
        engine.wait(30)
    result = subprocess.run(
        [sys.executable, "-m", "napari_softcopy.cli", "copy", str(src), str(dst)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert_identical(src, dst)


def test_a_stop_ends_a_split_scan_at_once_with_its_helper_held_by_a_full_pipe(tmp_path):
    """Two folders of 5,000 files to copy, 10 at most pending and no worker taking them:
    the engine waits for room, the helper (its folder's effects more than a pipe holds) for
    the engine to read. A stop ends both within a second: the helper, which only reads, is
    killed, not waited for (2 s before)."""
    src, dst = tmp_path / "a.zarr", tmp_path / "c.zarr"
    for i in range(2):
        (src / f"c/{i}").mkdir(parents=True)
        for j in range(5000):
            (src / f"c/{i}/{j}").write_bytes(b"")
    dst.mkdir()
    tuning = Tuning(scan_split_after_s=0, pending_limit=10)
    engine = CopyEngine(src, dst, CopyOptions(), tuning=tuning)
    engine._dest = LocalDestination(dst, create=False)
    engine._src_fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    scan = threading.Thread(target=engine._scan, kwargs={"initial": True})
    try:
        scan.start()
        helper = wait_for(lambda: _scan_helper_of(os.getpid()), what="the scan helper")
        wchan = Path(f"/proc/{helper}/wchan")
        # (in a pipe write: "pipe_write", "anon_pipe_write" by kernel)
        wait_for(lambda: "pipe_write" in wchan.read_text(), what="the helper's pipe to fill")
        stopped = time.monotonic()
        engine.stop()
        scan.join(10)
        assert not scan.is_alive()
        assert time.monotonic() - stopped < 1.0
        assert _ended(helper)
    finally:
        engine.stop()
        scan.join(10)
        os.close(engine._src_fd)
        engine._dest.close()


def test_the_progress_never_goes_back_when_copies_land_beside_the_first_scan(tmp_path):
    """Into an empty destination every copy is a new file: the counts of what is at the
    destination follow the copies at every moment. A first scan that ended with copies made
    beside it set them back to what its walk had seen (most folders listed before their
    files were copied): the progress went back from 45,303 to 15,085 files on a bulk copy of
    50,000."""
    src, dst = tmp_path / "a.zarr", tmp_path / "c.zarr"
    src.mkdir()
    (src / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group"}))
    for i in range(3000):
        folder = src / "c" / str(i // 10)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / str(i % 10)).write_bytes(b"x" * 64)
    past = time.time() - 60  # (settled: copied at once)
    for path in src.rglob("*"):
        os.utime(path, (past, past))
    e = engine(src, dst, finish_quiet=0.0)
    e.finish()
    seen = []
    while e._control.is_alive() or not seen:
        s = e.status()
        seen.append((s.scans, s.files_copied, s.files_at_destination, s.chunks_at_destination))
        # (a sample every millisecond or so: polling without a pause held the interpreter
        # lock from the engine's threads, and the copy of 3,000 files took 30 s)
        time.sleep(0.001)
    assert e.wait(60) and e.state == "verified"
    assert any(scans >= 1 and copied > 0 for scans, copied, _, _ in seen)  # (it was beside)
    behind = [row for row in seen if row[2] != row[1]]
    assert not behind, behind[:3]
    chunks = [row[3] for row in seen]
    assert chunks == sorted(chunks)
