"""Many uploads in flight, bounded memory (`S3Destination.suggested_workers`, `s3_objects.
BIG_SLOTS`), against a real SeaweedFS: small files never wait for one another, while at most
`BIG_SLOTS` files are held in memory beyond `SMALL_BYTES` at once, whatever the workers."""

from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from destination_tests import MTIME_NS, STAMP
from napari_softcopy.destinations.s3 import S3Destination
from napari_softcopy.destinations.s3_objects import BIG_SLOTS, SMALL_BYTES
from test_s3_destination import keys

pytest_plugins = ("s3_server",)  # (its fixtures: s3_server, s3_env)
_prefixes = itertools.count()

#: Uploads at once in the test: more than `BIG_SLOTS`, fewer than the default workers.
N = BIG_SLOTS + 16


@pytest.mark.parametrize("said", [True, False], ids=["size said first", "write only"])
@pytest.mark.parametrize(("size", "most"), [(4 * SMALL_BYTES, BIG_SLOTS), (SMALL_BYTES // 2, N)])
def test_files_held_beyond_the_small_size_at_once_are_bounded(s3_env, size, most, said):
    """(`transfer` says the size before it reads a byte: `TempFile.expect`.)"""
    prefix = f"inflight/{os.getpid()}-{next(_prefixes)}"
    dest = S3Destination(f"s3://softcopy/{prefix}")
    assert dest.suggested_workers() >= N
    cond = threading.Condition()
    held = peak = 0

    def one(i: int) -> None:
        nonlocal held, peak
        temp = dest.create_temp(f"c/{i}")
        try:
            if said:
                temp.expect(size)  # (a large file waits here for a slot, before its read)
            else:
                temp.write(os.urandom(size))  # (or here, where the size was not said)
            with cond:
                held += 1
                peak = max(peak, held)
                cond.notify_all()
                # All hold their bytes at once unless bounded (a deadline, not a timing).
                # (``peak``, not ``held``: the first woken publish and leave at once, and
                # the rest would then wait out the deadline)
                cond.wait_for(lambda: peak >= N, timeout=3.0)
            if said:
                temp.write(os.urandom(size))
            dest.publish(temp, mtime_ns=MTIME_NS, stamp=STAMP)
        finally:
            with cond:
                held -= 1  # (before the slot is given back: the next one counts after)
            dest.release(temp)

    try:
        with ThreadPoolExecutor(N) as pool:
            list(pool.map(one, range(N)))
    finally:
        dest.close()
    assert peak == most
    assert keys(s3_env, prefix) >= {f"c/{i}" for i in range(N)}
