"""The manifest of a verified copy (`napari_softcopy.manifest`) and ``verify DEST`` without
its source: every file, its size and BLAKE3 hash; a flipped byte, a missing and an extra file
are each found and named. (``tests/test_manifest.py`` is the npe2 manifest's.)"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import blake3
import pytest

from faults_support import make_archive
from napari_softcopy import CopyEngine, CopyOptions
from napari_softcopy.destinations import STATE_DIR, LocalDestination
from napari_softcopy.manifest import (
    MANIFEST,
    Manifest,
    ManifestError,
    build_manifest,
    check_manifest,
    manifest_for_copy,
    read_back,
    read_manifest,
)
from napari_softcopy.verify import verify_tree

CLI = [sys.executable, "-m", "napari_softcopy.cli"]


class ListingCounted(LocalDestination):
    """A local destination that notes every folder it lists."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.listed: list[str] = []

    def listdir(self, rel_dir, *args, **kwargs):
        self.listed.append(rel_dir)
        return super().listdir(rel_dir, *args, **kwargs)


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    path = tmp_path / "state"
    monkeypatch.setenv("NAPARI_SOFTCOPY_STATE_DIR", str(path))
    return path


def copied(tmp_path: Path, n_chunks: int = 12, caplog=None) -> tuple[Path, Path]:
    """A finished zarr-python archive, copied and verified by the engine, with its manifest."""
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    make_archive(src, n_chunks=n_chunks, chunk_bytes=16 * 1024)
    engine = CopyEngine(src, dst, CopyOptions(low_priority=False))
    engine.start()
    assert engine.wait(60)
    assert engine.status().state == "verified"
    assert (dst / MANIFEST).exists()  # (written by the engine, before its marker)
    if caplog is not None:  # the finish walked the destination once (its verification)
        made = [r.getMessage() for r in caplog.records if "manifest of" in r.getMessage()]
        assert made and "as the verification listed them" in made[-1], made
    return src, dst


def verify_dest(dst: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, "verify", str(dst), *extra], capture_output=True, text=True, timeout=120
    )


def source_files(src: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _dirs, files in os.walk(src):
        for name in files:
            path = Path(dirpath) / name
            out[path.relative_to(src).as_posix()] = path.read_bytes()
    return out


def test_manifest_lists_every_file_with_its_size_and_blake3(tmp_path):
    src, dst = copied(tmp_path)
    files = source_files(src)
    manifest = read_manifest(LocalDestination(dst, create=False))
    del files["complete"]  # (the marker is written after the manifest, not listed in it)
    assert sorted(manifest.entries) == sorted(files)
    for rel, data in files.items():
        entry = manifest.entries[rel]
        assert (entry.size, entry.digest) == (len(data), blake3.blake3(data).hexdigest()), rel
    assert manifest.marker == "complete"
    assert manifest.source == str(src)
    # The file is documented JSON Lines: a header, then one object per file, each path once
    # (in no order a reader may rely on).
    lines = (dst / MANIFEST).read_text().splitlines()
    header = json.loads(lines[0])
    assert header["hash"] == "blake3" and header["files"] == len(files)
    paths = [json.loads(line)["path"] for line in lines[1:]]
    assert sorted(paths) == sorted(files) and len(set(paths)) == len(paths)
    # Nothing but the manifest in the private folder, no temporary file left.
    assert os.listdir(dst / STATE_DIR) == ["manifest.jsonl"]


def test_verify_dest_alone_says_intact_in_one_line(tmp_path):
    _src, dst = copied(tmp_path)
    result = verify_dest(dst)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"intact: {dst}: 13 files"), lines


def test_verify_dest_finds_a_flipped_byte_a_missing_and_an_extra_file(tmp_path):
    _src, dst = copied(tmp_path)
    chunk = dst / "c" / "3"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x01  # (one bit: the size and mtime stay)
    st = chunk.stat()
    chunk.write_bytes(bytes(data))
    os.utime(chunk, ns=(st.st_atime_ns, st.st_mtime_ns))
    (dst / "c" / "5").unlink()
    (dst / "c" / "99").write_bytes(b"not part of the copy")
    result = verify_dest(dst)
    assert result.returncode == 1
    out = result.stdout.splitlines()
    assert "content differs from the manifest (BLAKE3): c/3" in out
    assert "missing: c/5" in out
    assert "not in the manifest: c/99" in out
    assert out[-1].startswith(f"DIFFERENT: {dst}: ")
    assert "1 missing, 1 extra, 0 of another size, 1 of other content" in out[-1]
    report = json.loads(verify_dest(dst, "--json").stdout)
    assert report["ok"] is False
    assert report["counts"] | {} == {
        "missing": 1,
        "extra": 1,
        "size": 0,
        "content": 1,
        "unreadable": 0,
    }


def test_a_truncated_file_is_another_size(tmp_path):
    _src, dst = copied(tmp_path)
    with open(dst / "c" / "1", "r+b") as f:
        f.truncate(100)
    report = check_manifest(LocalDestination(dst, create=False))
    assert report.size == ["c/1"] and not report.ok


def test_without_a_manifest_verify_dest_is_bad_input_naming_the_fix(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "a").write_bytes(b"x")
    result = verify_dest(folder)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert f"{folder} has no manifest" in result.stderr
    assert "napari-softcopy verify SOURCE" in result.stderr
    missing = verify_dest(tmp_path / "nowhere")
    assert missing.returncode == 2
    assert f"destination {tmp_path / 'nowhere'} does not exist" in missing.stderr


