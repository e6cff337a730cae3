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
from napari_softcopy.destinations import STATE_DIR, LocalDestination, records
from napari_softcopy.proofs import ProofSpool
from napari_softcopy.simulate import simulate
from napari_softcopy.simulate.presets import PRESETS
from napari_softcopy.transfer import sync_file
from napari_softcopy.verify import verify_tree
from napari_softcopy.verify_folders import walk_unproven
from support import assert_manifest_is_fresh, engine, tree_bytes, wait_for
from test_proofs import rewrite_after_proofs

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


# -- the finish on a share: through the copy's own open destination ---------------------------
@pytest.fixture(scope="module")
def share(tmp_path_factory) -> Iterator[Mount]:
    """sshfs: whole-second mtimes and no xattrs, so the records decide what is a copy."""
    with mounted("sftp", tmp_path_factory.mktemp("share"), size_mb=64) as m:
        yield m


def _write(path: Path, data: bytes, mtime_ns: int) -> None:
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def _sync(source: Path, dest: LocalDestination, rel: str) -> None:
    fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY)
    try:
        st = os.stat(rel, dir_fd=fd, follow_symlinks=False)
        stop = threading.Event()
        result = sync_file(rel, st, dest, force=False, stop=stop, src_dir_fd=fd, settle_s=0.0)
        assert result.copy is not None and result.copy.committed
    finally:
        os.close(fd)


def test_the_finish_walk_reads_the_copys_latest_records_without_writing_them_back(
    share, tmp_path, monkeypatch
):
    """The finish's walk goes through the copy's own open destination (`walk_unproven`'s
    ``dest``): its records of the latest copies count though not yet written back (a fresh
    open would not see them: that write was a round trip per folder after the marker), and
    a copy changed behind it is still found; the destination stays open for the marker."""
    monkeypatch.setattr(records, "FLUSH_EVERY_S", 1e9)  # (written back only when asked)
    source, root = tmp_path / "src", share.path / f"own-{tmp_path.name}"
    (source / "f").mkdir(parents=True)
    t0 = 1_700_000_000_250_000_000
    _write(source / "f" / "a", b"version 1", t0)
    _write(source / "f" / "b", b"bbbb", t0)
    dest = LocalDestination(root)
    assert dest.capabilities.records, dest.summary
    _sync(source, dest, "f/a")
    _sync(source, dest, "f/b")
    dest.save_records()
    # Rewritten with its size and mtime put back (only the record's source stamp tells),
    # copied again; its new record is in memory only.
    _write(source / "f" / "a", b"version 2", t0)
    _sync(source, dest, "f/a")

    def walk(through: LocalDestination | None):
        spool = ProofSpool()
        try:
            report, _ = walk_unproven(
                str(source), str(root), {}, spool, marker="complete", dest=through
            )
        finally:
            spool.discard()
        if report.listing is not None:
            report.listing.discard()
        return report

    fresh = walk(None)  # (as `verify` opens it: the record on disk is of version 1)
    assert [rel for rel, _why in fresh.mismatched] == ["f/a"], fresh.summary()
    own = walk(dest)
    assert own.ok and own.files_checked == 2, own.summary()
    assert dest.stat("f/a") is not None  # (left open: the marker is written through it)
    # A copy changed behind the copy's back is found though its record is in memory.
    (root / "f" / "b").write_bytes(b"bbbbb")
    changed = walk(dest)
    assert [rel for rel, _why in changed.mismatched] == ["f/b"], changed.summary()
    dest.close()


def test_a_rewrite_after_its_folder_was_proven_is_copied_before_the_marker_on_a_share(
    share, tmp_path, monkeypatch
):
    """`test_proofs`'s rewrite (same size, mtime put back, its hint held back from the live
    copy) on sshfs, where only the records tell the versions apart: the finish, walking
    through the copy's own destination, copies it before the marker."""
    src, dst = tmp_path / "acq.zarr", share.path / f"proven-{tmp_path.name}"
    e, every = rewrite_after_proofs(src, dst, monkeypatch)
    assert e.status().state == "verified", e.status().message
    copied = {k: v for k, v in tree_bytes(dst).items() if not k.startswith(f"{STATE_DIR}/")}
    assert copied == tree_bytes(src)
    assert verify_tree(src, dst).ok  # (mtimes to the second there)
    assert_manifest_is_fresh(dst)
    v = e.status().verification
    assert v["folders_walked"] <= 3 and v["folders_proven"] >= len(every) - 3, v
