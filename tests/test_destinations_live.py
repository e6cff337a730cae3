"""A live copy onto real destinations of every precision, with a real tensorstore writer
writing meanwhile: it ends verified and identical, writes each file once (at most 1.05x the
archive), and a rerun on the finished pair writes nothing, not even the marker.

exFAT (exfat-fuse: 1 s, no xattrs, case-insensitive), SFTP (sshfs: 1 s, no xattrs), SMB
(rclone mount: 1 ms, setxattr EIO) and xfs (nanoseconds, xattrs) as the plain case."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mounts import Mount, mounted
from napari_softcopy.destinations import STATE_DIR
from napari_softcopy.simulate import simulate
from napari_softcopy.simulate.presets import PRESETS
from napari_softcopy.verify import verify_tree
from support import engine, tree_bytes, wait_for

PRESET = dataclasses.replace(PRESETS["demo"], shape=(6, 8, 128, 128))


@pytest.fixture(
    scope="module",
    params=["exfat", "sftp", "smb", "xfs"],
)
def mount(request, tmp_path_factory) -> Iterator[Mount]:
    with mounted(request.param, tmp_path_factory.mktemp(request.param), size_mb=128) as m:
        yield m


def _snapshot(root: Path) -> dict[str, tuple[int, int, int, int]]:
    """Every file below ``root``, ours included: (inode, size, mtime, ctime). A file
    rewritten, or replaced by a temporary file renamed over it, changes here."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            out[rel] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return out


def test_a_live_copy_is_written_once_and_a_rerun_writes_nothing(mount, tmp_path):
    src = tmp_path / "acq.zarr"
    dst = mount.path / f"copy-{tmp_path.name}"
    e = engine(src, dst, wait_for_source=True)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            simulate(src, PRESET, rate=10)
        except BaseException as exc:  # (reported by the test)
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    writer.join(120)
    assert not errors, errors
    assert e.wait(120), f"engine ended {e.state}: {e.status().message}"
    s = e.status()
    assert s.state == "verified", (s.message, s.errors[-3:])
    facts = mount.facts
    assert s.destination_info.startswith(facts.fstype)
    assert ("no xattrs" in s.destination_info) != facts.xattrs
    source = tree_bytes(src)
    copied = {k: v for k, v in tree_bytes(dst).items() if not k.startswith(f"{STATE_DIR}/")}
    assert copied == source
    archive = sum(len(v) for v in source.values())
    assert s.bytes_copied <= 1.05 * archive, (s.bytes_copied, archive)
    assert verify_tree(src, dst).ok

    # Seen where the bytes are (a share's server folder: FUSE clients make inodes up), once
    # everything the client shows is there (rclone mount uploads what it cached seconds
    # after the writes, then sets the mtime).
    backing = mount.backing / dst.relative_to(mount.path)
    precision = mount.facts.mtime_precision_ns

    def uploaded() -> dict | None:
        client, server = _snapshot(dst), _snapshot(backing)
        for rel, (_ino, size, mtime, _ctime) in client.items():
            there = server.get(rel)
            if there is None or there[1] != size or abs(there[2] - mtime) >= precision:
                return None
        return server

    before = wait_for(uploaded, 60, "the copy to reach the share's server")
    assert set(source) <= set(before)
    t0 = time.monotonic()
    again = engine(src, dst)
    assert again.wait(60), f"rerun ended {again.state}: {again.status().message}"
    took = time.monotonic() - t0
    r = again.status()
    assert r.state == "verified", r.message
    assert (r.files_copied, r.bytes_copied) == (0, 0)
    assert _snapshot(backing) == before  # not the marker, not a record: nothing
    assert took < 30, took
