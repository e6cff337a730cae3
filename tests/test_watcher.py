"""The watcher: the engine's own inotify reader, and watchdog's observer where it cannot run."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import threading
from pathlib import Path

import pytest
from watchdog.events import FileSystemEvent

from faults_support import make_archive, run_cli
from napari_softcopy.watcher import (
    EVENT_BATCH_S,
    MOVE_PAIRING_S,
    WATCHER_ENV,
    InotifyWatcher,
)
from support import assert_identical, engine, run_in_namespace, wait_for

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify: Linux only")


class Recorder:
    """Keeps every event it is handed, as (type, src, dest, is_directory)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, bool]] = []
        self.lock = threading.Lock()

    def dispatch(self, event: FileSystemEvent) -> None:
        dest = os.fsdecode(getattr(event, "dest_path", "") or "")
        with self.lock:
            self.events.append(
                (event.event_type, os.fsdecode(event.src_path), dest, event.is_directory)
            )

    def seen(self, kind: str, path: Path | str, dest: Path | str | None = None) -> bool:
        with self.lock:
            return any(
                e[0] == kind and e[1] == str(path) and (dest is None or e[2] == str(dest))
                for e in self.events
            )


@pytest.fixture
def watch(tmp_path):
    started = []

    def start(root: Path, **callbacks) -> tuple[InotifyWatcher, Recorder]:
        recorder = Recorder()
        watcher = InotifyWatcher(str(root), recorder, **{"on_overflow": lambda: None, **callbacks})
        watcher.start()
        started.append(watcher)
        return watcher, recorder

    yield start
    for watcher in started:
        watcher.stop()
        watcher.join(5)


@linux_only
def test_a_burst_of_renames_arrives_as_moves_read_in_batches(tmp_path, watch):
    """Renames from temporary names (as tensorstore and zarr-python finish chunks) reach the
    handler as moves with both names, none as a create, taken in a few large reads."""
    n = 2000
    watcher, recorder = watch(tmp_path)
    for i in range(n):
        temp = tmp_path / f"{i}.__lock"
        temp.write_bytes(b"x")
        os.rename(temp, tmp_path / str(i))
    wait_for(lambda: sum(e[0] == "moved" for e in recorder.events) >= n, 30, "every move")
    moves = {Path(e[2]).name: Path(e[1]).name for e in recorder.events if e[0] == "moved"}
    assert moves == {str(i): f"{i}.__lock" for i in range(n)}
    created = {Path(e[1]).name for e in recorder.events if e[0] == "created"}
    assert created <= {f"{i}.__lock" for i in range(n)}  # no move reported as a create
    # 6,000 kernel events (create, close, move halves); one read each would be 6,000 reads.
    assert watcher.events >= 3 * n
    assert watcher.reads <= n // 10, f"{watcher.reads} reads for {watcher.events} events"
    assert MOVE_PAIRING_S > EVENT_BATCH_S  # a rename split across two reads is still paired


@linux_only
def test_files_in_a_new_folder_are_reported_even_before_its_watch(tmp_path, watch):
    """A writer makes nested folders and files faster than a watch can be added: what was
    already there when the watch came is reported as created, and later files by events."""
    _, recorder = watch(tmp_path)
    deep = tmp_path / "c" / "0" / "1"
    deep.mkdir(parents=True)
    (deep / "0").write_bytes(b"early")
    wait_for(lambda: recorder.seen("created", deep / "0") or recorder.seen("closed", deep / "0"))
    wait_for(lambda: recorder.seen("created", deep), 10, "the nested folder")
    (deep / "1").write_bytes(b"late")  # the watch on c/0/1 exists by now
    wait_for(lambda: recorder.seen("closed", deep / "1"), 10, "the close of a later file")


