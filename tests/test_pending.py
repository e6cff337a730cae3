import threading
import time

from napari_softcopy.pending import PendingSet, PendingSnapshot, Ready


def test_one_entry_per_path_and_no_second_worker():
    p = PendingSet()
    p.add("a")
    p.add("a")
    p.add("b")
    assert len(p) == 2
    first = p.take(timeout=1)
    second = p.take(timeout=1)
    assert {first[0], second[0]} == {"a", "b"}
    p.add(first[0])  # arrives while in flight: must not be handed out again now
    assert p.take(timeout=0.05) is None
    p.done(first[0])  # dirty: back in the queue
    assert p.take(timeout=1)[0] == first[0]


def test_done_removes_clean_entries_and_wakes_drain():
    p = PendingSet()
    stop = threading.Event()
    p.add("x")
    path, _ = p.take(timeout=1)
    threading.Timer(0.05, p.done, args=(path,)).start()
    give_up = threading.Timer(5, stop.set)  # (a drain that is never woken fails, not hangs)
    give_up.start()
    p.wait_for_room(0, stop)
    give_up.cancel()
    assert not stop.is_set()
    assert len(p) == 0


def test_delay_is_respected_and_undelayed_add_overrides():
    p = PendingSet()
    p.add("late", delay=10)
    assert p.take(timeout=0.05) is None
    p.add("late")  # a rename-into-place hint: now
    assert p.take(timeout=1)[0] == "late"


def test_retry_after_reschedules():
    p = PendingSet()
    p.add("f")
    path, _ = p.take(timeout=1)
    t0 = time.monotonic()
    p.done(path, retry_after=0.1)
    assert p.take(timeout=2)[0] == "f"
    assert time.monotonic() - t0 >= 0.09


def test_force_flag_is_handed_over_once():
    p = PendingSet()
    p.add("f", force=True)
    assert p.take(timeout=1) == ("f", True)
    p.done("f")
    p.add("f")
    assert p.take(timeout=1) == ("f", False)


def test_close_releases_waiting_workers():
    p = PendingSet()
    result = []
    t = threading.Thread(target=lambda: result.append(p.take()))
    t.start()
    p.close()
    t.join(2)
    assert result == [None]


def test_lag_is_age_of_oldest_entry():
    p = PendingSet()
    p.add("old", size=10)
    time.sleep(0.05)
    p.add("new", size=5)
    count, nbytes, lag = p.snapshot()
    assert (count, nbytes) == (2, 15)
    assert lag >= 0.05
    assert type(p.snapshot()) is PendingSnapshot and p.snapshot().known_bytes == 15


def test_paths_are_handed_out_named():
    p = PendingSet()
    p.add("a", force=True)
    p.add("b")
    first = p.take(timeout=1)
    assert type(first) is Ready and first == Ready(path="a", force=True)
    assert p.take_many(5, timeout=1) == [Ready(path="b", force=False)]


def test_take_many_hands_out_a_batch_of_ready_paths_once():
    p = PendingSet()
    for name in "abcde":
        p.add(name, force=name == "b")
    p.add("later", delay=10)
    first = p.take_many(3)
    assert first == [("a", False), ("b", True), ("c", False)]
    assert p.take_many(10, timeout=0) == [("d", False), ("e", False)]
    assert p.take_many(10, timeout=0) == []  # none ready: an empty batch, not a wait
    p.add("a")  # in flight: not handed out again before it is done
    assert p.take_many(10, timeout=0.05) == []
    p.done("a")
    assert p.take_many(10, timeout=0) == [("a", False)]
    assert not p.closed
    p.close()
    assert p.take_many(10) == [] and p.closed


