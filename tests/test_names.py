"""Names a destination cannot hold: one clear error naming the file, before it is copied
(exit 2 when the copy starts), never two source files on one destination file. On a real
exFAT (exfat-fuse: Windows names, case-insensitive) and the local disk."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from faults_support import make_archive, run_cli
from mounts import Mount, mounted
from napari_softcopy.destinations import Capabilities, LocalDestination
from napari_softcopy.destinations.names import (
    UnholdableName,
    check_names,
    holds_any_name,
    name_problem,
)
from napari_softcopy.transfer import sync_file

WINDOWS = Capabilities(
    case_sensitive=False, invalid_chars=':*?"<>|\\', trailing_dot_space=False, max_name_bytes=60
)


@pytest.fixture(scope="module")
def exfat(tmp_path_factory) -> Iterator[Mount]:
    with mounted("exfat", tmp_path_factory.mktemp("exfat"), size_mb=64) as m:
        yield m


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("run 12:30.txt", "holds :"),
        ('say "hi"', 'holds "'),
        ("a<b>c|d*e?f", "holds * < > ? |"),
        ("back\\slash", "holds \\\\"),
        ("tab\there", "holds \\t"),
        ("ends.", "ends in a dot or a space"),
        ("ends ", "ends in a dot or a space"),
        ("x" * 61, "is 61 bytes long; the destination holds names up to 60"),
    ],
)
def test_a_name_windows_cannot_hold_is_named_with_the_reason(name, reason):
    assert name_problem(name, WINDOWS).startswith(reason)
    if len(name) <= 60:
        assert name_problem(name, Capabilities()) is None  # a Linux disk holds it


def test_the_names_check_walks_the_source_and_names_the_first_problem(tmp_path):
    (tmp_path / "c" / "0").mkdir(parents=True)
    (tmp_path / "c" / "0" / "0").write_bytes(b"")
    (tmp_path / "c" / "0" / "0.tmp.partial").write_bytes(b"")  # a writer's: never copied
    assert check_names(tmp_path, WINDOWS, "DEST") is None
    (tmp_path / "Labels").mkdir()
    (tmp_path / "labels").mkdir()
    problem = check_names(tmp_path, WINDOWS, "DEST")
    assert problem is not None and "only by case" in problem and "(DEST)" in problem
    assert check_names(tmp_path, Capabilities(), "DEST") is None


def test_the_names_are_not_read_where_the_destination_holds_any_name(tmp_path):
    """A Linux disk to a Linux disk: every name the source can hold, the destination can,
    so the names check reads none (a resume of a million files starts sooner). Any limit
    of the destination's makes it read them all."""
    import dataclasses

    linux = Capabilities()
    assert holds_any_name(str(tmp_path), linux)
    assert not holds_any_name(str(tmp_path), WINDOWS)
    assert not holds_any_name(str(tmp_path), dataclasses.replace(linux, case_sensitive=False))
    assert not holds_any_name(str(tmp_path), dataclasses.replace(linux, max_name_bytes=143))
    assert not holds_any_name(str(tmp_path / "gone"), linux)  # (no answer: read them)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["notes/run 12:30.txt"], "notes/run 12:30.txt: its name holds :"),
        (["notes/Readme", "notes/README"], "only by case"),
    ],
)
def test_the_copy_refuses_at_the_start_with_exit_2_and_writes_nothing(exfat, tmp_path, extra, says):
    source = tmp_path / "src"
    make_archive(source, n_chunks=2)
    for rel in extra:
        (source / rel).parent.mkdir(exist_ok=True)
        (source / rel).write_text(rel)
    dest = exfat.path / f"dest-{tmp_path.name}"
    done = run_cli("copy", source, dest, state_dir=tmp_path / "state", timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "rename it in the source" in lines[0]
    assert not dest.exists()


def test_a_name_appearing_midway_is_refused_before_its_file_is_copied(exfat, tmp_path):
    """Names arriving during a live copy: each is refused by the destination before a byte
    is written, the first of two case-twins keeps its copy, nothing is left half-written."""
    source = tmp_path / "src"
    (source / "c").mkdir(parents=True)
    root = exfat.path / f"live-{tmp_path.name}"
    dest = LocalDestination(root)
    fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY)
    stop = threading.Event()

    def sync(rel: str, data: bytes):
        (source / rel).write_bytes(data)
        st = os.stat(rel, dir_fd=fd)
        return sync_file(rel, st, dest, force=False, stop=stop, src_dir_fd=fd, settle_s=0.0)

    try:
        assert sync("c/a", b"lower").copy.committed
        with pytest.raises(UnholdableName, match=r"cannot copy c/A: .*'a'.* only by case"):
            sync("c/A", b"UPPER")
        with pytest.raises(UnholdableName, match=r"cannot copy c/x:y: its name holds :"):
            sync("c/x:y", b"colon")
    finally:
        os.close(fd)
        dest.close()
    assert os.listdir(root / "c") == ["a"]
    assert (root / "c" / "a").read_bytes() == b"lower"


def test_a_name_longer_than_the_destination_holds_is_refused(tmp_path):
    dest = LocalDestination(tmp_path / "d")
    limit = dest.capabilities.max_name_bytes  # (what its temporary name leaves)
    try:
        dest.release(dest.create_temp("x" * limit))  # (fits, with its temporary name)
        with pytest.raises(UnholdableName, match=f"is {limit + 1} bytes long"):
            dest.create_temp("y" * (limit + 1))
    finally:
        dest.close()
    assert not any(n.startswith("y") or "yyy" in n for n in os.listdir(tmp_path / "d"))