@linux_only
def test_a_folder_moved_within_the_tree_keeps_reporting_under_its_new_name(tmp_path, watch):
    (tmp_path / "a").mkdir()
    watcher, recorder = watch(tmp_path)
    os.rename(tmp_path / "a", tmp_path / "b")
    wait_for(lambda: recorder.seen("moved", tmp_path / "a", tmp_path / "b"), 10, "the move")
    (tmp_path / "b" / "k").write_bytes(b"x")
    wait_for(lambda: recorder.seen("closed", tmp_path / "b" / "k"), 10, "a file in b")
    assert not recorder.seen("closed", tmp_path / "a" / "k")
    assert watcher.watched == 2


@linux_only
def test_a_folder_moved_out_reads_as_moved_away_and_is_no_longer_watched(tmp_path, watch):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a").mkdir(parents=True)
    outside.mkdir()
    watcher, recorder = watch(root)
    os.rename(root / "a", outside / "a")
    wait_for(lambda: recorder.seen("moved", root / "a", ""), 10, "the move out")
    assert watcher.watched == 1
    (outside / "a" / "k").write_bytes(b"x")
    (root / "after").write_bytes(b"x")  # events are delivered in order: this one comes last
    wait_for(lambda: recorder.seen("closed", root / "after"), 10, "a later event")
    assert not any(Path(e[1]).name == "k" for e in recorder.events)


@linux_only
def test_the_root_deleted_is_reported(tmp_path, watch):
    root = tmp_path / "root"
    root.mkdir()
    _, recorder = watch(root)
    shutil.rmtree(root)
    wait_for(lambda: recorder.seen("deleted", root), 10, "the root's deletion")


@linux_only
def test_a_queue_overflow_is_reported(tmp_path, watch):
    limit = Path("/proc/sys/fs/inotify/max_queued_events")
    old = limit.read_text()
    try:
        limit.write_text("16\n")  # read at inotify_init: only this watcher gets the small queue
    except OSError:
        pytest.skip("cannot lower fs.inotify.max_queued_events here (needs root)")
    overflows = []
    try:
        watcher, recorder = watch(tmp_path, on_overflow=lambda: overflows.append(1))
    finally:
        limit.write_text(old)
    for i in range(200):
        (tmp_path / str(i)).write_bytes(b"x")
    (tmp_path / "new").mkdir()  # its creation may be lost among the dropped events
    for i in range(200):
        (tmp_path / f"more{i}").write_bytes(b"x")
    wait_for(lambda: overflows, 10, "an overflow reported")
    # After the overflows the new folder is watched all the same: its files have events. (A
    # 16-event queue may still overflow while the reader drains the burst: a file whose
    # events were lost that way is written again.)
    wait_for(lambda: watcher.watched == 2, 10, "the new folder watched")
    for attempt in range(20):
        before = len(overflows)
        k = tmp_path / "new" / f"k{attempt}"
        k.write_bytes(b"x")
        wait_for(
            lambda k=k, before=before: recorder.seen("closed", k) or len(overflows) > before,
            10,
            "the file's event or another overflow",
        )
        if recorder.seen("closed", k):
            break
    else:
        raise AssertionError("every file written in the new folder lost its events")


_BEYOND_THE_LIMIT = """
import json, os, sys, threading, time
from pathlib import Path
from napari_softcopy.watcher import InotifyWatcher

root = Path(sys.argv[1])
# This user namespace's own watch limit: the root and one folder (the machine's is untouched).
Path("/proc/sys/user/max_inotify_watches").write_text("2")
seen, asked = [], threading.Event()

class Recorder:
    def dispatch(self, event):
        seen.append(event.src_path)

watcher = InotifyWatcher(str(root), Recorder(), lambda: None, asked.set)
watcher.start()
for i in range(4):
    (root / f"d{i}").mkdir()
asked.wait(10)
deadline = time.monotonic() + 10
while str(root / "d3") not in seen and time.monotonic() < deadline:
    time.sleep(0.01)
# A rescan after lost events tries the refused folders again: still three folders, not five.
for _ in range(2):
    watcher.watches.watch(str(root / "d3"))
print(json.dumps({"asked": asked.is_set(), "watched": watcher.watched,
                  "unwatched": watcher.unwatched, "seen": seen}))
watcher.stop()
watcher.join(5)
"""


