"""The contract every `Destination` keeps: one conformance class, subclassed per backend.

Like zarr-python's ``zarr.testing.store.StoreTests``: `DestinationTests` holds the tests, a
subclass provides the backend through two fixtures:

- ``destination``: a fresh, empty `Destination` (closed by the fixture afterwards);
- ``replace_root``: a callable that replaces the destination's root behind its back, the way
  an unmounted drive or a folder moved away and re-created does (`Destination.check` must
  notice); a subclass whose backend cannot do that overrides it to skip with the reason.

`tests/test_destination_conformance.py` runs it for the local filesystem (the test's own
folder, a tmpfs, an ext4 image); issue 19 adds xfs, btrfs, exFAT, NTFS, sshfs and SMB, issue
20 S3, each with a subclass of a few lines. Nothing here may know what backend it tests: only
the interface and the capabilities it states.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import blake3
import pytest

from napari_softcopy.destinations import (
    Destination,
    DestinationChanged,
    FileInfo,
    TempFile,
    UnholdableName,
    copy_difference,
    is_copy_of,
    mtime_matches,
)
from napari_softcopy.march import lstat_info

#: An mtime with every digit of its nanoseconds set: a backend keeping less shows it.
MTIME_NS = 1_600_000_000_123_456_789
STAMP = b"1234:1600000000987654321"


class _Source:
    """A source file as the rule reads it (what ``os.stat_result`` has)."""

    def __init__(self, size: int, mtime_ns: int, stamp: bytes = STAMP) -> None:
        ino, ctime = stamp.decode().split(":")
        self.st_size, self.st_mtime_ns = size, mtime_ns
        self.st_ino, self.st_ctime_ns = int(ino), int(ctime)


def _write(temp: TempFile, data: bytes) -> None:
    temp.write(data)


def publish(
    dest: Destination,
    rel: str,
    data: bytes,
    *,
    mtime_ns: int = MTIME_NS,
    stamp: bytes | None = STAMP,
) -> None:
    """Write ``data`` as ``rel`` the way `transfer.copy_file` does."""
    temp = dest.create_temp(rel)
    try:
        _write(temp, data)
        dest.publish(temp, mtime_ns=mtime_ns, atime_ns=mtime_ns, stamp=stamp, fsync=True)
    finally:
        dest.release(temp, uncache=True)


def read_back(dest: Destination, rel: str) -> bytes:
    with dest.read(rel) as f:
        return f.read()


class DestinationTests:
    """The conformance tests of the `Destination` interface (see the module docstring)."""

    @pytest.fixture
    def destination(self) -> Destination:
        raise NotImplementedError("a subclass provides the destination fixture")

    @pytest.fixture
    def replace_root(self) -> Callable[[Destination], None]:
        raise NotImplementedError("a subclass provides the replace_root fixture")

    # -- publishing ------------------------------------------------------------------------
    def test_a_published_file_reads_back_with_its_size_mtime_and_stamp(self, destination):
        data = os.urandom(3 * 1024 * 1024 + 7)
        publish(destination, "a/b/c.bin", data)
        caps = destination.capabilities
        info = destination.stat("a/b/c.bin", stamp=True)
        assert info is not None and info.is_file and not info.is_dir
        assert info.size == len(data)
        assert mtime_matches(info.mtime_ns, MTIME_NS, caps.mtime_precision_ns), (
            f"mtime {info.mtime_ns} is not {MTIME_NS} within {caps.mtime_precision_ns} ns"
        )
        # Capabilities are honest: a stamp is kept exactly where xattrs are claimed.
        assert info.stamp == (STAMP if caps.xattrs else None)
        assert destination.source_stamp("a/b/c.bin") == info.stamp
        assert read_back(destination, "a/b/c.bin") == data
        # The one rule agrees: this is a copy of that source file, not of another version.
        assert is_copy_of(_Source(len(data), MTIME_NS), info, caps)
        assert is_copy_of(_Source(len(data), MTIME_NS), destination.stat("a/b/c.bin"), caps)
        assert not is_copy_of(_Source(len(data) + 1, MTIME_NS), info, caps)
        if caps.xattrs:
            other = _Source(len(data), MTIME_NS, b"1234:1600000000987654322")
            assert not is_copy_of(other, info, caps)

    def test_a_same_size_rewrite_within_the_precision_is_not_a_copy(self, destination):
        """What the destination keeps (mtime precision, xattrs, records where neither does)
        tells two versions of a source file apart, even where its mtimes cannot."""
        caps = destination.capabilities
        publish(destination, "c/0", b"version 1")
        first = _Source(9, MTIME_NS)
        assert copy_difference(first, destination.stat("c/0", stamp=True), caps) is None
        # Rewritten within the destination's precision, size unchanged (a new ctime).
        second = _Source(9, MTIME_NS + max(1, caps.mtime_precision_ns // 2), b"1234:1700000000")
        assert copy_difference(second, destination.stat("c/0", stamp=True), caps) is not None
        listed = (destination.listdir("c", stamps=True) or {}).get("0")
        assert copy_difference(second, listed, caps) is not None

    def test_the_final_name_appears_only_when_published(self, destination):
        temp = destination.create_temp("dir/chunk")
        try:
            _write(temp, b"x" * 100_000)
            assert destination.stat("dir/chunk") is None
            assert "chunk" not in (destination.listdir("dir") or {})
            destination.publish(temp, mtime_ns=MTIME_NS)
            assert destination.stat("dir/chunk").size == 100_000
        finally:
            destination.release(temp)
        assert set(destination.listdir("dir")) == {"chunk"}  # (no temporary file left)

    def test_a_writer_that_fails_midway_leaves_nothing(self, destination):
        publish(destination, "dir/kept", b"kept")
        temp = destination.create_temp("dir/chunk")
        try:
            _write(temp, b"partial")
            raise OSError("the source disk failed")  # (as a read error in transfer)
        except OSError:
            pass
        finally:
            destination.release(temp, uncache=True)
        assert destination.stat("dir/chunk") is None
        assert set(destination.listdir("dir")) == {"kept"}

    def test_publishing_over_a_file_replaces_it_whole(self, destination):
        if not destination.capabilities.atomic_replace:
            pytest.skip("this destination states no atomic replace")
        publish(destination, "f", b"old version", mtime_ns=MTIME_NS - 10**9)
        temp = destination.create_temp("f")
        try:
            _write(temp, b"the new version")
            assert read_back(destination, "f") == b"old version"  # until the rename
            destination.publish(temp, mtime_ns=MTIME_NS)
        finally:
            destination.release(temp)
        assert read_back(destination, "f") == b"the new version"
        assert set(destination.listdir("")) == {"f"}

    def test_write_file_publishes_small_data_durably(self, destination):
        destination.write_file("complete", b'{"ok": true}\n', mtime_ns=MTIME_NS)
        info = destination.stat("complete")
        assert read_back(destination, "complete") == b'{"ok": true}\n'
        assert mtime_matches(info.mtime_ns, MTIME_NS, destination.capabilities.mtime_precision_ns)

    # -- reading ---------------------------------------------------------------------------
    def test_listdir_gives_files_and_folders_as_file_info(self, destination):
        publish(destination, "arr/zarr.json", b"{}")
        publish(destination, "arr/c/0/0", b"12345")
        listed = destination.listdir("arr")
        assert set(listed) == {"zarr.json", "c"}
        assert listed["c"].is_dir and not listed["c"].is_file
        chunk_folder = destination.listdir("arr/c/0")
        assert isinstance(chunk_folder["0"], FileInfo)
        assert chunk_folder["0"].is_file and chunk_folder["0"].size == 5
        assert destination.stat("arr/c").is_dir
        assert destination.listdir("not/there") == {}
        assert destination.stat("not/there") is None

    def test_listdir_keeps_what_is_asked_with_the_stamps_asked_for(self, destination):
        publish(destination, "d/a", b"1")
        publish(destination, "d/b", b"22", stamp=None)
        plain = destination.listdir("d")
        assert plain["a"].stamp is None and plain["b"].stamp is None  # (not asked for)
        stamped = destination.listdir("d", stamps=True)
        assert stamped["a"].stamp == (STAMP if destination.capabilities.xattrs else None)
        assert stamped["b"].stamp is None  # (none recorded)
        assert set(destination.listdir("d", keep=lambda name: name == "b")) == {"b"}

    def test_an_acknowledged_digest_where_given_is_the_bytes_of_the_version_listed(
        self, destination
    ):
        publish(destination, "h/0", b"the chunk's bytes")
        info = destination.stat("h/0", stamp=True)
        digest = destination.acknowledged_digest("h/0", info)
        if digest is None:
            return  # (not known here: the manifest takes the hash journal's)
        assert digest == blake3.blake3(b"the chunk's bytes").hexdigest()
        other = FileInfo(False, True, info.size, info.mtime_ns + 1_000_000_000, info.stamp)
        assert destination.acknowledged_digest("h/0", other) is None  # (another version)
        publish(destination, "h/0", b"other bytes")
        again = destination.stat("h/0", stamp=True)
        assert (
            destination.acknowledged_digest("h/0", again)
            == blake3.blake3(b"other bytes").hexdigest()
        )
        destination.unlink("h/0")
        assert destination.acknowledged_digest("h/0", again) is None

    def test_kinds_where_given_names_what_listdir_lists(self, destination):
        publish(destination, "k/zarr.json", b"{}")
        publish(destination, "k/c/0", b"12345")
        kinds = destination.kinds("k")
        if kinds is None:
            return  # (no listing of names alone here: `prove_folder` then compares)
        listed = destination.listdir("k")
        assert kinds == {name: info.is_file for name, info in listed.items()}
        assert kinds == {"zarr.json": True, "c": False}
        assert destination.kinds("not/there") == {}

    def test_lstats_where_stated_list_what_listdir_lists(self, destination):
        publish(destination, "l/zarr.json", b"{}")
        publish(destination, "l/c/0", b"12345")
        if not destination.capabilities.lstat_listing:
            with pytest.raises(NotImplementedError):
                destination.lstats("l")
            return
        listed, lstats = destination.listdir("l"), destination.lstats("l")
        plain = {name: lstat_info(st) for name, st in lstats.items()}
        assert plain == {
            name: FileInfo(i.is_dir, i.is_file, i.size, i.mtime_ns) for name, i in listed.items()
        }
        assert plain["zarr.json"].size == 2 and plain["c"].is_dir
        assert destination.lstats("not/there") == {}
        assert destination.lstats("l", cancelled=lambda: True) in (None, lstats)

    def test_listdir_can_be_cancelled(self, destination):
        destination.makedirs("many")
        for i in range(1001):
            publish(destination, f"many/{i}", b"")
        assert len(destination.listdir("many")) == 1001
        assert destination.listdir("many", cancelled=lambda: True) is None

    def test_names_with_spaces_and_unicode(self, destination):
        rel = "my acquisition/ünïcödé ßtack.zarr/0 1"
        publish(destination, rel, b"data")
        assert set(destination.listdir("my acquisition")) == {"ünïcödé ßtack.zarr"}
        assert read_back(destination, rel) == b"data"

    def test_the_longest_name_stated_can_be_published(self, destination):
        n = destination.capabilities.max_name_bytes
        name = "n" * n
        publish(destination, name, b"long")
        assert destination.stat(name).size == 4

    def test_case_sensitivity_is_as_stated(self, destination):
        publish(destination, "Chunk", b"upper")
        if destination.capabilities.case_sensitive:
            publish(destination, "chunk", b"lower")
            assert set(destination.listdir("")) == {"Chunk", "chunk"}
        else:
            # Where case folds, a case twin is refused before a byte is written: two source
            # files never land on one destination file, nor is one taken for the other's copy.
            with pytest.raises(UnholdableName, match="only by case"):
                publish(destination, "chunk", b"lower")
            assert destination.stat("chunk") is None
            assert set(destination.listdir("")) == {"Chunk"}
        assert read_back(destination, "Chunk") == b"upper"

    def test_a_name_the_destination_cannot_hold_is_refused_before_writing(self, destination):
        caps = destination.capabilities
        for name in [f"a{c}b" for c in caps.invalid_chars] + ["x" * (caps.max_name_bytes + 1)]:
            with pytest.raises(UnholdableName, match="rename it in the source"):
                publish(destination, f"d/{name}", b"data")
        assert not destination.listdir("d")  # (nothing, not even a temporary file)

    # -- deleting, flushing, the root ------------------------------------------------------
    def test_delete(self, destination):
        publish(destination, "d/f", b"x")
        assert destination.unlink("d/f")
        assert destination.stat("d/f") is None
        assert not destination.unlink("d/f")
        assert not destination.unlink("nowhere/f")

    def test_flush_free_space_and_a_stable_root(self, destination):
        publish(destination, "f", b"x")
        destination.fsync_dir("")
        destination.flush()
        free = destination.free_space()
        assert free is None or (isinstance(free, int) and free >= 0)
        destination.check()  # (the root is where it was)
        assert destination.suggested_workers() >= 1

    def test_check_notices_a_replaced_root(self, destination, replace_root):
        publish(destination, "f", b"x")
        destination.check()
        replace_root(destination)
        with pytest.raises(DestinationChanged, match="destination"):
            destination.check()
