"""The copy helper process: it copies the common case of a large backlog beside the engine,
hands everything else back, and changes nothing about what is copied when it fails."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import blake3
import pytest

from napari_softcopy import transfer
from napari_softcopy.copy_helper import (
    COPIED,
    CURRENT_OUTCOME,
    ENGINE_OUTCOME,
    UNTRIED_OUTCOME,
    CopyHelper,
    HelperOutcome,
)
from napari_softcopy.destinations import SOURCE_STAMP, STATE_DIR, LocalDestination, source_stamp
from napari_softcopy.engine import CopyEngine, Tuning
from napari_softcopy.engine import helpers as helpers_module
from napari_softcopy.platform import available_cores
from napari_softcopy.simulate import simulate
from support import assert_identical, engine, wait_for

needs_two_cores = pytest.mark.skipif(available_cores() < 2, reason="a helper needs two cores")
#: A helper for a backlog of ten files: these archives are small.
SMALL = Tuning(copy_helper_files=10)


def finished_archive(tmp_path, timepoints=3):
    src = tmp_path / "acq.zarr"
    simulate(src, "demo", rate=1000, timepoints=timepoints)
    files = [p for p in src.rglob("*") if p.is_file()]
    return src, tmp_path / "copy.zarr", files


class RecordedHelpers:
    """Replaces the engine's `CopyHelper`: records each one's process id and nice value."""

    def __init__(self, monkeypatch):
        self.pids: list[int] = []
        self.nice: list[int] = []
        recorded = self

        class Recorded(CopyHelper):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                if self.process.running:
                    recorded.pids.append(self.process.pid)
                    recorded.nice.append(os.getpriority(os.PRIO_PROCESS, self.process.pid))

        monkeypatch.setattr(helpers_module, "CopyHelper", Recorded)


@pytest.fixture
def slow_engine_copies(monkeypatch):
    """The engine's own copies take 5 ms each (the helper's do not): a small archive then
    lasts until the helper has started and taken its batches."""
    copy_file = transfer.copy_file

    def slow(*args, **kwargs):
        time.sleep(0.005)
        return copy_file(*args, **kwargs)

    monkeypatch.setattr(transfer, "copy_file", slow)  # (the helper process's are not)


def helper_copied(caplog) -> int:
    lines = [r.getMessage() for r in caplog.records if "copy helper process copied" in r.msg]
    assert len(lines) == 1, lines
    return int(lines[0].split()[-2])


@needs_two_cores
def test_a_finished_archive_is_copied_by_the_engine_and_a_helper_process(
    tmp_path, monkeypatch, caplog, slow_engine_copies
):
    caplog.set_level("INFO")
    src, dst, files = finished_archive(tmp_path)
    helpers = RecordedHelpers(monkeypatch)
    e = engine(src, dst, low_priority=True, tuning=SMALL)
    assert e.wait(60) and e.state == "verified", e.status().message
    assert len(helpers.pids) == 1 and helpers.nice[0] >= 10  # at the engine's priority
    # Both copied, and every file was booked once: the counts are the engine's own.
    assert 0 < helper_copied(caplog) < len(files) - 1
    assert e.status().files_copied == len(files) - 1  # (the marker is written, not copied)
    assert "copy helper process failed" not in caplog.text
    assert_identical(src, dst)
    assert not os.path.exists(f"/proc/{helpers.pids[0]}")  # ended and reaped


def test_a_small_backlog_or_a_bandwidth_cap_starts_no_helper(tmp_path, monkeypatch):
    src, dst, files = finished_archive(tmp_path, timepoints=2)
    helpers = RecordedHelpers(monkeypatch)
    e = engine(src, dst, tuning=Tuning(copy_helper_files=len(files) + 1))
    assert e.wait(60) and e.state == "verified", e.status().message
    e = engine(src, tmp_path / "capped.zarr", bandwidth_mb_s=1000.0, tuning=SMALL)
    assert e.wait(60) and e.state == "verified", e.status().message
    assert helpers.pids == []


FAILING_HELPERS = {
    "cannot start": "import sys; sys.exit('no package here')",
    "writes garbage": "import sys; sys.stdin.buffer.read(1); print('garbage', flush=True)",
    "answers another count": (
        "import signal\nfrom napari_softcopy.helper_process import serve\n"
        "serve(lambda batch, stop: [], parent_death=signal.SIGTERM)"
    ),
    "answers nonsense": (
        "import signal\nfrom napari_softcopy import copy_helper as h\n"
        "nonsense = h.HelperOutcome(h.COPIED, 'big', 1)\n"
        "h.serve(lambda batch, stop: [nonsense] * len(batch), parent_death=signal.SIGTERM)"
    ),
    "answers something else": (
        "import signal\nfrom napari_softcopy import copy_helper as h\n"
        "h.serve(lambda batch, stop: {'copied': batch}, parent_death=signal.SIGTERM)"
    ),
    "copies, then dies": (
        "import os, signal\n"
        "from napari_softcopy import copy_helper as h\n"
        "opts = h.setup_argument()\n"
        "dest = h.LocalDestination.from_helper_setup(opts['destination'], writes=True)\n"
        "def copy_and_die(batch, stop):\n"
        "    for rel, force in batch:\n"
        "        h.sync_common_case(rel, force, opts['source_fd'], dest, stop,\n"
        "                           settle_s=0.03, fsync=False, uncache=True)\n"
        "    os._exit(3)\n"
        "h.serve(copy_and_die, parent_death=signal.SIGTERM)\n"
    ),
}


@needs_two_cores
@pytest.mark.parametrize("failure", FAILING_HELPERS)
def test_a_helper_that_fails_changes_nothing(
    tmp_path, monkeypatch, caplog, slow_engine_copies, failure
):
    src, dst, files = finished_archive(tmp_path)
    monkeypatch.setattr(CopyHelper, "_MAIN", FAILING_HELPERS[failure])
    e = engine(src, dst, tuning=SMALL)
    assert e.wait(60) and e.state == "verified", e.status().message
    assert "copy helper process failed" in caplog.text
    if failure == "cannot start":
        assert "no package here" in caplog.text  # (what it wrote to stderr says why)
    assert_identical(src, dst)
    if failure != "copies, then dies":  # (there, the files it copied were never booked)
        assert e.status().files_copied == len(files) - 1


@needs_two_cores
def test_a_stop_ends_the_helper_at_once_and_leaves_no_temporary_file(
    tmp_path, monkeypatch, slow_engine_copies
):
    src, dst, _files = finished_archive(tmp_path, timepoints=8)
    # The helper copies a file every 10 ms: the stop comes in the middle of its batch.
    monkeypatch.setattr(
        CopyHelper,
        "_MAIN",
        "import time\n"
        "from napari_softcopy import copy_helper as h\n"
        "sync = h.sync_common_case\n"
        "h.sync_common_case = lambda *a, **k: time.sleep(0.01) or sync(*a, **k)\n"
        "h._helper_main()\n",
    )
    helpers = RecordedHelpers(monkeypatch)
    e = engine(src, dst, tuning=SMALL)

    def copied_by_the_helper_unbooked() -> int:  # (booked when its batch is answered)
        # (os.walk: the probe's folder, listed and then removed, is no error, as in rglob;
        # the engine's own copies in flight are temporary files and its state is its own,
        # neither counted)
        at_destination = sum(
            not name.endswith("softcopy-tmp")
            for folder, _dirs, files in os.walk(dst)
            if STATE_DIR not in Path(folder).relative_to(dst).parts
            for name in files
        )
        return at_destination - e.status().files_copied

    wait_for(
        lambda: helpers.pids and copied_by_the_helper_unbooked() >= 3,
        what="the helper in a batch",
    )
    t0 = time.monotonic()
    e.stop()
    e.wait(10)
    assert e.state == "stopped"
    assert time.monotonic() - t0 < 3.0
    assert not os.path.exists(f"/proc/{helpers.pids[0]}")
    assert not list(dst.rglob("*softcopy-tmp"))
    again = engine(src, dst, tuning=SMALL)
    assert again.wait(60) and again.state == "verified", again.status().message
    assert_identical(src, dst)


def test_a_helper_ends_with_the_thread_that_started_it(tmp_path):
    """The engine killed (or its thread gone) ends the helper: it must not copy on unseen."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    src_fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    dest = LocalDestination(dst)
    started = []
    options = {"settle_s": 0.03, "fsync": False, "uncache": True}

    def start_and_leave():
        helper = CopyHelper(src_fd, dest, **options)
        started.append(helper)
        assert helper.submit([]) and helper.outcomes(0) == []  # (it is up and listening)

    thread = threading.Thread(target=start_and_leave)
    thread.start()
    thread.join()
    try:
        assert started[0].process.wait(10) == 0  # SIGTERM from the kernel: the thread is gone
    finally:
        started[0].close()
        os.close(src_fd)
        dest.close()