@linux_only
def test_folders_beyond_the_watch_limit_ask_for_rescans(tmp_path):
    """Past ``max_user_watches`` a new folder cannot be watched: the watcher asks for rescans
    and counts it (once, however often it is tried again), and goes on. Run in a user
    namespace of its own, whose watch limit can be lowered without touching any other
    process's."""
    out = run_in_namespace(_BEYOND_THE_LIMIT, tmp_path, timeout=60)
    assert out["asked"] and out["watched"] == 2 and out["unwatched"] == 3, out
    # every folder is still reported (its files are found by the rescan it asked for)
    assert {str(tmp_path / f"d{i}") for i in range(4)} <= set(out["seen"]), out


_REFUSED_COUNTED_TO_A_CAP = """
import json, logging, sys, threading, time
from pathlib import Path
import napari_softcopy.watches as watches
from napari_softcopy.watcher import InotifyWatcher

root = Path(sys.argv[1])
Path("/proc/sys/user/max_inotify_watches").write_text("2")  # the root and one folder
watches.MAX_REFUSED = 2  # (the tables made from now on count two refused folders at most)
said = []

class Said(logging.Handler):
    def emit(self, record):
        said.append(record.getMessage())

logging.getLogger("napari_softcopy").addHandler(Said())
seen, asked = set(), threading.Event()

class Recorder:
    def dispatch(self, event):
        seen.add(event.src_path)

watcher = InotifyWatcher(str(root), Recorder(), lambda: None, asked.set)
watcher.start()
for i in range(6):
    (root / f"d{i}").mkdir()
deadline = time.monotonic() + 10
while str(root / "d5") not in seen and time.monotonic() < deadline:
    time.sleep(0.01)
for i in range(6):  # (a rescan tries them again: counted no further)
    watcher.watches.watch(str(root / f"d{i}"))
from napari_softcopy.platform import degraded
print(json.dumps({"asked": asked.is_set(), "watched": watcher.watched,
                  "unwatched": watcher.unwatched, "seen": sorted(seen), "said": said,
                  "notices": degraded()}))
watcher.stop()
watcher.join(5)
"""


@linux_only
def test_the_refused_folders_are_counted_to_a_cap_said_once(tmp_path):
    """Past the kernel's limit every new folder is refused, a day long: their count is a
    set of hashes, kept to `watches.MAX_REFUSED` (memory bounded at any number of folders);
    the cap met is said once, in the log and in the notices a copy's status shows, and every
    folder is still reported (its rescan asked for)."""
    out = run_in_namespace(_REFUSED_COUNTED_TO_A_CAP, tmp_path, timeout=60)
    assert out["asked"] and out["watched"] == 2 and out["unwatched"] == 2, out
    assert {str(tmp_path / f"d{i}") for i in range(6)} <= set(out["seen"]), out
    assert sum("their count stops there" in line for line in out["said"]) == 1, out
    off = "an exact count of the folders without a watch is off"
    assert sum(line.startswith(off) for line in out["notices"]) == 1, out


