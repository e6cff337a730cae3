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


def test_a_priority_that_cannot_be_lowered_is_said_once_in_the_log_and_the_status(
    tmp_path, monkeypatch, caplog
):
    """An architecture whose ioprio_set number is unknown: the copy runs at normal IO
    priority, and says so once instead of slowing the acquisition without a word."""
    from napari_softcopy import platform

    monkeypatch.setattr(platform, "_SYS_IOPRIO_SET", {})
    source, dest = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    make_archive(source, n_chunks=8)
    with caplog.at_level(logging.WARNING, logger="napari_softcopy"):
        e = engine(source, dest, low_priority=True, workers=2, finish_quiet=0.2)
        e.finish()
        assert e.wait(60)
    notices = e.status().notices
    assert [n for n in notices if n.startswith("idle IO priority is off")] == [
        f"idle IO priority is off: unknown ioprio_set syscall on {os.uname().machine}"
    ], notices
    assert caplog.text.count("idle IO priority is off") == 1  # three threads, one line
    assert_identical(source, dest)


def test_a_destination_without_extended_attributes_is_said_once_in_the_status(
    tmp_path, monkeypatch, caplog
):
    """Where the destination refuses the source stamp (ENOTSUP, as exFAT or SMB mounts do;
    none of those mounts here, so the refusal is injected), size and mtime decide alone, the
    copy is still complete, and the log and the status's notices say so once."""
    import errno

    def refuse(*_args, **_kwargs):
        raise OSError(errno.ENOTSUP, "Operation not supported")

    monkeypatch.setattr(os, "setxattr", refuse)
    source, dest = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    make_archive(source, n_chunks=8)
    with caplog.at_level(logging.WARNING, logger="napari_softcopy"):
        e = engine(source, dest, workers=2, finish_quiet=0.2)
        e.finish()
        assert e.wait(60), e.status().message
    notices = [n for n in e.status().notices if n.startswith("source stamps")]
    assert len(notices) == 1 and "keeps no extended attributes" in notices[0], notices
    assert str(dest) in notices[0]
    assert caplog.text.count("source stamps at the destination is off") == 1
    assert_identical(source, dest)


def test_each_engine_says_only_its_own_notices(tmp_path, caplog):
    """Two engines in one process, run side by side: the one copying to exFAT (whole-second
    mtimes, no extended attributes) says so in its status and once in the log; the one
    copying to a plain local disk says none of that, nor what the process's own thread
    reported outside any copy."""
    from mounts import mounted
    from napari_softcopy import platform

    platform.degrade("a test's own feature", "reported outside any copy")
    a_src, b_src = tmp_path / "a.zarr", tmp_path / "b.zarr"
    make_archive(a_src, n_chunks=8)
    make_archive(b_src, n_chunks=8)
    with mounted("exfat", tmp_path / "exfat", size_mb=32) as exfat:
        a_dst, b_dst = exfat.path / "a.zarr", tmp_path / "b-copy.zarr"
        with caplog.at_level(logging.WARNING, logger="napari_softcopy"):
            a = engine(a_src, a_dst, workers=2, finish_quiet=0.2)
            b = engine(b_src, b_dst, workers=2, finish_quiet=0.2)
            for e in (a, b):
                e.finish()
            assert a.wait(120), a.status().message
            assert b.wait(120), b.status().message
        a_notices, b_notices = a.status().notices, b.status().notices
    assert_identical(b_src, b_dst)  # (a's, verified by its engine, has whole-second mtimes)
    a_said = [n for n in a_notices if str(a_dst) in n]
    assert any("keeps no extended attributes" in n for n in a_said), a_notices
    assert any("modification times" in n for n in a_said), a_notices
    assert not [n for n in b_notices if str(exfat.path) in n or "a test's own" in n], b_notices
    assert "a test's own feature is off" not in " ".join(a_notices)
    for line in a_said:  # said once in the log, although two threads may have met it
        assert caplog.text.count(line) == 1, caplog.text
