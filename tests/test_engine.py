"""The engine against real writers writing concurrently with the copy."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts
import zarr

from napari_softcopy.destinations import STATE_DIR
from napari_softcopy.engine import CopyEngine, CopyOptions, Tuning
from napari_softcopy.engine import finish as finish_module
from napari_softcopy.engine import walks as walks_module
from napari_softcopy.layout import find_arrays
from napari_softcopy.platform import available_cores, io_priority_class, lower_thread_priority
from napari_softcopy.simulate import PRESETS, simulate
from napari_softcopy.status import JobState, read_status_file
from support import assert_identical, engine, wait_for


def live_copy(tmp_path, preset, *, timeout=120.0, options=None, tuning=None, **sim):
    """Start the engine before the writer creates anything; write; wait for "verified"."""
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    options = {"wait_for_source": True, "status_file": tmp_path / "status.json"} | (options or {})
    e = engine(src, dst, tuning=tuning, **options)
    if options["wait_for_source"]:
        # The writer starts once the copy waits for it: on a loaded machine a short
        # acquisition could otherwise end, marker and all, before the copy first looked (a
        # copy "after the fact": finish_reason "already-complete", not the live one tested).
        wait_for(lambda: e.state is JobState.WAITING, what="the copy to wait for the source")
    errors = []

    def write():
        try:
            simulate(src, preset, **sim)
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    writer.join(timeout)
    assert not errors, errors
    assert e.wait(timeout), f"engine ended {e.state}: {e.status().message}"
    return src, dst, e


def small(name, **changes):
    return dataclasses.replace(PRESETS[name], **changes)


def assert_arrays_equal(src, dst):
    arrays = find_arrays(src)
    assert arrays
    for layout in arrays:
        a = zarr.open_array(src / layout.path if layout.path else src, mode="r")
        b = zarr.open_array(dst / layout.path if layout.path else dst, mode="r")
        np.testing.assert_array_equal(a[...], b[...])


WRITERS = [
    pytest.param(
        "tensorstore", "lockfile", small("demo", shape=(4, 8, 128, 128)), id="ts-lockfile-v3"
    ),
    pytest.param("tensorstore", "os", small("demo", shape=(4, 8, 128, 128)), id="ts-os-v3"),
    pytest.param("tensorstore", "none", small("demo", shape=(3, 8, 128, 128)), id="ts-none-v3"),
    pytest.param(
        "tensorstore", "non_atomic", small("demo", shape=(3, 8, 128, 128)), id="ts-non_atomic-v3"
    ),
    pytest.param(
        "tensorstore",
        "lockfile",
        small("manyfiles", shape=(3, 4, 128, 128)),
        id="ts-lockfile-v2-dot",
    ),
    pytest.param("tensorstore", "lockfile", small("nested-v2"), id="ts-lockfile-v2-slash"),
    pytest.param(
        "tensorstore",
        "lockfile",
        small("sharded", shape=(2, 64, 256, 256)),
        id="ts-lockfile-v3-sharded",
    ),
    pytest.param("zarr-python", "lockfile", small("demo", shape=(4, 8, 128, 128)), id="zarr-v3"),
    pytest.param(
        "zarr-python", "lockfile", small("manyfiles", shape=(3, 4, 128, 128)), id="zarr-v2-dot"
    ),
    pytest.param(
        "zarr-python", "lockfile", small("sharded", shape=(2, 64, 256, 256)), id="zarr-v3-sharded"
    ),
    pytest.param("zarr-python", "lockfile", "multiscale", id="ome-multiscale-0.5"),
    pytest.param("tensorstore", "lockfile", "multiscale-0.4", id="ome-multiscale-0.4"),
    pytest.param("zarr-python", "lockfile", "plate-0.4", id="hcs-plate-0.4"),
    pytest.param("tensorstore", "lockfile", "plate", id="hcs-plate-0.5"),
]


@pytest.mark.parametrize(("writer", "locking", "preset"), WRITERS)
def test_live_copy_is_identical(tmp_path, caplog, writer, locking, preset):
    src, dst, e = live_copy(tmp_path, preset, writer=writer, locking=locking, rate=8)
    # Nothing is written after the marker: no change may cancel the finish on it (the events
    # of the last files, which may come after the marker was found, are no such change).
    assert not [r for r in caplog.records if "finish cancelled" in r.getMessage()]
    n = assert_identical(src, dst)
    assert_arrays_equal(src, dst)
    s = e.status()
    assert s.state == "verified" and s.finish_reason == "marker"  # live, not after the fact
    assert s.scans >= 1  # the first scan; verification walks both trees at the end
    assert s.verification["ok"] and s.verification["files_checked"] == n - 1  # marker is extra
    assert (dst / "complete").read_bytes() == (src / "complete").read_bytes()
    assert s.error_count == 0, s.errors


def test_growing_array_metadata_follows(tmp_path):
    src, dst, e = live_copy(tmp_path, small("demo", shape=(5, 4, 64, 64)), rate=20, grow=True)
    assert_identical(src, dst)
    assert zarr.open_array(dst, mode="r").shape == (5, 4, 64, 64)
    assert e.status().chunks_expected == 5 * 1 * 1 * 1


def test_sharded_rewrites_end_as_final_bytes(tmp_path):
    preset = small("sharded", shape=(2, 64, 256, 256), slabs=4)
    src, dst, _e = live_copy(tmp_path, preset, writer="tensorstore", rate=50)
    assert_identical(src, dst)
    assert_arrays_equal(src, dst)


def test_acquire_zarr_writes_in_place(tmp_path):
    az = pytest.importorskip("acquire_zarr")
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    e = engine(src, dst, wait_for_source=True)
    settings = az.StreamSettings(
        store_path=str(src),
        arrays=[
            az.ArraySettings(
                dimensions=[
                    az.Dimension(
                        name="t",
                        kind=az.DimensionType.TIME,
                        array_size_px=0,
                        chunk_size_px=1,
                        shard_size_chunks=2,
                    ),
                    az.Dimension(
                        name="y",
                        kind=az.DimensionType.SPACE,
                        array_size_px=128,
                        chunk_size_px=64,
                        shard_size_chunks=2,
                    ),
                    az.Dimension(
                        name="x",
                        kind=az.DimensionType.SPACE,
                        array_size_px=128,
                        chunk_size_px=64,
                        shard_size_chunks=1,
                    ),
                ],
                data_type=az.DataType.UINT16,
            )
        ],
    )
    stream = az.ZarrStream(settings)
    rng = np.random.default_rng(1)
    frames = [rng.integers(1, 4000, (128, 128), dtype=np.uint16) for _ in range(6)]
    for frame in frames:
        stream.append(frame)
    stream.close()
    (src / "complete").write_text("done\n")
    assert e.wait(60), e.status().message
    assert_identical(src, dst)
    np.testing.assert_array_equal(zarr.open_array(dst, mode="r")[...], np.stack(frames))


def test_fill_value_delete_is_mirrored(tmp_path):
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    a = zarr.create_array(src, shape=(4, 64, 64), chunks=(1, 32, 32), dtype="uint16")
    a[:] = 7
    e = engine(src, dst)
    chunk = "c/2/1/1"
    wait_for(lambda: (dst / chunk).exists(), what="first copy")
    a[2, 32:, 32:] = 0  # the chunk becomes the fill value: zarr-python deletes its file
    assert not (src / chunk).exists()
    wait_for(lambda: not (dst / chunk).exists(), what="mirrored delete")
    (src / "complete").write_text("")
    assert e.wait(30)
    assert_identical(src, dst)
    assert e.status().files_deleted == 1


def test_never_finished_fill_value_chunks_do_not_block_finish(tmp_path):
    """tensorstore never writes chunks equal to the fill value; the marker still finishes."""
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    spec = {
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": str(src)},
        "metadata": {
            "shape": [4, 64],
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1, 64]}},
            "data_type": "uint16",
        },
        "create": True,
    }
    arr = ts.open(spec).result()
    arr[0].write(np.full(64, 5, np.uint16)).result()  # timepoints 1..3 stay fill value
    (src / "complete").write_text("")
    e = engine(src, dst)
    assert e.wait(30)
    s = e.status()
    assert s.finish_reason == "already-complete"
    assert (s.chunks_expected, s.chunks_at_destination) == (4, 1)
    assert_identical(src, dst)


def test_vanished_array_directory_deletes_nothing(tmp_path):
    import shutil

    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    g = zarr.open_group(src, mode="w")
    g.create_array("a", shape=(4, 8), chunks=(1, 8), dtype="uint8")[:] = 1
    e = engine(src, dst, finish_quiet=0.2)  # (the finish then waits 0.2 s after the rmtree)
    copied = [dst / "a" / "c" / str(t) / "0" for t in range(4)]
    wait_for(lambda: all(p.exists() for p in copied), what="all four chunks copied")
    shutil.rmtree(src / "a" / "c")
    e.finish()
    assert not e.wait(30)  # not verified: chunks are missing at the source
    assert e.state == "failed" and "4 extra" in e.status().message
    assert sum(1 for _ in (dst / "a" / "c").rglob("*") if _.is_file()) == 4


def test_resume_copies_only_what_is_missing(tmp_path):
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    simulate(src, small("demo", shape=(4, 8, 64, 64)), rate=1000)
    e = engine(src, dst)
    assert e.wait(30)
    for victim in ("c/1/0/0/0", "c/3/0/0/0"):
        (dst / victim).unlink()
    (dst / "complete").unlink()
    again = engine(src, dst)
    assert again.wait(30)
    assert again.status().files_copied == 2
    assert_identical(src, dst)
    third = engine(src, dst)  # verified already: nothing to copy, exits at once
    assert third.wait(30) and third.status().files_copied == 0


def test_finish_when_idle_writes_a_summary_marker(tmp_path):
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    simulate(src, small("demo", shape=(2, 8, 64, 64)), rate=1000, marker=None)
    e = engine(src, dst, finish_when_idle=0.5)
    assert e.wait(30)
    assert e.status().finish_reason == "idle"
    summary = json.loads((dst / "complete").read_text())
    assert summary["ok"] and summary["files_checked"] == 3
    assert not (src / "complete").exists()  # the source is never written


def test_finish_request_and_status_file(tmp_path):
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    simulate(src, small("demo", shape=(2, 8, 64, 64)), rate=1000, marker=None)
    status_file = tmp_path / "status.json"
    e = engine(src, dst, status_file=status_file, status_interval=0.1, finish_quiet=0.2)
    first = wait_for(lambda: read_status_file(status_file), what="status file")
    assert first.source == str(src) and first.pid == os.getpid()
    wait_for(lambda: read_status_file(status_file).updated_at > first.updated_at)
    e.finish()
    assert e.wait(30)
    final = wait_for(lambda: (s := read_status_file(status_file)) and s.done and s)
    assert final.state == "verified" and final.finish_reason == "request"
    assert final.verification["ok"]
    # Typed in Python, its plain value in the file and in messages.
    assert e.state is JobState.VERIFIED and final.state is JobState.VERIFIED
    assert json.loads(status_file.read_text())["state"] == "verified"
    assert f"{e.state}" == str(final.state) == "verified"


def test_stop_is_prompt_and_resumable(tmp_path):
    import time

    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    simulate(src, small("demo", shape=(8, 16, 256, 256)), rate=1000)
    e = engine(src, dst, bandwidth_mb_s=2.0, workers=2)
    wait_for(lambda: e.status().files_copied >= 2, what="some copies")
    t0 = time.monotonic()
    e.stop()
    assert not e.wait(5)
    assert time.monotonic() - t0 < 2.0
    assert e.state == "stopped" and "Resume with" in e.status().message
    assert not [p for p in dst.rglob("*softcopy-tmp")]
    again = engine(src, dst)
    assert again.wait(60)
    assert_identical(src, dst)


def test_a_stop_during_the_first_copy_of_the_root_metadata_is_a_stop(tmp_path, monkeypatch):
    """The root's metadata is copied by the engine's own thread before any chunk; a stop
    that lands during that copy (Ctrl-C right after the start, on a slow disk) ends the
    copy as "stopped", never as an internal error."""
    from napari_softcopy import transfer

    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    simulate(src, "demo", rate=1000, timepoints=2, marker=None)
    copy_file = transfer.copy_file  # (the engine's workers copy through transfer.sync_file)
    engines = []

    def stopped_meanwhile(rel, *args, **kwargs):  # (the stop arrives while it copies)
        if threading.current_thread().name == "softcopy-control":
            engines[0].stop()
        return copy_file(rel, *args, **kwargs)

    monkeypatch.setattr(transfer, "copy_file", stopped_meanwhile)
    e = CopyEngine(src, dst, CopyOptions(low_priority=False))
    engines.append(e)
    e.start()
    assert not e.wait(10)
    assert e.state == "stopped", e.status().message
    assert not list(dst.rglob("*softcopy-tmp"))


def test_marker_of_an_unfinished_copy_is_not_trusted(tmp_path):
    """A marker at the destination means "verified"; a resumed live copy removes a stale one."""
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    simulate(src, small("demo", shape=(2, 8, 64, 64)), rate=1000, marker=None)
    e = engine(src, dst, finish_when_idle=0.3)
    assert e.wait(30) and (dst / "complete").exists()
    again = engine(src, dst)
    wait_for(lambda: again.status().scans >= 1, what="first scan")
    assert not (dst / "complete").exists()
    again.stop()
    again.wait(5)


def test_inotify_overflow_still_completes(tmp_path):
    """Thousands of files faster than the queue holds; the marker event may be lost."""
    limit = Path("/proc/sys/fs/inotify/max_queued_events")
    try:
        original = limit.read_text()
        limit.write_text("16\n")  # read at inotify_init: only our observer gets the small queue
    except OSError:
        pytest.skip("cannot lower fs.inotify.max_queued_events here (needs root)")
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    a = zarr.create_array(
        src,
        shape=(5_000,),
        chunks=(1,),
        dtype="uint8",
        chunk_key_encoding={"name": "v2", "separator": "."},
        fill_value=0,
        compressors=None,
    )
    try:
        e = engine(src, dst, rescan_interval=3600)
        wait_for(lambda: e.status().scans >= 1, what="first scan")
    finally:
        limit.write_text(original)
    chunk_dir = src / "c" if (src / "c").is_dir() else src
    for i in range(5_000):  # rename into place, like tensorstore, as fast as Python can
        tmp = chunk_dir / f"{i}.__lock"
        tmp.write_bytes(bytes([1 + i % 250]))
        os.replace(tmp, chunk_dir / str(i))
    (src / "complete").write_text("")
    assert e.wait(120), e.status().message
    s = e.status()
    assert s.event_overflows >= 1, "5,000 renames must overflow a 16-event queue"
    # The first scan, and a rescan after the first overflow (it comes early, within the
    # first few events); a later one may be cut short by the finish, whose walk compares
    # everything anyway, so it is not counted on.
    assert s.scans >= 2
    assert_identical(src, dst)
    np.testing.assert_array_equal(zarr.open_array(dst, mode="r")[:], a[:])


def test_engine_threads_run_at_idle_io_priority():
    if io_priority_class() is None:
        pytest.skip("IO priority classes are Linux-only")
    seen = []

    def probe():
        lower_thread_priority()
        seen.append(
            (io_priority_class(), os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        )

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    assert seen[0][0] == 3 and seen[0][1] >= 10
    assert io_priority_class() != 3  # the calling thread keeps its priority


def test_the_marker_event_ends_the_wait_for_quiet(tmp_path):
    """Before verifying, the finish waits for the event stream to go quiet (the writer's
    last events may still be queued) unless the marker's own event has been delivered:
    the events queued before it have been handled by then. With events that never stop,
    the wait ends only by that (or by its `Tuning.settle_max_s` limit)."""
    e = CopyEngine(tmp_path / "acq.zarr", tmp_path / "copy.zarr")
    flowing = threading.Event()
    flowing.set()

    def events() -> None:
        while flowing.is_set():
            e._last_event = time.monotonic()
            time.sleep(0.002)

    def drain_in_background() -> threading.Event:
        done = threading.Event()
        threading.Thread(target=lambda: (e._drain(settle=True), done.set()), daemon=True).start()
        return done

    stream = threading.Thread(target=events, daemon=True)
    stream.start()
    try:
        e._marker_event_seen = True
        assert drain_in_background().wait(Tuning().settle_max_s / 2)
        e._marker_event_seen = False
        done = drain_in_background()
        e._marker_event_seen = True  # the marker's event arrives while it waits
        assert done.wait(Tuning().settle_max_s / 2)
    finally:
        flowing.clear()
        stream.join()


def test_verification_walks_once_beside_the_last_copies(tmp_path, monkeypatch):
    """The finish does not wait for the last copies before it walks both trees: what the
    walk finds missing (still being copied) is compared again once copied, without a
    second walk of the tree."""
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    simulate(src, "demo", rate=1000, timepoints=3)  # complete: the finish starts at once
    pending_at_walks = []
    walk = walks_module.verify_tree

    def counted_walk(*args, **kwargs):
        pending_at_walks.append(len(e._pending))
        return walk(*args, **kwargs)

    monkeypatch.setattr(walks_module, "verify_tree", counted_walk)
    e = engine(src, dst, bandwidth_mb_s=10.0)  # copies slow enough to outlast a walk
    assert e.wait(60) and e.state == "verified", e.status().message
    assert len(pending_at_walks) == 1 and pending_at_walks[0] > 0
    assert e.report is not None and e.report.files_checked == len(
        [p for p in src.rglob("*") if p.is_file() and p.name != "complete"]
    )
    assert_identical(src, dst)


@pytest.mark.skipif(available_cores() < 2, reason="a split walk needs two cores")
def test_a_large_archive_is_verified_by_two_processes_started_beside_the_last_copies(
    tmp_path, monkeypatch, caplog
):
    """The helper starts when the finish does (its interpreter's start-up then overlaps the
    last copies), at the engine's low priority, and its part of the walk counts."""
    started = []
    start = finish_module.start_helpers

    def recorded(count):
        helpers = start(count)
        started.extend(os.getpriority(os.PRIO_PROCESS, h.process.pid) for h in helpers)
        return helpers

    monkeypatch.setattr(finish_module, "start_helpers", recorded)
    preset = small("demo", shape=(3, 8, 128, 128))
    tuning = Tuning(parallel_verify_files=0)  # (this archive is small)
    src, dst, e = live_copy(
        tmp_path, preset, rate=20, options={"low_priority": True}, tuning=tuning
    )
    assert e.state == "verified", e.status().message
    assert started and all(nice >= 10 for nice in started)
    assert "verification helper failed" not in caplog.text
    files = [p for p in src.rglob("*") if p.is_file() and p.name != "complete"]
    assert e.report.files_checked == len(files)
    assert_identical(src, dst)