_REFUSED_CAP_IN_A_COPY = """
import json, sys, time
from pathlib import Path
import napari_softcopy.watches as watches
from napari_softcopy import CopyEngine, CopyOptions
from napari_softcopy.engine import Tuning

root = Path(sys.argv[1])
src, dst = root / "acq.zarr", root / "copy.zarr"
src.mkdir()
(src / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
Path("/proc/sys/user/max_inotify_watches").write_text("1")  # the root's watch only
watches.MAX_REFUSED = 2
e = CopyEngine(src, dst, CopyOptions(low_priority=False, rescan_interval=0.5),
               Tuning(max_watches=None))
e.start()
off = "an exact count of the folders without a watch is off"
try:
    deadline = time.monotonic() + 30
    while e.status().state != "copying" and time.monotonic() < deadline:
        time.sleep(0.01)
    for i in range(5):
        (src / f"d{i}").mkdir()
        (src / f"d{i}" / "0").write_bytes(b"chunk")
    while time.monotonic() < deadline and not (
        any(n.startswith(off) for n in e.status().notices)
        and all((dst / f"d{i}" / "0").exists() for i in range(5))
    ):
        time.sleep(0.01)
    s = e.status()
    print(json.dumps({"state": s.state, "notices": s.notices,
                      "copied": sorted(str(p.relative_to(dst)) for p in dst.glob("d*/0"))}))
finally:
    e.stop()
    e.wait(10)
"""


@linux_only
def test_the_refused_folders_cap_reaches_a_running_copys_status(tmp_path):
    """The cap on the refused folders' count met inside a copy (its watcher thread) is said
    in that copy's status, as the widget shows it, once; the folders are still copied."""
    out = run_in_namespace(_REFUSED_CAP_IN_A_COPY, tmp_path, timeout=90)
    off = "an exact count of the folders without a watch is off"
    assert sum(n.startswith(off) for n in out["notices"]) == 1, out
    assert out["copied"] == [f"d{i}/0" for i in range(5)], out
    assert out["state"] == "copying", out


_PAST_THE_LIMIT = """
import json, sys, threading
from pathlib import Path
from napari_softcopy.watcher import InotifyWatcher

root = Path(sys.argv[1])
Path("/proc/sys/user/max_inotify_watches").write_text("4")  # this namespace's own limit
closed, asked = threading.Condition(), []

class Recorder:
    def __init__(self):
        self.seen = set()
    def dispatch(self, event):
        with closed:
            self.seen.add(event.src_path)
            closed.notify_all()

recorder = Recorder()
watcher = InotifyWatcher(str(root), recorder, lambda: None, lambda: asked.append(1),
                         max_watches=None, release_idle_s=0.0)
watcher.start()
for t in range(12):
    (root / str(t)).mkdir()
    (root / str(t) / "0").write_bytes(b"chunk")
    with closed:
        assert closed.wait_for(lambda: str(root / str(t) / "0") in recorder.seen, 10), t
print(json.dumps({"asked": len(asked), "watched": watcher.watched, "cap": watcher.max_watches,
                  "released": watcher.released, "unwatched": watcher.unwatched}))
watcher.stop()
watcher.join(5)
"""


@linux_only
def test_past_the_kernels_watch_limit_finished_folders_make_room(tmp_path):
    """The kernel refuses a watch (``ENOSPC``): its limit becomes the watcher's cap, idle
    folders give their watch back, and every new folder is watched, without a rescan."""
    out = run_in_namespace(_PAST_THE_LIMIT, tmp_path, timeout=60)
    assert out["asked"] == 0 and out["unwatched"] == 0, out
    assert out["cap"] == 4 and out["watched"] <= 4 and out["released"] >= 12 + 1 - 4, out


@linux_only
def test_finished_folders_give_their_watch_back_past_the_cap(tmp_path, watch, caplog):
    """A time series written front to back: once the cap is reached, the folders without a
    new entry for longest give their watch back; the folder being written keeps reporting,
    nothing asks for a rescan, and a folder given back reports no more."""
    asked = []
    watcher, recorder = watch(
        tmp_path, on_unwatched=lambda: asked.append(1), max_watches=8, release_idle_s=0.0
    )
    for t in range(30):
        folder = tmp_path / str(t)
        folder.mkdir()
        (folder / "0").write_bytes(b"chunk")
        # (written before the folder's watch came: reported as created)
        wait_for(
            lambda f=folder: recorder.seen("closed", f / "0") or recorder.seen("created", f / "0"),
            10,
            f"the chunk in {t}",
        )
        assert watcher.watched <= 8, watcher.watched
    assert watcher.released >= 30 + 1 - 8 and watcher.unwatched == 0 and not asked
    said = [r.getMessage() for r in caplog.records if "gives its watch back" in r.getMessage()]
    assert said == [
        "watching at most 8 folders at once: a folder without a new entry for 0 s gives its "
        "watch back, and is covered by the periodic rescan and the final verification"
    ]
    (tmp_path / "0" / "late").write_bytes(b"x")  # the first folder: its watch was given back
    (tmp_path / "29" / "1").write_bytes(b"chunk")  # events come in order: this one comes last
    wait_for(lambda: recorder.seen("closed", tmp_path / "29" / "1"), 10, "the newest folder")
    assert not recorder.seen("closed", tmp_path / "0" / "late")


