import os
import shutil

import numpy as np
import zarr

from napari_softcopy.verify import verify_tree


def make_archive(path):
    a = zarr.create_array(path, shape=(4, 32, 32), chunks=(1, 16, 16), dtype="uint16")
    a[:] = np.random.default_rng(0).integers(1, 1000, (4, 32, 32), dtype="uint16")


def copy_tree(src, dst):
    shutil.copytree(src, dst, copy_function=shutil.copy2)


def test_identical_trees(tmp_path):
    make_archive(tmp_path / "s")
    copy_tree(tmp_path / "s", tmp_path / "d")
    report = verify_tree(tmp_path / "s", tmp_path / "d", checksum=True)
    assert report.ok and report.files_checked == 17 and report.metadata_files == 1


def test_flipped_byte_needs_checksum(tmp_path):
    make_archive(tmp_path / "s")
    copy_tree(tmp_path / "s", tmp_path / "d")
    chunk = tmp_path / "d" / "c" / "2" / "1" / "0"
    st = chunk.stat()
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    os.utime(chunk, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime
    assert verify_tree(tmp_path / "s", tmp_path / "d").ok
    report = verify_tree(tmp_path / "s", tmp_path / "d", checksum=True)
    assert not report.ok
    assert report.mismatched == [("c/2/1/0", "content differs")]


def test_size_change_found_without_checksum(tmp_path):
    make_archive(tmp_path / "s")
    copy_tree(tmp_path / "s", tmp_path / "d")
    with open(tmp_path / "d" / "c" / "0" / "0" / "0", "ab") as f:
        f.write(b"!")
    report = verify_tree(tmp_path / "s", tmp_path / "d")
    assert not report.ok and report.mismatched[0][0] == "c/0/0/0"
    assert "size" in report.mismatched[0][1]


def test_metadata_compared_by_content(tmp_path):
    make_archive(tmp_path / "s")
    copy_tree(tmp_path / "s", tmp_path / "d")
    meta = tmp_path / "d" / "zarr.json"
    st = meta.stat()
    meta.write_text(meta.read_text().replace("uint16", "uint61"))
    os.utime(meta, ns=(st.st_atime_ns, st.st_mtime_ns))
    report = verify_tree(tmp_path / "s", tmp_path / "d")
    assert report.mismatched == [("zarr.json", "content differs")]


def test_missing_extra_and_marker(tmp_path):
    make_archive(tmp_path / "s")
    copy_tree(tmp_path / "s", tmp_path / "d")
    (tmp_path / "d" / "c" / "3" / "1" / "1").unlink()
    (tmp_path / "d" / "stray").write_text("x")
    (tmp_path / "s" / "complete").write_text("done")
    (tmp_path / "s" / "0.__lock").write_text("temp")  # writers' temp files are ignored
    report = verify_tree(tmp_path / "s", tmp_path / "d", marker="complete")
    assert report.missing == ["c/3/1/1"] and report.extra == ["stray"]
    assert not report.ok
    lines = list(report.lines())
    assert any(line.startswith("missing") and "c/3/1/1" in line for line in lines)


def test_files_in_directories_missing_at_the_source_are_extra(tmp_path):
    make_archive(tmp_path / "s")
    copy_tree(tmp_path / "s", tmp_path / "d")
    shutil.rmtree(tmp_path / "s" / "c" / "3")
    report = verify_tree(tmp_path / "s", tmp_path / "d")
    assert sorted(report.extra) == ["c/3/0/0", "c/3/0/1", "c/3/1/0", "c/3/1/1"]
