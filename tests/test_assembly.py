"""The manifest's assembly (`napari_softcopy.assembly`): the pieces not covered through the
engine's finish (`test_hash_journal`, `test_copy_manifest`)."""

from __future__ import annotations

import os

from faults_support import tmpfs
from napari_softcopy.assembly import _copy_range


def _append(src, offset, length, dst, kernel=True):
    out = os.open(dst, os.O_WRONLY | os.O_CREAT, 0o644)  # (not O_APPEND: as the manifest's)
    try:
        os.lseek(out, 0, os.SEEK_END)
        with open(src, "rb") as f:
            return _copy_range(f.fileno(), offset, length, out, str(src), kernel)
    finally:
        os.close(out)


def test_lines_are_copied_in_the_kernel_on_one_file_system_else_read_and_written(tmp_path):
    """The proven folders' lines go to the manifest by `os.copy_file_range` where the kernel
    will; across two file systems (a tmpfs here: EXDEV) they are read and written instead,
    and the reason is returned for the finish to say once. The bytes are the same."""
    data = os.urandom(3 << 20)
    src = tmp_path / "lines"
    src.write_bytes(data)
    same = tmp_path / "manifest"
    assert _append(src, 5, 2 << 20, same) is None
    assert _append(src, (2 << 20) + 5, 100, same, kernel=False) is None  # (asked not to)
    assert same.read_bytes() == data[5 : (2 << 20) + 105]
    with tmpfs(tmp_path / "other", "16m") as other:
        refused = _append(src, 7, (2 << 20) + 3, other / "manifest")
        assert refused and "cross-device" in refused, refused
        assert (other / "manifest").read_bytes() == data[7 : (2 << 20) + 10]
