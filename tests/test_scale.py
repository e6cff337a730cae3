"""A day of acquisition, scaled down: memory bound, the watch limit, the last check.

Runs that need a lower inotify watch limit run in a user namespace of their own, whose
``/proc/sys/user/max_inotify_watches`` is lowered without touching the machine's limit (other
copies and tests on the machine keep theirs).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from support import run_in_namespace

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify: Linux only")


# Shared by the scripts: which folders an inotify instance of this process watches.
_WATCHED = """
import os

def watched_inodes():
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:inotify":
                continue
            with open(f"/proc/self/fdinfo/{fd}") as f:
                for line in f:
                    if line.startswith("inotify wd:"):
                        inodes.add(int(line.split(" ino:")[1].split()[0], 16))
        except OSError:
            continue
    return inodes
"""

_REWRITE_BEFORE_THE_MARKER = (
    _WATCHED
    + """
import dataclasses, json, sys, time
from pathlib import Path

from napari_softcopy import CopyEngine, CopyOptions
from napari_softcopy.simulate import simulate
from napari_softcopy.simulate.presets import PRESETS

src, dst, limit = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
Path("/proc/sys/user/max_inotify_watches").write_text(limit)  # this namespace's own
preset = dataclasses.replace(
    PRESETS["manyfiles"], shape=(4, 4, 128, 128), separator="/", interval_s=0.05
)
options = CopyOptions(low_priority=False, wait_for_source=True, rescan_interval=3600.0)
engine = CopyEngine(src, dst, options)
engine.start()
simulate(src, preset, marker=None)  # a real tensorstore writer, while the engine copies

def copied(rel):
    try:
        return (dst / rel).read_bytes() == (src / rel).read_bytes()
    except OSError:
        return False

# A chunk already copied, in a folder without a watch: no event tells of its rewrite.
watched = watched_inodes()
chunks = sorted(p.relative_to(src).as_posix() for p in src.glob("*/*/*/*"))
rel = next(c for c in chunks if (src / c).parent.stat().st_ino not in watched)
deadline = time.monotonic() + 60
while not copied(rel) and time.monotonic() < deadline:
    time.sleep(0.02)
before = (src / rel).stat()
new = bytes(b ^ 0xFF for b in (src / rel).read_bytes())
with open(src / rel, "r+b") as f:  # rewritten in place, the same size...
    f.write(new)
# ...and its mtime put back: only its change time (the recorded source stamp) differs
import os
os.utime(src / rel, ns=(before.st_atime_ns, before.st_mtime_ns))
(src / "complete").write_bytes(b"")  # the acquisition's marker, right after
ok = engine.wait(120)
print(json.dumps({
    "ok": ok, "state": engine.state, "message": engine.status().message, "rel": rel,
    "was_copied": copied(rel), "unwatched": (src / rel).parent.stat().st_ino not in watched,
    "caught": (dst / rel).read_bytes() == new,
}))
"""
)


@linux_only
def test_a_copied_file_rewritten_just_before_the_marker_is_caught(tmp_path):
    """Issue 22 item 4: a chunk already copied is rewritten in place with its size and mtime
    put back, in a folder without a watch (no event), with no scan due, right before the
    marker: the finish's check (the recorded source stamp) catches it, and the marker says
    "identical" to the finished source."""
    source, dest = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    out = run_in_namespace(_REWRITE_BEFORE_THE_MARKER, source, dest, 8)
    assert out["unwatched"], out  # (else the event would tell, and this proves nothing)
    assert out["ok"] and out["state"] == "verified", out
    assert out["caught"], out


_MORE_FOLDERS_THAN_WATCHES = """
import dataclasses, json, sys
from pathlib import Path

from napari_softcopy import CopyEngine, CopyOptions
from napari_softcopy.engine import Tuning
from napari_softcopy.simulate import simulate
from napari_softcopy.simulate.presets import PRESETS

