"""The OS layer: which filesystem holds a destination, and how many copy threads it gets."""

from __future__ import annotations

import contextlib
import logging
import os
import sys

import pytest

from faults_support import make_archive, tmpfs
from napari_softcopy.platform import default_workers, filesystem_type
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
