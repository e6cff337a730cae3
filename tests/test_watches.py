"""The table of watches: the cap chosen from the kernel's limit, what a watch costs here, and
which folders keep their watch past the cap (the reader itself: test_watcher)."""

from __future__ import annotations

import sys
import threading
import tracemalloc

import pytest

from napari_softcopy import watches
from napari_softcopy.watcher import InotifyWatcher
from support import run_in_namespace, wait_for

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify: Linux only")


class Seen:
    """The paths of the events it is handed."""

    def __init__(self) -> None:
        self.paths: set[str] = set()
        self.lock = threading.Lock()

    def dispatch(self, event) -> None:
        with self.lock:
            self.paths.add(event.src_path)

    def __contains__(self, path: object) -> bool:
        with self.lock:
            return str(path) in self.paths


@pytest.fixture
def started():
    watchers: list[InotifyWatcher] = []
    yield watchers
    for watcher in watchers:
        watcher.stop()
        watcher.join(5)


_KERNEL_LIMIT = """
import json
from pathlib import Path
from napari_softcopy import watches
from napari_softcopy.engine import Tuning

machine = watches.default_max_watches()
Path("/proc/sys/user/max_inotify_watches").write_text("1000")  # this namespace's own
print(json.dumps({"machine": machine, "limit": watches.kernel_watch_limit(),
                  "default": watches.default_max_watches(), "tuning": Tuning().max_watches,
                  "given": Tuning(max_watches=64).max_watches}))
"""


@linux_only
def test_the_cap_is_three_quarters_of_the_kernels_limit_at_most_max_watches(tmp_path):
    """The watch limit is per user: the copy takes three quarters of it by default (the rest
    is the user's other programs'), a user namespace's lower limit included, and never more
    than `MAX_WATCHES`; a cap given (`Tuning.max_watches`) is kept as given."""
    machine = watches.kernel_watch_limit()
    out = run_in_namespace(_KERNEL_LIMIT, tmp_path, timeout=60)
    assert out["machine"] == min(watches.MAX_WATCHES, int(machine * 0.75)), out
    assert out["limit"] == 1000 and out["default"] == out["tuning"] == 750, out
    assert out["given"] == 64, out


@linux_only
def test_a_watch_costs_under_135_bytes_and_a_look_copies_nothing(tmp_path, started):
    """A day's folders keep their watch (110,500 at a million files), so a watch must be
    cheap: its path below the root (not the root's long path again), a dict entry one way
    and a list slot the other (`WatchSlots`), 119 bytes here (144 with a dict each way, 349
    with an absolute path and a recency entry a folder). And the
    engine's looks at a folder's watch (every 0.5 s while proving, each rescan, the finish)
    copy nothing: a copy of every watch was a new dict of 110,000 entries each time."""
    root = tmp_path / ("a-long-folder-name-like-a-users-acquisition-path" * 2) / "data.zarr"
    for t in range(20):
        for z in range(20):
            for y in range(10):
                (root / str(t) / str(z) / str(y)).mkdir(parents=True)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        watcher = InotifyWatcher(str(root), Seen(), lambda: None, max_watches=None)
        started.append(watcher)
        per_watch = (tracemalloc.get_traced_memory()[0] - before) / watcher.watched
        tracemalloc.reset_peak()
        held = tracemalloc.get_traced_memory()[0]
        for t in range(20):
            assert watcher.folder_watches().get(f"{t}/3/4") is not None
        looked = tracemalloc.get_traced_memory()[1] - held
    finally:
        tracemalloc.stop()
    assert watcher.watched == 1 + 20 * (1 + 20 * (1 + 10)), watcher.watched
    assert per_watch < 135, f"{per_watch:.0f} bytes a watch"
    assert looked < 2_000, f"{looked} bytes allocated by 20 looks at {watcher.watched} watches"
    assert watcher.folder_watches()[""] > 0 and "19/19/9" in watcher.folder_watches()


@linux_only
def test_a_folder_active_since_keeps_its_watch_however_early_it_was_watched(tmp_path, started):
    """Past the cap, the idle folders watched first give their watch back; one of them with
    a new entry since keeps it (it is being written again), and so do the folders above the
    newest one."""
    for t in range(10):
        (tmp_path / "c" / str(t)).mkdir(parents=True)
    seen = Seen()
    watcher = InotifyWatcher(
        str(tmp_path), seen, lambda: None, max_watches=6, release_idle_s=3600.0
    )
    started.append(watcher)
    watcher.start()
    # (the folders there before count as idle: the first ones gave their watch back)
    assert watcher.watched <= 6 and "c/0" not in watcher.folder_watches()
    first = next(f"c/{t}" for t in range(10) if f"c/{t}" in watcher.folder_watches())
    (tmp_path / first / "k").write_bytes(b"x")
    wait_for(lambda: tmp_path / first / "k" in seen, 10, "the write in the first watched")
    for t in range(10, 14):
        (tmp_path / "c" / str(t)).mkdir()
        wait_for(lambda t=t: tmp_path / "c" / str(t) in seen, 10, f"c/{t}")
    kept = watcher.folder_watches()
    assert first in kept and "c" in kept and "c/13" in kept, sorted(kept)
    assert watcher.released >= 10 + 4 - 6 and watcher.unwatched == 0
    (tmp_path / first / "j").write_bytes(b"x")
    wait_for(lambda: tmp_path / first / "j" in seen, 10, "a second write there")


def test_the_watch_slots_are_a_dict_in_watch_order_at_most_twice_the_watches_held():
    """`WatchSlots` (descriptor -> folder, a list by descriptor) answers as the dict it
    replaces, in the order watched, through a day's pattern: descriptors the kernel hands
    out in increasing order, the oldest idle given back, a few kept in front for ever (the
    root, a parent), some re-armed far past the end. Its list stays at most about twice
    the watches held (8 bytes a slot), whatever the number of folders watched."""
    import random

    from napari_softcopy.watch_slots import _MIN_HALVED, WatchSlots

    rng = random.Random(22)
    slots, model = WatchSlots(), {}
    wd = 0

    def add(folder: str) -> None:
        nonlocal wd
        wd += rng.choice((1, 1, 1, 2)) if rng.random() > 0.0005 else 100_000  # (gaps too)
        slots[wd] = model[wd] = folder

    for pinned in ("", "data.zarr", "data.zarr/0"):
        add(pinned)
    for n in range(60_000):
        add(f"data.zarr/0/{n // 200}/{n % 200}")
        if len(model) > 2_048:  # (a cap: the oldest idle given back, an eighth at once)
            idle = [w for w, folder in model.items() if folder.count("/") > 1]
            for old in idle[: 256 if rng.random() > 0.1 else 1]:
                assert slots.pop(old) == model.pop(old)
        if n % 997 == 0:  # (a folder renamed; one given back out of order)
            some = rng.choice(list(model))
            slots[some] = model[some] = model[some] + "-moved"
            other = rng.choice(list(model))
            assert slots.pop(other) == model.pop(other)
        assert len(slots._slots) <= 2 * len(model) + 2 * _MIN_HALVED
    assert list(slots.items()) == list(model.items())
    assert len(slots) == len(model)
    assert all(slots.get(w) == folder for w, folder in model.items())
    assert all(slots.get(w) is None for w in rng.sample(range(wd + 2), 5_000) if w not in model)
    with pytest.raises(KeyError):
        slots.pop(wd + 1)