src, dst, limit = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
Path("/proc/sys/user/max_inotify_watches").write_text(limit)  # this namespace's own
# 64 chunk files in 21 folders per timepoint (t, t/z, t/z/y), 12 timepoints: 253 folders
preset = dataclasses.replace(
    PRESETS["manyfiles"], shape=(12, 4, 256, 256), separator="/", interval_s=0.5
)
options = CopyOptions(low_priority=False, wait_for_source=True, rescan_interval=3600.0)
tuning = Tuning(watch_release_idle_s=0.3)  # (a timepoint's folders are idle 0.4 s later)
engine = CopyEngine(src, dst, options, tuning=tuning)
engine.start()
seen = []
def timepoint(t):
    s = engine.status()
    seen.append((s.folders_watched, s.folders_unwatched))
simulate(src, preset, on_timepoint=timepoint)  # a real tensorstore writer, then its marker
ok = engine.wait(120)
s = engine.status()
print(json.dumps({"ok": ok, "state": s.state, "message": s.message, "scans": s.scans,
                  "overflows": s.event_overflows, "seen": seen,
                  "watched": s.folders_watched, "unwatched": s.folders_unwatched}))
"""


@linux_only
def test_more_folders_than_watches_copy_complete_and_say_so(tmp_path):
    """Issue 22 item 5: 253 folders against a limit of 40 watches. Finished folders give
    their watch back to the new ones, so no new folder goes without a watch (no rescan is
    asked for), the copy is complete and identical, and the status says how many folders
    are watched and how many are not."""
    from support import assert_identical

    source, dest = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    out = run_in_namespace(_MORE_FOLDERS_THAN_WATCHES, source, dest, 40)
    assert out["ok"] and out["state"] == "verified", out
    assert assert_identical(source, dest) == 12 * 64 + 2  # (chunks, metadata, marker)
    folders = sum(1 for p in source.rglob("*") if p.is_dir()) + 1
    assert folders > 250
    # (None before the engine has found the source and started watching it)
    watched = [w for w, _ in out["seen"] if w is not None]
    assert len(watched) >= 6 and max(watched) <= 40, out["seen"]
    assert out["watched"] <= 40 and out["watched"] + out["unwatched"] == folders, out
    assert out["scans"] == 1 and out["overflows"] == 0, out  # the first scan only


def test_memory_does_not_follow_a_backlog_of_events(tmp_path, caplog):
    """Issue 22 item 2: a writer far ahead of the copy (here a copy held to 1 MB/s) does not
    make the pending set grow with the backlog: past `Tuning.hint_limit` entries (and, here
    none, `Tuning.hint_spill` paths waiting in compact form: see test_pending) the events'
    files are left to a rescan, which adds them as room comes; the copy is complete all the
    same."""
    import dataclasses

    from napari_softcopy import CopyEngine, CopyOptions
    from napari_softcopy.engine import Tuning
    from napari_softcopy.simulate import simulate
    from napari_softcopy.simulate.presets import PRESETS
    from support import assert_identical

    source, dest = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    preset = dataclasses.replace(PRESETS["manyfiles"], shape=(8, 4, 256, 256), separator="/")
    options = CopyOptions(
        low_priority=False, wait_for_source=True, rescan_interval=3600.0, bandwidth_mb_s=1.0
    )
    tuning = Tuning(hint_limit=40, hint_spill=0, pending_limit=40)
    engine = CopyEngine(source, dest, options, tuning=tuning)
    engine.start()
    pending = []  # while copying (at the finish, the verification's findings are queued)

    def sample(_t: int = 0) -> None:
        status = engine.status()
        if status.state == "copying":
            pending.append(status.files_pending)

    report = simulate(source, preset, rate=float("inf"), on_timepoint=sample)
    while not engine.wait(0.05):
        sample()
        assert engine.state not in ("failed", "stopped"), engine.status().message
    assert engine.state == "verified", engine.status().message
    assert assert_identical(source, dest) == report.files
    # (a few more come from adds under their own backpressure: a scan's last one)
    assert report.files > 500 and max(pending) <= 40 + 5, pending
    # the events left to a scan were said once (found by the rescan or the final walk)
    assert caplog.text.count("files of further events are found by a rescan") == 1


def test_the_engines_memory_does_not_grow_with_files_and_folders(tmp_path):
    """Issue 22 item 2, scaled down: after a live copy of 10,240 files in 1,281 folders
    (a tensorstore writer in a process of its own), what the package still holds, caught up
    and before the marker, is bounded by its caps (watches, the destination's folder cache,
    the pending set made anew, the proofs), not by the files and folders: under 320 kB
    here, where one path kept per folder and a backlog's tables kept 580 kB (and 58 MB at a
    million files)."""
    import dataclasses
    import gc
    import tracemalloc

    from napari_softcopy import CopyEngine, CopyOptions
    from napari_softcopy.engine import Tuning
    from napari_softcopy.simulate.presets import PRESETS  # (imported before measuring)
    from support import assert_identical, wait_for

    source, dest = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    # 256 chunk files in 32 folders (t/z/y) per timepoint, 40 timepoints, 4 per second
    preset = dataclasses.replace(
        PRESETS["manyfiles"], shape=(40, 4, 512, 512), separator="/", interval_s=0.25
    )
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, dataclasses; from napari_softcopy.simulate import simulate; "
            "from napari_softcopy.simulate.presets import PRESETS; "
            "simulate(sys.argv[1], dataclasses.replace(PRESETS['manyfiles'], "
            f"shape={preset.shape}, separator='/', interval_s=0.25), marker=None)",
            str(source),
        ]
    )
    tracemalloc.start()
    try:
        options = CopyOptions(low_priority=False, wait_for_source=True, rescan_interval=3600.0)
        # (without the manifest's hash journal: its batch and queue are bounded by their own
        # sizes, `hashes.BATCH` records and `hashes.QUEUE` paths, not measured here)
        # (and at most 256 proofs of folders: their cap, `proofs.MAX_PROOFS`, is measured
        # in `test_proofs`)
        tuning = Tuning(
            max_watches=64, watch_release_idle_s=0.5, hash_during_copy=False, max_proofs=256
        )
        engine = CopyEngine(source, dest, options, tuning=tuning)
        engine.start()
        assert writer.wait(240) == 0
        files = 40 * 4 * 8 * 8
        wait_for(lambda: engine.status().files_copied >= files, 240, "the copy to catch up")
        wait_for(lambda: engine.status().files_pending == 0, 60, "nothing pending")
        # (and every folder marked by the last copies proven: a queue of the last seconds'
        # folders, `Tuning.prove_quiet_s`, bounded by the rate, not by the run)
        wait_for(lambda: engine._proofs.counts[1] == 0, 60, "the folders proven")
        gc.collect()  # (a full collection empties the free lists: tuples kept for reuse, 60 kB)
        ours = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, "*/napari_softcopy/*")]
        )
        held = sum(stat.size for stat in ours.statistics("filename"))
    finally:
        tracemalloc.stop()
        if writer.poll() is None:
            writer.kill()
    (source / "complete").write_bytes(b"")
    assert engine.wait(120), engine.status().message
    assert assert_identical(source, dest) == files + 2  # (and the metadata, the marker)
    top = "\n".join(map(str, ours.statistics("lineno")[:5]))
    # (199-251 kB over four runs, by what is in flight at the snapshot: a bound at 250 kB
    # failed in CI; one path kept per folder would hold 580 kB here)
    assert held < 320_000, f"{held} bytes held after {files} files:\n{top}"


def test_the_day_benchmark_runs_and_reports(tmp_path):
    """`python -m benchmarks.day` at its smallest: a live run, its figures and its plot."""
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(repo))  # (benchmarks is a folder of the repository)
    from benchmarks import day

    result = day.run(tmp_path / "run", "manyfiles", 3, rate=2.0)
    assert result["exit_code"] == 0 and result["correctness"]["ok"], result
    assert result["files"] == 3 * 2000 + 2 and result["timepoints"] == 3
    assert result["drain_s"] is not None and result["peak_rss_mib"] > 0
    assert len(result["per_timepoint_s"]) == 3 and result["samples"]
    day.plot(result, tmp_path / "day.png")
    assert (tmp_path / "day.png").stat().st_size > 10_000
    assert not (tmp_path / "run").exists()  # (removed, unless kept)
