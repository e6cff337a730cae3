"""The destination probe on every kind of real mount: it finds what the mount keeps (as
measured by hand, `mounts.FACTS`), leaves nothing behind, and a verification of the same
destination judges with the same capabilities as the copy did."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from faults_support import bind_mount, require_mounts
from mounts import KINDS, Mount, mounted
from napari_softcopy import platform
from napari_softcopy.destinations import STATE_DIR, LocalDestination
from napari_softcopy.destinations.probe import probe
from napari_softcopy.destinations.probe_report import (
    PROBE_RECORD,
    DestinationProbe,
    precision_label,
    read_record,
)

_roots = itertools.count()


@pytest.fixture(scope="module", params=KINDS)
def mount(request, tmp_path_factory) -> Iterator[Mount]:
    with mounted(request.param, tmp_path_factory.mktemp(request.param), size_mb=64) as m:
        yield m


@pytest.fixture
def root(mount) -> Path:
    path = mount.path / f"dest{next(_roots)}"
    path.mkdir()
    return path


def test_the_probe_finds_what_the_destination_keeps_and_leaves_nothing(mount, root):
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        found = probe(fd)
    finally:
        os.close(fd)
    facts = mount.facts
    assert found.fs_type == facts.fstype
    assert found.mtime_precision_ns == facts.mtime_precision_ns, found
    assert found.xattrs == facts.xattrs, found
    assert found.case_sensitive == facts.case_sensitive, found
    assert found.stable_mtime == facts.stable_mtime, found
    assert found.atomic_replace
    assert 200 <= found.max_name_bytes <= 255
    assert found.free_bytes is not None and found.free_bytes > 0
    assert os.listdir(root) == []  # not a probe file, not a renamed one, not a folded one
    summary = found.summary()
    assert summary.startswith(
        f"{facts.fstype}, mtime to {precision_label(found.mtime_precision_ns)}"
    )
    assert ("case-insensitive" in summary) != facts.case_sensitive
    assert ("no xattrs" in summary) != facts.xattrs
    assert ("mtimes move" in summary) != facts.stable_mtime


def test_a_copy_records_the_probe_where_it_matters_and_verify_reads_it(mount, root, monkeypatch):
    monkeypatch.setattr(platform, "_process_notices", platform.Notices())  # (outside a copy)
    dest = LocalDestination(root)
    dest.close()
    plain = mount.facts.mtime_precision_ns == 1 and mount.facts.xattrs
    record = root / STATE_DIR / PROBE_RECORD
    # A plain disk (what readers assume without a record) is left with nothing of ours.
    assert os.listdir(root) == ([] if plain else [STATE_DIR])
    if not plain:
        assert os.listdir(root / STATE_DIR) == [PROBE_RECORD]  # (no probe folder left)
        assert DestinationProbe.from_json(record.read_text()) == dest.probed
    said = any("modification times" in n or "extended attributes" in n for n in platform.degraded())
    assert said != plain
    # A verification judges alike, from the record: it probes nothing (a probe file would
    # change the root folder's mtime).
    root_mtime = os.stat(root).st_mtime_ns
    again = LocalDestination(root, create=False)
    try:
        assert again.capabilities == dest.capabilities
    finally:
        again.close()
    assert os.stat(root).st_mtime_ns == root_mtime
    # A rerun of the copy finds the same and leaves the record as it was.
    before = os.stat(record) if not plain else None
    LocalDestination(root).close()
    after = os.stat(record) if not plain else None
    assert (after and (after.st_ino, after.st_mtime_ns)) == (
        before and (before.st_ino, before.st_mtime_ns)
    )


def test_a_destination_that_takes_no_file_is_said_once_and_assumed_exact(tmp_path, monkeypatch):
    """A read-only destination (a verification of a write-protected disk) cannot be probed:
    nanosecond mtimes are assumed, so a coarser one shows differences, never a false
    all-clear; the status says the probe did not run."""
    require_mounts()
    monkeypatch.setattr(platform, "_process_notices", platform.Notices())  # (outside a copy)
    real = tmp_path / "real"
    real.mkdir()
    with bind_mount(real, tmp_path / "ro", read_only=True) as ro:
        dest = LocalDestination(ro, create=False, probing=True)  # (a copy would probe)
    dest.close()
    assert dest.capabilities.mtime_precision_ns == 1
    assert any(n.startswith("probing the destination is off") for n in platform.degraded())


def test_a_broken_record_is_not_trusted(tmp_path):
    root = tmp_path / "d"
    (root / STATE_DIR).mkdir(parents=True)
    (root / STATE_DIR / PROBE_RECORD).write_text("{not json")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert read_record(fd) is None
    finally:
        os.close(fd)
