"""The OS layer: which filesystem holds a destination, and how many copy threads it gets."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import subprocess
import sys

import pytest

from faults_support import make_archive, tmpfs
from napari_softcopy.platform import (
    autogroup_scheduling,
    default_workers,
    filesystem_type,
    session_group_nice,
)
from support import assert_identical, engine

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


@contextlib.contextmanager
def opened(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)


def test_filesystem_type_names_the_mount_that_holds_the_folder(tmp_path):
    with opened("/proc") as fd:
        assert filesystem_type(fd) == "proc"
    with tmpfs(tmp_path / "small", "1m") as mount, opened(mount) as fd:
        assert filesystem_type(fd) == "tmpfs"
        assert default_workers(fd) == 1  # local: one thread, no lock contention


def test_engine_uses_one_worker_on_a_local_destination_unless_told(tmp_path, caplog):
    source = tmp_path / "acq.zarr"
    make_archive(source, n_chunks=16)
    for workers, expected in ((None, 1), (3, 3)):
        dest = tmp_path / f"copy-{workers}.zarr"
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="napari_softcopy.engine"):
            e = engine(source, dest, workers=workers)
            assert e.wait(60)
        assert f"copying with {expected} worker thread(s)" in caplog.text
        workers_seen = {t.name for t in e._threads if t.name.startswith("softcopy-worker")}
        assert len(workers_seen) == expected
        assert_identical(source, dest)


def test_observer_pairs_every_rename_of_a_burst(tmp_path):
    """Renames from temporary names, in a burst (as tensorstore finishes chunks), all reach
    the handler as moves with both names, read in batches and paired from the tail."""
    import threading

    from watchdog.events import FileSystemEventHandler

    from napari_softcopy.platform import EVENT_BATCH_S, MOVE_PAIRING_S, observer_class
    from napari_softcopy.readiness import EVENT_FILTER

    n = 2000
    moves: dict[str, str] = {}
    created: list[str] = []
    done = threading.Event()

    class Handler(FileSystemEventHandler):
        def on_moved(self, event):
            moves[os.path.basename(event.dest_path)] = os.path.basename(event.src_path)
            if len(moves) == n:
                done.set()

        def on_created(self, event):
            created.append(os.path.basename(event.src_path))

    observer = observer_class()()
    observer.schedule(Handler(), str(tmp_path), recursive=True, event_filter=EVENT_FILTER)
    observer.start()
    try:
        queues = [e._inotify._move_event_grouper._queue for e in observer.emitters]
        assert queues and all(q.delay == MOVE_PAIRING_S for q in queues)
        # (a rename whose halves fall into two reads is paired across the reader's pause)
        assert MOVE_PAIRING_S > EVENT_BATCH_S
        assert observer._inotify_fd.read_events.batched
        for i in range(n):
            temp = tmp_path / f"{i}.__lock"
            temp.write_bytes(b"x")
            os.rename(temp, tmp_path / str(i))
        assert done.wait(30), f"{len(moves)} of {n} moves reported"
    finally:
        observer.stop()
        observer.join(5)
    assert moves == {str(i): f"{i}.__lock" for i in range(n)}
    assert set(created) <= {f"{i}.__lock" for i in range(n)}  # no move reported as a create


def test_move_partner_lookup_starts_at_the_newest_event():
    """With thousands of events queued, finding the rename half queued last looks at one."""
    from watchdog.utils.delayed_queue import DelayedQueue

    from napari_softcopy.platform import _find_from_the_tail

    queue = DelayedQueue(0.02)
    for i in range(5000):
        queue.put(("event", i))
    queue._index_and_item = _find_from_the_tail(queue)
    looked_at = []

    def is_last(element):
        looked_at.append(element)
        return element == ("event", 4999)

    assert queue.remove(is_last) == ("event", 4999)
    assert looked_at == [("event", 4999)]
    assert queue.find(lambda e: e == ("event", 7)) == ("event", 7)  # anywhere else: found too
    assert queue.find(lambda e: e == ("event", 4999)) is None  # removed above


_LOWER_AND_REPORT = (
    "from napari_softcopy.platform import lower_session_priority, session_group_nice\n"
    "print(lower_session_priority(), session_group_nice())"
)


@pytest.mark.skipif(not autogroup_scheduling(), reason="this kernel does not share CPU by session")
def test_only_a_session_leader_lowers_its_sessions_scheduling_group():
    """The group is the whole session's: a process sharing its session with a shell (or
    napari) must leave it alone."""
    run = functools.partial(
        subprocess.run, [sys.executable, "-c", _LOWER_AND_REPORT], capture_output=True, text=True
    )
    ours = session_group_nice()  # None in the system-wide group (a CI runner's, a container's)
    leader = run(start_new_session=True)
    assert leader.stdout.split() == ["True", "10"], leader.stderr
    member = run()
    assert member.stdout.split() == ["False", str(ours)], member.stderr
    assert session_group_nice() == ours