def test_memory_follows_the_backlog_not_its_largest_moment():
    """After a backlog of 50,000 files is copied, the set gives its room back (a dict keeps
    the size of its largest moment otherwise: 2.5 MiB here, for the whole run)."""
    import sys
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        p = PendingSet()
        paths = [f"c/{i // 100}/{i % 100}" for i in range(50_000)]
        for path in paths:
            p.add(path, size=4600)
        grown = tracemalloc.get_traced_memory()[0] - before
        while (item := p.take(timeout=0)) is not None:
            p.done(item[0])
        assert len(p) == 0
        left = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    names = sys.getsizeof(paths) + sum(map(sys.getsizeof, paths))  # the test's own list
    assert grown - names > 4_000_000, grown  # (the test would prove nothing otherwise)
    assert left - names < 50_000, f"{left - names} bytes kept after the backlog"


def test_a_new_path_beyond_the_limit_waits_compactly_then_is_refused():
    p = PendingSet()
    assert p.add("a", limit=2, spill=2) and p.add("b", limit=2, spill=2)
    assert p.add("c", limit=2, spill=2) and p.add("d", limit=2, spill=2)  # waiting
    assert not p.add("e", limit=2, spill=2)  # refused: the caller leaves it to a scan
    assert p.add("a", limit=2, spill=2, force=True)  # (one already pending is not new)
    assert len(p) == 4 and p.snapshot()[0] == 4
    order = []
    while (item := p.take(timeout=0)) is not None:
        order.append(item[0])
        p.done(item[0])  # (room again: the waiting paths become entries, oldest first)
    assert order == ["a", "b", "c", "d"] and len(p) == 0


def test_waiting_paths_cost_a_fraction_of_entries_and_keep_their_lag():
    import sys
    import tracemalloc

    paths = [
        f"{t}/{z}/{y}/{x}"
        for t in range(20)
        for z in range(20)
        for y in range(10)
        for x in range(10)
    ]  # 40,000, as a writer of 2,000 files a second names them
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        p = PendingSet()
        for path in paths:
            assert p.add(path, limit=1000, spill=100_000)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(p) == 40_000
    entries = 1000 * 250  # (the first thousand are entries)
    assert held - entries < 39_000 * 25, held  # (an entry: ~250 bytes; waiting: under 25)
    time.sleep(0.05)  # (an age to measure: the lag of the oldest waiting path)
    assert p.snapshot()[2] >= 0.05
    assert sys.getsizeof(paths)  # (kept alive while measured: not counted above)


def test_snapshot_keeps_its_figures_as_entries_come_and_go():
    """`snapshot` keeps its count, bytes and oldest age as entries come and go (it no longer
    sums the set at each status): checked against the sums over the set at every step, with
    sizes growing, retries, waiting paths admitted, and a long-waiting entry in flight while
    thousands pass below it (their ages are not kept for ever)."""
    import random

    rng = random.Random(5)
    p = PendingSet()

    def expected():
        entries = p._entries.values()
        oldest = min((e.since for e in entries), default=None)
        return len(p), sum(e.size for e in entries), oldest

    stuck = p.take(timeout=0) if p.add("stuck", size=7) else None
    assert stuck is not None and stuck.path == "stuck"  # in flight for the whole test
    in_flight = []
    for step in range(6000):
        op = rng.random()
        if op < 0.5:
            p.add(f"f{rng.randrange(3000)}", size=rng.randrange(100), limit=500, spill=400)
        elif op < 0.8 and (item := p.take(timeout=0)) is not None:
            in_flight.append(item.path)
        elif in_flight:
            p.done(in_flight.pop(rng.randrange(len(in_flight))), retry_after=None)
        count, known, oldest = expected()
        snap = p.snapshot()
        assert (snap.count, snap.known_bytes) == (count, known), step
        if oldest is not None and not p._n_waiting:
            age = time.monotonic() - oldest
            assert age - 0.05 <= snap.oldest_age_s <= age + 0.05, step
        assert len(p._ages) <= 2 * len(p._entries) + 1024, step
    p.done("stuck")
    for path in in_flight:
        p.done(path)
    while (item := p.take(timeout=0)) is not None:
        p.done(item.path)
    assert tuple(p.snapshot()[:2]) == (0, 0) and not p._ages
