"""Opening below a destination root in one call (`destinations.beneath`), on a real disk:
the same refusals as the walk one name at a time, with ``openat2`` and without it."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from napari_softcopy import platform
from napari_softcopy.destinations import LocalDestination, beneath


@pytest.fixture(params=["openat2", "one name at a time"])
def mode(request, monkeypatch, tmp_path) -> Iterator[str]:
    if request.param != "openat2":
        monkeypatch.setattr(beneath, "_usable", False)
    else:
        fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            probe = beneath._openat2(fd, ".", os.O_RDONLY | os.O_DIRECTORY)
        finally:
            os.close(fd)
        if probe is None:
            pytest.skip("this kernel has no openat2 (or a sandbox refuses it)")
        os.close(probe)
    yield request.param


@pytest.fixture
def tree(tmp_path) -> Path:
    """root/c/0/1/chunk, a folder link root/lnk -> root/c/0, a file link root/c/0/1/ln ->
    chunk, and outside/secret beside the root."""
    root = tmp_path / "root"
    (root / "c" / "0" / "1").mkdir(parents=True)
    (root / "c" / "0" / "1" / "chunk").write_bytes(b"chunk bytes")
    (root / "lnk").symlink_to(root / "c" / "0")
    (root / "c" / "0" / "1" / "ln").symlink_to("chunk")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_bytes(b"secret")
    (root / "out").symlink_to(tmp_path / "outside")
    return root


def test_a_file_deep_below_is_read_and_no_link_is_followed(tree, mode):
    dest = LocalDestination(tree, create=False)
    try:
        with dest.read("c/0/1/chunk") as f:
            assert f.read() == b"chunk bytes"
        for rel in ("lnk/1/chunk", "c/0/1/ln", "out/secret"):
            with pytest.raises(OSError) as caught:
                dest.read(rel)
            assert caught.value.errno in (errno.ELOOP, errno.ENOTDIR), rel
        assert set(dest.listdir("c/0/1") or {}) == {"chunk", "ln"}
        assert dest.listdir("lnk/1") == {}  # (reached only through a link: empty)
        assert dest.listdir("out") == {}
        assert not dest.unlink("lnk/1/chunk")
        assert (tree / "c" / "0" / "1" / "chunk").exists()
        assert not dest.unlink("out/secret")
        assert (tree.parent / "outside" / "secret").exists()
    finally:
        dest.close()


def test_with_openat2_a_deep_read_opens_no_folder_on_the_way(tree, mode, monkeypatch):
    """On a share every folder opened is a round trip (sshfs: OPENDIR, CLOSE): with
    ``openat2`` the kernel walks the path through its cache of names instead."""
    opened: list[str] = []
    walk = platform.open_folder_below

    def counting(root_fd: int, rel: str) -> int:
        opened.append(rel)
        return walk(root_fd, rel)

    monkeypatch.setattr(beneath, "open_folder_below", counting)
    dest = LocalDestination(tree, create=False)
    try:
        opened.clear()
        with dest.read("c/0/1/chunk") as f:
            assert f.read() == b"chunk bytes"
        assert dest.listdir("c/0/1")
    finally:
        dest.close()
    assert opened == ([] if mode == "openat2" else ["c/0/1", "c/0/1"])
