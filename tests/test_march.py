"""The one two-tree walk (`march.march`): what it hands its handler, which folders it enters,
what it never looks through, its parts and its cancel. Real trees, a real `LocalDestination`."""

from __future__ import annotations

import contextlib
import errno
import os
import zlib

import pytest

from napari_softcopy.destinations import STATE_DIR, LocalDestination
from napari_softcopy.march import MarchHandler, is_private, march


class Recorder(MarchHandler):
    """Records every call as ``(kind, rel, what the source has, what the destination has)``
    and enters every folder it may."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str | None, str | None]] = []
        self.entered: list[str] = []
        self.errors: list[tuple[str, int | None]] = []

    @staticmethod
    def _src(entry: os.DirEntry) -> str:
        if entry.is_symlink():
            return "link"
        return "dir" if entry.is_dir(follow_symlinks=False) else "file"

    @staticmethod
    def _dst(info) -> str:
        return "dir" if info.is_dir else "file" if info.is_file else "other"

    def src_only(self, folder, entry) -> bool:
        self.calls.append(("src_only", folder.prefix + entry.name, self._src(entry), None))
        return True

    def dst_only(self, folder, name, info) -> bool:
        self.calls.append(("dst_only", folder.prefix + name, None, self._dst(info)))
        return True

    def match(self, folder, entry, info) -> bool:
        kinds = (self._src(entry), self._dst(info))
        self.calls.append(("match", folder.prefix + entry.name, *kinds))
        return True

    def enter(self, folder) -> None:
        assert os.fstat(folder.fd)  # (open while its names are handled)
        self.entered.append(folder.rel)

    def folder_error(self, rel, exc) -> None:
        self.errors.append((rel, exc.errno))

    def by_kind(self, kind: str) -> set[str]:
        return {rel for k, rel, *_ in self.calls if k == kind}


@contextlib.contextmanager
def opened(root):
    dest = LocalDestination(root, create=False)
    try:
        yield dest
    finally:
        dest.close()


def files(root, paths) -> None:
    for rel in paths:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rel.encode())


@pytest.fixture
def trees(tmp_path):
    """A source and a destination that overlap, nested three deep."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    files(src, ["zarr.json", "a/zarr.json", "a/c/0/0", "a/c/0/1", "a/c/1/0", "new/c/0"])
    files(dst, ["zarr.json", "a/zarr.json", "a/c/0/0", "a/c/2/0", "gone/c/0", "gone/c/1"])
    dest = LocalDestination(dst, create=False)
    yield src, dest
    dest.close()


def test_each_name_is_handed_over_once_as_source_only_destination_only_or_both(trees):
    src, dest = trees
    walk = Recorder()
    assert march(src, dest, walk) is True
    rels = [rel for _, rel, *_ in walk.calls]
    assert len(rels) == len(set(rels))  # (once each)
    assert walk.by_kind("match") == {"zarr.json", "a", "a/zarr.json", "a/c", "a/c/0", "a/c/0/0"}
    assert walk.by_kind("src_only") == {"a/c/0/1", "a/c/1", "a/c/1/0", "new", "new/c", "new/c/0"}
    assert walk.by_kind("dst_only") == {
        "a/c/2",
        "a/c/2/0",
        "gone",
        "gone/c",
        "gone/c/0",
        "gone/c/1",
    }
    # source folders are opened (the destination's own are only listed)
    assert sorted(walk.entered) == ["", "a", "a/c", "a/c/0", "a/c/1", "new", "new/c"]
    assert walk.errors == []


def test_a_folder_is_entered_only_where_the_handler_says_so(trees):
    src, dest = trees

    class Shallow(Recorder):
        def src_only(self, folder, entry):
            super().src_only(folder, entry)
            return False

        def dst_only(self, folder, name, info):
            super().dst_only(folder, name, info)
            return False

    walk = Shallow()
    march(src, dest, walk)
    assert walk.by_kind("src_only") == {"a/c/0/1", "a/c/1", "new"}
    assert walk.by_kind("dst_only") == {"a/c/2", "gone"}


def test_only_the_start_folder_is_walked_and_a_missing_side_is_all_one_sided(trees, tmp_path):
    src, dest = trees
    walk = Recorder()
    march(src, dest, walk, start="a/c")
    assert {rel for _, rel, *_ in walk.calls} == {
        "a/c/0", "a/c/0/0", "a/c/0/1", "a/c/1", "a/c/1/0", "a/c/2", "a/c/2/0"
    }  # fmt: skip
    no_dest = Recorder()
    march(src, None, no_dest)
    assert {k for k, *_ in no_dest.calls} == {"src_only"} and len(no_dest.calls) == 12
    no_source = Recorder()
    march(None, dest, no_source)
    assert {k for k, *_ in no_source.calls} == {"dst_only"} and len(no_source.calls) == 12
    assert no_source.entered == []


