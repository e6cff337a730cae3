"""The one rule "this destination file is a copy of that source file", and the one settle
check: every caller (live copy, copy helper, resume scan, verification, chunk map) uses
these, so their cases are pinned here once."""

from __future__ import annotations

import os
import time

import pytest

from napari_softcopy.destinations import (
    Capabilities,
    FileInfo,
    copy_difference,
    is_copy_of,
    same_version,
    source_stamp,
)
from napari_softcopy.transfer import RACY_S, settle_left

EXACT = Capabilities()  # what the local filesystem states: mtimes to the nanosecond
FAT = Capabilities(mtime_precision_ns=2 * 10**9, xattrs=False)


@pytest.fixture
def source(tmp_path) -> os.stat_result:
    path = tmp_path / "chunk"
    path.write_bytes(b"12345")
    os.utime(path, ns=(1_600_000_000_000_000_000, 1_600_000_000_123_456_789))
    return os.stat(path)


def copy_of(st: os.stat_result, **changes) -> FileInfo:
    fields = {"is_dir": False, "is_file": True, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return FileInfo(**(fields | changes))


def test_a_copy_has_the_size_the_mtime_and_the_stamp_of_this_version(source):
    assert copy_difference(source, copy_of(source), EXACT) is None
    assert copy_difference(source, copy_of(source, stamp=source_stamp(source)), EXACT) is None
    assert copy_difference(source, None, EXACT) == "missing"
    assert copy_difference(source, copy_of(source, size=4), EXACT) == "size 4 != 5"
    later = copy_of(source, mtime_ns=source.st_mtime_ns + 1)
    assert copy_difference(source, later, EXACT) == "modification time differs"
    folder = copy_of(source, is_dir=True, is_file=False)
    assert copy_difference(source, folder, EXACT) == "not a regular file at the destination"
    rewritten = copy_of(source, stamp=b"1:1")
    assert copy_difference(source, rewritten, EXACT) == "source rewritten after it was copied"


def test_mtimes_are_equal_within_the_destinations_precision(source):
    """A FAT-like destination keeps mtimes to 2 s: a copy whose mtime was rounded is still a
    copy there, and never on a destination that keeps nanoseconds."""
    rounded = copy_of(source, mtime_ns=source.st_mtime_ns - 123_456_789)
    assert is_copy_of(source, rounded, FAT)
    assert not is_copy_of(source, rounded, EXACT)
    assert not is_copy_of(source, copy_of(source, mtime_ns=source.st_mtime_ns + 2 * 10**9), FAT)


def test_the_stamp_is_read_only_where_it_decides(source):
    """Reading a stamp costs a system call a file: only where size and mtime match, and
    never on a destination that keeps no extended attributes."""
    reads = []

    def read_stamp() -> bytes:
        reads.append(1)
        return b"1:1"

    assert not is_copy_of(source, copy_of(source, size=4), EXACT, read_stamp)
    assert reads == []
    assert not is_copy_of(source, copy_of(source), EXACT, read_stamp)
    assert reads == [1]
    assert is_copy_of(source, copy_of(source), FAT, read_stamp)  # (no xattrs: not asked)
    assert reads == [1]
    recorded = copy_of(source, stamp=source_stamp(source))
    assert is_copy_of(source, recorded, EXACT, read_stamp)  # (already read: not again)
    assert reads == [1]


def test_the_settle_check():
    now = time.time_ns()
    assert settle_left(now - 10**9) == 0.0  # a second old: settled
    assert 0.0 < settle_left(now) <= RACY_S  # just written: wait
    assert settle_left(now - 5 * 10**6, 1.0) == pytest.approx(0.995, abs=0.05)
    assert settle_left(now + 60 * 10**9) == 0.0  # a clock ahead: never waited for


def test_the_rules_common_case_is_the_rule(source):
    """`same_version` (the shortcut of the resume scan and the manifest) says "copy" only
    where `copy_difference` does, given no stamp of another version; and never where a
    record, another size or mtime, a folder or a destination without mtimes decides."""
    from napari_softcopy.destinations import NO_MTIME_NS, SourceRecord

    size, mtime = source.st_size, source.st_mtime_ns
    record = SourceRecord(size, mtime, source_stamp(source))
    cases = [
        copy_of(source),
        copy_of(source, stamp=source_stamp(source)),
        copy_of(source, size=size + 1),
        copy_of(source, mtime_ns=mtime + 1),
        copy_of(source, is_dir=True, is_file=False),
        copy_of(source, record=record),
    ]
    coarse = Capabilities(mtime_precision_ns=NO_MTIME_NS, xattrs=False)
    for caps in (EXACT, FAT, coarse):
        for info in cases:
            if same_version(info, size, mtime, caps):
                assert copy_difference(source, info, caps) is None, (info, caps)
    assert same_version(copy_of(source), size, mtime, EXACT)
    assert not same_version(copy_of(source, record=record), size, mtime, EXACT)
    assert not same_version(copy_of(source), size, mtime, coarse)
    assert not same_version(copy_of(source, mtime_ns=mtime + 1), size, mtime, FAT)