def test_a_manifest_without_its_marker_is_never_an_all_clear(tmp_path):
    _src, dst = copied(tmp_path)
    (dst / "complete").unlink()
    result = verify_dest(dst)
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1].startswith("NOT VERIFIED: ")


def test_a_damaged_manifest_cannot_vouch(tmp_path):
    _src, dst = copied(tmp_path)
    text = (dst / MANIFEST).read_text().splitlines()
    (dst / MANIFEST).write_text("\n".join(text[:-1]) + "\n")  # (one entry lost)
    result = verify_dest(dst)
    assert result.returncode == 1
    assert "damaged" in result.stdout
    with pytest.raises(ManifestError, match="lists 12 files where its header says 13"):
        read_manifest(LocalDestination(dst, create=False))


def test_build_manifest_skips_the_private_folder_the_marker_and_own_temp_files(tmp_path):
    dst = tmp_path / "d"
    (dst / STATE_DIR).mkdir(parents=True)
    (dst / STATE_DIR / "old").write_bytes(b"old")
    (dst / "complete").write_bytes(b"")
    (dst / "a").mkdir()
    (dst / "a" / "x").write_bytes(b"xx")
    (dst / "a" / ".x.1234abcd0.softcopy-tmp").write_bytes(b"partial")
    manifest = build_manifest(LocalDestination(dst, create=False), source="s", marker="complete")
    assert list(manifest.entries) == ["a/x"]
    assert Manifest.from_bytes(manifest.to_bytes()).entries == manifest.entries


def test_manifest_is_published_atomically(tmp_path):
    """Written through `Destination.write_file`: under a temporary name, fsynced, renamed;
    a manifest already there is replaced whole."""
    dst = tmp_path / "d"
    dst.mkdir()
    (dst / "a").write_bytes(b"1")
    dest = LocalDestination(dst, create=False)
    manifest_for_copy(dest, source="s", marker=None)
    first = (dst / MANIFEST).stat().st_ino
    (dst / "b").write_bytes(b"22")
    manifest_for_copy(dest, source="s", marker=None)
    assert (dst / MANIFEST).stat().st_ino != first  # (a rename, not an overwrite in place)
    assert sorted(read_manifest(dest).entries) == ["a", "b"]
    assert os.listdir(dst / STATE_DIR) == ["manifest.jsonl"]


@pytest.mark.skipif(shutil.which("fincore") is None, reason="needs util-linux's fincore")
def test_reading_back_leaves_no_page_of_the_copy_in_the_cache(tmp_path):
    """`read_back` drops the file's cached pages (`posix_fadvise(DONTNEED)`) before it reads
    and again after: checking a copy neither reads the copy's own writes from memory nor
    pushes the acquisition's data out of the cache. (tmp_path is on a disk, not a tmpfs,
    where the cache is the storage.)"""
    dst = tmp_path / "d"
    dst.mkdir()
    data = os.urandom(4 << 20)
    (dst / "chunk").write_bytes(data)
    os.sync()  # (clean pages: only those can be dropped)

    def resident() -> int:
        out = subprocess.run(
            ["fincore", "--bytes", "--noheadings", "--output", "RES", str(dst / "chunk")],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(out.stdout.strip())

    (dst / "chunk").read_bytes()
    if resident() == 0:
        pytest.skip(f"{tmp_path} keeps no page cache here")
    size, digest = read_back(LocalDestination(dst, create=False), "chunk")
    assert (size, digest) == (len(data), blake3.blake3(data).hexdigest())
    assert resident() == 0


def test_no_marker_without_its_manifest(tmp_path):
    """The manifest is written before the marker: where it cannot be written (here a file
    squats the private folder's name), the copy does not end verified and no marker appears."""
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    make_archive(src, n_chunks=4, chunk_bytes=4096)
    dst.mkdir()
    (dst / STATE_DIR).write_bytes(b"not a folder")
    engine = CopyEngine(src, dst, CopyOptions(low_priority=False, force=True))
    engine.start()
    assert engine.wait(60) is False
    status = engine.status()
    assert status.state == "failed"
    assert f"destination {dst / STATE_DIR} is a symbolic link or a file" in status.message
    assert "internal error" not in status.message
    assert not (dst / "complete").exists()


def test_the_manifest_at_the_finish_is_made_from_the_verifications_listing(tmp_path, caplog):
    """The finish walks the destination once: the manifest takes the files the final
    verification listed (and found identical), and lists no folder of the copy again."""
    caplog.set_level(logging.INFO, logger="napari_softcopy.manifest")
    src, dst = copied(tmp_path, caplog=caplog)
    first = read_manifest(LocalDestination(dst)).entries  # (the engine's, from its finish)
    expected = {e.path: (e.size, e.digest) for e in first.values()}
    (dst / MANIFEST).unlink()
    report = verify_tree(src, dst, marker=CopyOptions().marker, stamps=True, listing=True)
    assert report.ok
    dest = ListingCounted(dst, create=False)
    try:
        done = manifest_for_copy(
            dest, source=str(src), marker=CopyOptions().marker, listing=report.listing
        )
        assert done is not None and done.files == len(expected) == report.files_checked
        assert [rel for rel in dest.listed if rel != STATE_DIR] == []
        made = read_manifest(dest)
    finally:
        dest.close()
        report.listing.discard()
    assert list(made.entries) == sorted(expected, key=lambda p: p.split("/"))
    assert {e.path: (e.size, e.digest) for e in made.entries.values()} == expected