def test_a_file_on_one_side_and_a_folder_on_the_other(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    files(src, ["x/inner", "y"])
    files(dst, ["x", "y/inner"])
    with opened(dst) as dest:
        walk = Recorder()
        march(src, dest, walk)
    assert ("match", "x", "dir", "file") in walk.calls
    assert ("match", "y", "file", "dir") in walk.calls
    # the source folder is entered (the handler said so): its content has no counterpart
    assert ("src_only", "x/inner", "file", None) in walk.calls
    # a source file's name is never entered, whatever the destination holds there
    assert not any(rel == "y/inner" for _, rel, *_ in walk.calls)


def test_links_are_handed_over_as_links_and_never_followed(tmp_path):
    outside = tmp_path / "outside"
    files(outside, ["secret/a", "b"])
    src, dst = tmp_path / "src", tmp_path / "dst"
    files(src, ["real"])
    files(dst, ["real"])
    (src / "to-dir").symlink_to(outside / "secret")
    (src / "to-file").symlink_to(outside / "b")
    (dst / "to-dir").symlink_to(outside / "secret")
    (dst / "only-link").symlink_to(outside)
    with opened(dst) as dest:
        walk = Recorder()  # (it asks to enter everything)
        march(src, dest, walk)
    assert ("match", "to-dir", "link", "other") in walk.calls
    assert ("src_only", "to-file", "link", None) in walk.calls
    assert ("dst_only", "only-link", None, "other") in walk.calls
    assert not any("secret/" in rel or "only-link/" in rel for _, rel, *_ in walk.calls)


def test_a_folder_swapped_for_a_link_while_the_walk_runs_is_not_entered(tmp_path):
    """Found as a folder, replaced by a link to elsewhere before the walk opens it: it is
    opened without following the link, so nothing outside the source is read."""
    outside = tmp_path / "outside"
    files(outside, ["not-yours"])
    src = tmp_path / "src"
    files(src, ["sub/a"])

    class Swapper(Recorder):
        def src_only(self, folder, entry):
            if entry.name == "sub":
                os.rename(src / "sub", tmp_path / "moved")
                (src / "sub").symlink_to(outside)
            return super().src_only(folder, entry)

    walk = Swapper()
    march(src, None, walk)
    assert walk.errors == [("sub", errno.ELOOP)] or walk.errors == [("sub", errno.ENOTDIR)]
    assert not any("not-yours" in rel for _, rel, *_ in walk.calls)


def test_the_destinations_private_folder_is_skipped_at_the_root_only(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    files(src, ["zarr.json", f"{STATE_DIR}/theirs", f"a/{STATE_DIR}/0"])
    files(dst, ["zarr.json", f"{STATE_DIR}/manifest", f"a/{STATE_DIR}/0", f"b/{STATE_DIR}/1"])
    with opened(dst) as dest:
        walk = Recorder()
        march(src, dest, walk)
    rels = {rel for _, rel, *_ in walk.calls}
    assert not any(rel.startswith(STATE_DIR) for rel in rels)
    assert {f"a/{STATE_DIR}/0", f"b/{STATE_DIR}/1"} <= rels  # (a Zarr's own, below the root)
    assert ("match", f"a/{STATE_DIR}/0", "file", "file") in walk.calls
    # (what the live copy asks of a file event's path)
    assert is_private(STATE_DIR) and is_private(f"{STATE_DIR}/manifest")
    assert not is_private(f"a/{STATE_DIR}/0") and not is_private(f"{STATE_DIR}x/0")


def test_the_parts_of_a_split_walk_share_the_names_and_each_enters_every_source_folder(trees):
    src, dest = trees
    (src / "a" / "c" / "2").write_bytes(b"a file where the destination has a folder")
    whole = Recorder()
    march(src, dest, whole)
    parts = 3
    seen: list[tuple] = []
    for part in range(parts):

        def keep(name, part=part):
            return zlib.crc32(name.encode()) % parts == part

        walk = Recorder()
        march(src, dest, walk, keep=keep)
        # every source folder is entered by every part ...
        assert sorted(walk.entered) == sorted(whole.entered)
        for _, rel, s, _ in walk.calls:
            name = rel.rpartition("/")[2]
            if s != "dir" and not rel.startswith("gone/"):  # (... and files are shared out)
                assert keep(name), rel
        seen += [c for c in walk.calls if c[2] != "dir"]
    files_once = [c for c in whole.calls if c[2] != "dir"]
    assert sorted(seen) == sorted(files_once)  # each file's call in exactly one part
    assert ("match", "a/c/2", "file", "dir") in seen


def test_folders_taken_by_share_are_left_out_and_a_walk_of_each_makes_up_the_whole(trees):
    """``share`` sees the folders still to walk before each one (the next one last); what it
    takes is not entered, and walking each taken folder with ``start`` gives back exactly
    the calls the whole walk makes."""
    src, dest = trees
    whole = Recorder()
    march(src, dest, whole)
    taken: list[tuple[str, bool, bool]] = []

    def share(stack):
        assert stack, "asked with nothing left to walk"
        if len(stack) > 1:
            taken.append(stack.pop(0))  # (the shallowest: a whole subtree)

    walk = Recorder()
    assert march(src, dest, walk, share=share) is True
    assert {rel for rel, *_ in taken} == {"a", "new"}  # (the last, "gone", is the next)
    assert not {rel for rel, *_ in taken} & set(walk.entered)
    for rel, at_source, _ in taken:
        part = Recorder()
        march(src if at_source else None, dest, part, start=rel)
        walk.calls += part.calls
    assert sorted(walk.calls) == sorted(whole.calls)


def test_a_destination_file_where_the_source_has_a_folder_is_seen_by_every_part(tmp_path):
    """The part walk lists at the destination only its own names, and the names of source
    folders: what stands in a source folder's place is seen by whichever part owns it."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    files(src, ["x/inner"])
    files(dst, ["x"])
    with opened(dst) as dest:
        for part in range(2):
            walk = Recorder()
            march(src, dest, walk, keep=lambda name, part=part: hash(name) % 2 == part)
            assert ("match", "x", "dir", "file") in walk.calls


def test_a_cancel_ends_the_walk_within_a_large_folder(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5000):
        (src / str(i)).write_bytes(b"")
    asked = []

    def cancelled() -> bool:
        asked.append(1)
        return len(asked) > 2  # before the root, after 1,000 entries: then cancel

    walk = Recorder()
    assert march(src, None, walk, cancelled=cancelled) is False
    assert 1000 <= len(walk.calls) < 5000


def test_a_cancel_between_folders_enters_no_more(trees):
    src, dest = trees

    walk = Recorder()
    assert march(src, dest, walk, cancelled=lambda: len(walk.entered) >= 2) is False
    assert len(walk.entered) == 2


def test_folder_errors_reach_the_handler_and_by_default_end_the_walk(tmp_path):
    src = tmp_path / "src"
    files(src, ["sub/a", "b"])

    class Breaker(Recorder):
        def src_only(self, folder, entry):
            if entry.name == "sub":  # found a folder, a file by the time it is opened
                os.rename(src / "sub", tmp_path / "moved")
                (src / "sub").write_bytes(b"")
            return super().src_only(folder, entry)

    walk = Breaker()
    march(src, None, walk)
    assert walk.errors == [("sub", errno.ENOTDIR)]
    missing = Recorder()
    assert march(tmp_path / "nothing", None, missing) is True
    assert missing.errors == [("", errno.ENOENT)] and missing.calls == []

    class Default(MarchHandler):
        def src_only(self, folder, entry):
            return True

    with pytest.raises(FileNotFoundError):
        march(tmp_path / "nothing", None, Default())


def test_a_folder_vouched_for_is_not_walked_and_only_the_subfolders_named_are(trees):
    """``vouch`` (the periodic rescan's proven folders): a folder it answers for hands none
    of its names to the handler and is not entered; the subfolders it names are walked as
    at both sides; a folder it answers None for is walked as without it."""
    src, dest = trees
    asked: list[str] = []

    def vouch(rel: str):
        asked.append(rel)
        return ("c",) if rel == "a" else None

    walk = Recorder()
    assert march(src, dest, walk, vouch=vouch) is True
    rels = {rel for _, rel, *_ in walk.calls}
    assert "a/zarr.json" not in rels and "a" not in walk.entered  # (vouched for)
    assert {"a/c/0/0", "a/c/0/1", "a/c/1/0", "a/c/2"} <= rels  # (its subfolder walked)
    assert sorted(walk.entered) == ["", "a/c", "a/c/0", "a/c/1", "new", "new/c"]
    assert "new" not in asked  # (only folders at both sides are asked about)
    assert {"", "a", "a/c", "a/c/0"} <= set(asked)