def test_the_helper_copies_the_common_case_and_hands_back_the_rest(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    old = time.time() - 60
    names = [("new", b"n" * 100), ("stale", b"s" * 10), ("same", b"x"), ("forced", b"f")]
    for name, data in [*names, ("rewritten", b"r")]:
        (src / name).write_bytes(data)
        os.utime(src / name, (old, old))
    (dst / "stale").write_bytes(b"old")
    for name in ("same", "forced", "rewritten"):
        (dst / name).write_bytes((src / name).read_bytes())
        os.utime(dst / name, (old, old))
    # Same size and mtime, but copied from another version of the file (its stamp says so).
    os.setxattr(dst / "rewritten", SOURCE_STAMP, b"1:1")
    (src / "young").write_bytes(b"y")  # written just now: maybe not finished
    os.symlink("new", src / "link")
    src_fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    dest = LocalDestination(dst)
    options = {"settle_s": 1.0, "fsync": False, "uncache": True, "digest": True}
    helper = CopyHelper(src_fd, dest, **options)
    try:
        batches = [
            [("new", False), ("stale", False), ("same", False), ("forced", True)],
            [("rewritten", False)],
            [("young", False), ("link", False)],
            [("gone", False), ("new", False), ("stale", False)],
        ]
        for batch in batches:
            assert helper.submit(batch)
        first, restamped, second, third = (helper.outcomes(len(b)) for b in batches)
    finally:
        helper.close()
        os.close(src_fd)
        dest.close()

    def copied(name: str, replaced_size: int | None) -> HelperOutcome:
        # (the bytes hashed as copied, and the stamp of the version copied: the manifest's)
        st = os.stat(src / name)
        digest = blake3.blake3((dst / name).read_bytes()).hexdigest()
        assert digest == blake3.blake3((src / name).read_bytes()).hexdigest()
        stamp = source_stamp(st).decode()
        return HelperOutcome(COPIED, st.st_size, st.st_mtime_ns, replaced_size, digest, stamp)

    assert first == [copied("new", None), copied("stale", 3), CURRENT_OUTCOME, copied("forced", 1)]
    assert restamped == [copied("rewritten", 1)]
    assert second == [ENGINE_OUTCOME, ENGINE_OUTCOME]
    # A source that vanished is the engine's (it may mirror a delete); the batch's rest is
    # left untried, as after any error.
    assert third == [ENGINE_OUTCOME, UNTRIED_OUTCOME, UNTRIED_OUTCOME]
    assert all(type(o) is HelperOutcome for o in first + restamped + second + third)
    copied = {n: (dst / n).read_bytes() for n in ("new", "stale", "forced", "rewritten")}
    assert copied == {n: (src / n).read_bytes() for n in copied}
    assert not (dst / "young").exists() and not (dst / "link").exists()
    assert os.getxattr(dst / "new", SOURCE_STAMP)  # stamped as the engine stamps


@needs_two_cores
def test_a_full_destination_is_waited_for_and_the_copy_completes_when_space_is_freed(
    tmp_path, monkeypatch, slow_engine_copies
):
    """The helper hands a refused write back; the engine reports it, backs off (the helper
    waits with it) and goes on by itself once there is space. No partial file anywhere."""
    from faults_support import final_files, make_archive, resize_tmpfs, tmpfs

    src = tmp_path / "acq.zarr"
    versions = make_archive(src, n_chunks=48, chunk_bytes=128 * 1024)  # 6 MiB
    helpers = RecordedHelpers(monkeypatch)
    handed_back = []  # files the helper gave the engine to sync (its refused writes)
    sync = CopyEngine._sync

    def recorded_sync(self, rel, force):
        if threading.current_thread().name == "softcopy-worker-h":
            handed_back.append(rel)
        return sync(self, rel, force)

    monkeypatch.setattr(CopyEngine, "_sync", recorded_sync)
    with tmpfs(tmp_path / "disk", "2m") as disk:
        dst = disk / "copy.zarr"
        e = engine(src, dst, tuning=SMALL)
        try:

            def full_reported():
                return [m["message"] for m in e.status().errors if "is full" in m["message"]]

            # (while the disk stays full, the helper meets it again after each back-off)
            wait_for(lambda: handed_back and full_reported(), what="a refused write handed back")
            assert str(dst) in full_reported()[0]
            assert helpers.pids and e.state in ("copying", "finishing")
            finals = {r: c for r, c in final_files(dst).items() if r.startswith("c/")}
            assert 0 < len(finals) < len(versions)
            assert all(versions[rel] == content for rel, content in finals.items())
            resize_tmpfs(disk, "64m")  # space is freed: the copy goes on by itself
            assert e.wait(60) and e.state == "verified", e.status().message
        finally:
            e.stop()
            e.wait(10)
        assert_identical(src, dst)