@linux_only
def test_folders_still_being_written_keep_their_watch_beyond_the_cap(tmp_path, watch):
    """The cap is soft: a folder is released only once idle, so when every watched folder is
    still active a new one is watched all the same (only the kernel's limit is hard)."""
    watcher, recorder = watch(tmp_path, max_watches=4, release_idle_s=3600.0)
    for t in range(10):
        (tmp_path / str(t)).mkdir()
    wait_for(lambda: watcher.watched == 11, 10, "every folder watched")
    (tmp_path / "0" / "k").write_bytes(b"x")
    wait_for(lambda: recorder.seen("closed", tmp_path / "0" / "k"), 10, "the first folder")
    assert watcher.released == 0 and watcher.unwatched == 0


@linux_only
def test_an_existing_tree_keeps_its_latest_folders_watched(tmp_path, watch):
    """A copy resumed in the middle of an acquisition: the folders already there count as
    idle, walked in the order of their numbers, so the earliest timepoints give their watch
    back and the latest (where the writer is) keep it."""
    for t in range(12):
        (tmp_path / "c" / str(t) / "0").mkdir(parents=True)
    watcher, recorder = watch(tmp_path, max_watches=6, release_idle_s=1.0)
    assert watcher.watched <= 6
    (tmp_path / "c" / "11" / "0" / "k").write_bytes(b"x")
    wait_for(lambda: recorder.seen("closed", tmp_path / "c" / "11" / "0" / "k"), 10, "t=11")
    (tmp_path / "c" / "2" / "0" / "k").write_bytes(b"x")
    (tmp_path / "c" / "11" / "0" / "j").write_bytes(b"x")
    wait_for(lambda: recorder.seen("closed", tmp_path / "c" / "11" / "0" / "j"), 10, "t=11")
    assert not recorder.seen("closed", tmp_path / "c" / "2" / "0" / "k")
    # the folders above the newest keep their watch: the next timepoint is seen
    (tmp_path / "c" / "12").mkdir()
    wait_for(lambda: recorder.seen("created", tmp_path / "c" / "12"), 10, "the next timepoint")
    assert watcher.released >= 1 + 2 * 12 - 6 and watcher.unwatched == 0


@linux_only
def test_a_tree_with_more_folders_than_the_event_queue_starts_without_an_overflow(tmp_path, watch):
    """A resume of a day's archive: more folders than watches, and more than the kernel's
    event queue holds (``max_queued_events``). Each folder that gives its watch back in the
    first walk queues an ``IN_IGNORED``; read as the walk goes, they overflow nothing (an
    overflow makes the engine walk the archive again and say that events were lost)."""
    queue = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if queue > 50_000:
        pytest.skip(f"max_queued_events is {queue}: too many folders to make here")
    for t in range(queue + 500):
        (tmp_path / str(t)).mkdir()
    overflows = []
    watcher, recorder = watch(tmp_path, max_watches=64, on_overflow=lambda: overflows.append(1))
    (tmp_path / str(queue + 499) / "k").write_bytes(b"x")  # (the latest keeps its watch)
    wait_for(lambda: recorder.seen("closed", tmp_path / str(queue + 499) / "k"), 10, "k")
    wait_for(watcher.delivered_all, 10, "every queued event read")
    assert overflows == [] and watcher.watched <= 64
    assert watcher.released >= queue + 500 - 64