@pytest.mark.skipif(available_cores() < 2, reason="a split walk needs two cores")
def test_a_bulk_copy_of_a_large_archive_splits_its_walk_too(tmp_path, monkeypatch):
    """A complete archive starts its finish at once, with nearly nothing at the destination
    yet: what is pending counts towards the archive's size."""
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    simulate(src, "demo", rate=1000, timepoints=3)
    files = len([p for p in src.rglob("*") if p.is_file()])
    # (half: files being copied at that moment are neither pending nor at the destination)
    tuning = Tuning(parallel_verify_files=files // 2)
    counts = []
    start = finish_module.start_helpers
    monkeypatch.setattr(finish_module, "start_helpers", lambda n: counts.append(n) or start(n))
    e = engine(src, dst, tuning=tuning, bandwidth_mb_s=10.0)  # (copies outlast the finish's start)
    assert e.wait(60) and e.state == "verified", e.status().message
    assert counts == [1]
    assert_identical(src, dst)


def test_the_private_folder_is_neither_copied_nor_compared(tmp_path):
    """``.softcopy`` at a root is napari-softcopy's own: a copy's records at the destination
    stay and are no extra files; a source that is itself a copy does not pass its records
    on, neither by the scan nor by a file event."""
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    simulate(src, small("demo", shape=(2, 8, 64, 64)), rate=1000, marker=None)
    (src / STATE_DIR).mkdir()
    (src / STATE_DIR / "theirs").write_text("the first copy's records")
    e = engine(src, dst, finish_quiet=0.2)
    wait_for(lambda: (dst / "zarr.json").exists(), what="the copy under way")
    (dst / STATE_DIR).mkdir(exist_ok=True)
    (dst / STATE_DIR / "manifest").write_text("ours")  # (as the move's manifest will be)
    (src / STATE_DIR / "later").write_text("written while the copy runs")
    (src / "probe").write_text("an event after the one above")  # (handled after it)
    wait_for(lambda: (dst / "probe").exists(), what="the probe copied")
    e.finish()
    assert e.wait(30), e.status().message
    assert e.status().verification["ok"]
    names = {p.name for p in (dst / STATE_DIR).iterdir()}
    assert "manifest" in names and not names & {"theirs", "later"}, names  # (and the copy's own)
    assert (dst / STATE_DIR / "manifest").read_text() == "ours"


def test_a_batch_of_hints_counts_the_changes_before_and_after_the_markers_event(tmp_path):
    """A read's hints are added at once (`_hints`), but the marker's event among them still
    divides them: the changes before it are counted at the marker, one after it is not (a
    file written after the marker cancels a finish's marker)."""
    from napari_softcopy.quiet import SourceActivity

    eng = CopyEngine(tmp_path / "a.zarr", tmp_path / "c.zarr", CopyOptions())
    eng._activity = SourceActivity()
    eng._hints([("c/0/0", 0.0), ("c/0/1", 0.25), (STATE_DIR + "/x", 0.0)], touched=True)
    before = eng._activity.changes
    eng._hints([("c/0/2", 0.0), ("complete", 0.0), ("c/0/3", 0.0)], touched=False)
    assert eng._finish_reason == "marker"
    assert eng._marker_event_changes == before + 1  # c/0/2, before the marker
    assert eng._activity.changes == before + 2  # c/0/3, after it
    queued = []
    while (item := eng._pending.take(timeout=0.5)) is not None:
        queued.append(item.path)
        if len(queued) == 4:
            break
    assert sorted(queued) == ["c/0/0", "c/0/1", "c/0/2", "c/0/3"]  # not the private path


def test_a_source_file_gone_when_opened_and_back_is_copied_without_an_error(tmp_path, monkeypatch):
    """zarr-python 3.0 deletes a chunk and writes it anew: a copy that opens the file in
    between finds it gone, and it is back when the copy looks again. That is the source's
    doing, not the destination's: copied anew, no "will retry" error shown (one before). The
    file is really moved away and back; only the moment is chosen."""
    from faults_support import make_archive
    from napari_softcopy.engine import live as live_module

    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    make_archive(src, n_chunks=4, chunk_bytes=4096)  # (finished: its marker is there)
    past = time.time() - 60  # (settled: copied at once)
    for path in src.rglob("*"):
        os.utime(path, (past, past))
    real, raced = live_module.sync_file, []

    def racing(rel, st, dest, **kwargs):
        if rel != "c/2" or raced:
            return real(rel, st, dest, **kwargs)
        raced.append(rel)
        os.rename(src / rel, src / "aside")
        try:
            return real(rel, st, dest, **kwargs)  # (opens the source: gone)
        finally:
            os.rename(src / "aside", src / rel)

    monkeypatch.setattr(live_module, "sync_file", racing)
    e = engine(src, dst)
    assert e.wait(60) and e.state == "verified", e.status().message
    assert raced == ["c/2"]
    assert e.status().error_count == 0, e.status().errors
    assert_identical(src, dst)