def test_watchdogs_observer_is_used_and_said_so_where_inotify_is_not(tmp_path, monkeypatch, caplog):
    """Where the engine's own reader cannot run, watchdog's observer copies as correctly, and
    the log and the status say once what is off."""
    monkeypatch.setenv(WATCHER_ENV, "watchdog")
    source, dest = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    make_archive(source, n_chunks=16)
    with caplog.at_level(logging.WARNING, logger="napari_softcopy"):
        e = engine(source, dest, finish_quiet=0.2)
        wait_for(lambda: e.status().notices, 10, "a notice")
        (source / "c" / "late").write_bytes(b"written while watched")  # seen by the observer
        e.finish()
        assert e.wait(60), e.status().message
    notices = e.status().notices
    assert len(notices) == 1 and "batched event reads" in notices[0], notices
    assert f"{WATCHER_ENV}=watchdog" in notices[0]
    assert caplog.text.count("batched event reads") == 1
    assert_identical(source, dest)


def test_the_cli_json_status_carries_the_notice(tmp_path, monkeypatch):
    monkeypatch.setenv(WATCHER_ENV, "watchdog")
    source, dest = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    make_archive(source, n_chunks=4)
    (source / "complete").write_bytes(b"")
    result = run_cli("copy", source, dest, "--json", state_dir=tmp_path / "state")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines and all(
        any("batched event reads" in n for n in line["notices"]) for line in lines[1:]
    ), lines
    assert result.stderr.count("batched event reads") == 1, result.stderr


@linux_only
def test_the_engines_own_reader_is_used_on_linux(tmp_path):
    source, dest = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    make_archive(source, n_chunks=4)
    e = engine(source, dest, finish_quiet=0.2)
    e.finish()
    assert e.wait(60)
    assert e.status().notices == []


@linux_only
def test_a_burst_of_writes_reaches_the_pending_set_as_a_few_batches_of_hints(tmp_path):
    """Each read's events go to the engine together (`SourceEventHandler.dispatch_many`): a
    file's rename and its close are one hint, a writer's temporary files none, and the
    pending set is locked and its workers woken once a batch, not once an event."""
    from napari_softcopy.pending import PendingSet
    from napari_softcopy.readiness import SourceEventHandler

    n = 2000
    pending = PendingSet()
    batches: list[list[tuple[str, float]]] = []

    def hints(pairs: list[tuple[str, float]], touched: bool) -> None:
        batches.append(pairs)
        pending.add_hints(pairs)

    handler = SourceEventHandler(
        str(tmp_path),
        hint=lambda rel, delay: pytest.fail(f"hint {rel} one by one"),
        rescan=lambda: None,
        root_gone=lambda: None,
        hints=hints,
    )
    (tmp_path / "0").mkdir()  # (watched from the start: its files come by their events)
    watcher = InotifyWatcher(str(tmp_path), handler, lambda: None)
    watcher.start()
    try:
        for i in range(n):
            temp = tmp_path / "0" / f"{i}.__lock"
            with open(temp, "wb") as f:  # (tensorstore's lockfile pattern: rename, then close)
                f.write(b"x")
                os.rename(temp, tmp_path / "0" / str(i))
        wait_for(lambda: len(pending) >= n, 30, "every file pending")
    finally:
        watcher.stop()
        watcher.join(5)
    rels = [rel for batch in batches for rel, _ in batch]
    assert set(rels) == {f"0/{i}" for i in range(n)}  # no temporary file
    # Each file once, but for one whose rename and close fell into two reads.
    assert len(rels) <= n + len(batches)
    assert all(delay == 0.0 for batch in batches for _, delay in batch)
    assert len(batches) <= n // 10, f"{len(batches)} batches for {n} files"
    assert len(pending) == n
