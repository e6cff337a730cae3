"""The chunk map (Qt-free): chunk file states at chunk resolution, aligned to the image."""

from __future__ import annotations

import os
import shutil
import tracemalloc

import numpy as np
import pytest
import zarr

from napari_softcopy.chunkmap import (
    ABSENT,
    COPIED,
    MISMATCHED,
    PENDING,
    compute_chunk_map,
    layer_transform,
)
from napari_softcopy.destination import SOURCE_STAMP
from napari_softcopy.platform import get_xattr
from napari_softcopy.simulate import simulate


@pytest.fixture
def pair(tmp_path):
    """A finished 'demo' archive (grid 3 x 1 x 4 x 4) and an exact copy of it."""
    report = simulate(tmp_path / "src.zarr", "demo", rate=float("inf"), timepoints=3)
    dst = tmp_path / "dst.zarr"
    shutil.copytree(report.path, dst)  # copy2 keeps mtimes
    return report.path, dst


def test_identical_copy_is_all_copied(pair):
    src, dst = pair
    cmap = compute_chunk_map(src, dst, finished=True)
    assert cmap.values.shape == (3, 1, 4, 4)
    assert (cmap.values == COPIED).all()
    assert cmap.counts == {COPIED: 48}
    assert cmap.chunk_shape == (1, 16, 64, 64)


def test_removed_and_corrupted_chunks(pair):
    src, dst = pair
    (dst / "c/1/0/2/3").unlink()  # removed at the destination
    corrupt = dst / "c/2/0/0/1"  # one byte flipped: same size, new mtime
    data = bytearray(corrupt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    grown = dst / "c/0/0/3/3"  # different size, same mtime
    st = os.stat(grown)
    with open(grown, "ab") as f:
        f.write(b"x")
    os.utime(grown, ns=(st.st_atime_ns, st.st_mtime_ns))

    live = compute_chunk_map(src, dst, finished=False)
    assert live.values[1, 0, 2, 3] == PENDING
    assert live.values[2, 0, 0, 1] == PENDING
    assert live.values[0, 0, 3, 3] == PENDING
    done = compute_chunk_map(src, dst, finished=True)
    bad = {tuple(i) for i in np.argwhere(done.values == MISMATCHED)}
    assert bad == {(1, 0, 2, 3), (2, 0, 0, 1), (0, 0, 3, 3)}
    assert done.counts[COPIED] == 45


def test_never_written_chunks_are_absent(tmp_path):
    report = simulate(tmp_path / "src.zarr", "demo", rate=float("inf"), timepoints=3)
    dst = tmp_path / "dst.zarr"
    shutil.copytree(report.path, dst)
    for root in (report.path, dst):  # as if the writer never wrote timepoint 2 of one tile
        (root / "c/2/0/1/1").unlink()
    (report.path / "c/0/0/0/0").unlink()  # deleted by the writer, still at the destination
    cmap = compute_chunk_map(report.path, dst)
    assert cmap.values[2, 0, 1, 1] == ABSENT
    assert cmap.values[0, 0, 0, 0] == PENDING
    assert compute_chunk_map(report.path, dst, finished=True).values[0, 0, 0, 0] == MISMATCHED


def test_writer_temp_files_and_missing_destination(tmp_path):
    report = simulate(tmp_path / "src.zarr", "nested-v2", rate=float("inf"), timepoints=2)
    (report.path / "0" / "0" / "0" / "0.__lock").write_bytes(b"")
    cmap = compute_chunk_map(report.path, tmp_path / "nothing-yet.zarr")
    assert (cmap.values == PENDING).all()
    assert cmap.values.shape == (2, 2, 2, 2)


def test_channel_axis_folds_worst_state_first(tmp_path):
    report = simulate(tmp_path / "src.zarr", "multiscale", rate=float("inf"), timepoints=2)
    dst = tmp_path / "dst.zarr"
    shutil.copytree(report.path, dst)
    (dst / "0/c/1/1/0/2/2").unlink()  # channel 1 only
    cmap = compute_chunk_map(report.path, dst, "0", finished=True, fold_axis=1)
    assert cmap.values.shape == (2, 1, 4, 4)
    assert cmap.chunk_shape == (1, 16, 64, 64)
    assert cmap.values[1, 0, 2, 2] == MISMATCHED
    assert (
        np.delete(cmap.values.ravel(), np.ravel_multi_index((1, 0, 2, 2), (2, 1, 4, 4))) == COPIED
    ).all()


def test_v2_flat_keys_and_sharded_v3(tmp_path):
    v2 = simulate(tmp_path / "v2.zarr", "manyfiles", rate=float("inf"), shape=(2, 2, 128, 128))
    cmap = compute_chunk_map(v2.path, tmp_path / "none.zarr")
    assert cmap.values.shape == (2, 2, 2, 2) and (cmap.values == PENDING).all()
    sharded = simulate(tmp_path / "s.zarr", "sharded", rate=float("inf"), timepoints=1)
    cmap = compute_chunk_map(sharded.path, sharded.path, finished=True)
    assert cmap.chunk_shape == (1, 64, 256, 256)  # one map pixel per shard file
    assert (cmap.values == COPIED).all()


def test_layer_transform_puts_each_chunk_over_its_pixels():
    scale, translate = layer_transform((1, 16, 64, 64), (1.0, 2.0, 0.4, 0.4), (0.0, 0.0, 10.0, 0.0))
    assert scale == pytest.approx([1.0, 32.0, 25.6, 25.6])
    # chunk 0 covers image pixels 0..63, centered at pixel 31.5
    assert translate == pytest.approx([0.0, 15.0, 10.0 + 31.5 * 0.4, 31.5 * 0.4])
    # the edges of chunk j line up with the edges of image pixels j*c - 0.5 and j*c + c - 0.5
    j, c, s, t = 3, 64, 0.4, 0.0
    left = translate[3] + (j - 0.5) * scale[3]
    assert left == pytest.approx(t + (j * c - 0.5) * s)


def test_a_source_chunk_rewritten_with_size_and_mtime_put_back_is_not_copied(tmp_path):
    """The engine's rule, not size and mtime alone: the source stamp (inode, ctime) the engine
    recorded on the copy names another version of the rewritten source file."""
    from support import engine

    report = simulate(tmp_path / "src.zarr", "demo", rate=float("inf"), timepoints=2)
    dst = tmp_path / "dst.zarr"
    e = engine(report.path, dst)
    assert e.wait(60), e.status().message
    assert (compute_chunk_map(report.path, dst, finished=True).values == COPIED).all()
    if get_xattr(dst / "c/1/0/2/3", SOURCE_STAMP) is None:  # e.g. tmpfs before Linux 6.6
        pytest.skip(f"{tmp_path} keeps no extended attributes: the engine records no stamps")
    rewritten = report.path / "c/1/0/2/3"
    st = os.stat(rewritten)
    data = bytearray(rewritten.read_bytes())
    data[len(data) // 2] ^= 0xFF
    rewritten.write_bytes(bytes(data))  # same size
    os.utime(rewritten, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime; a new ctime
    assert os.stat(dst / "c/1/0/2/3").st_mtime_ns == os.stat(rewritten).st_mtime_ns
    live = compute_chunk_map(report.path, dst)
    assert live.values[1, 0, 2, 3] == PENDING
    assert live.counts == {COPIED: 31, PENDING: 1}
    assert compute_chunk_map(report.path, dst, finished=True).values[1, 0, 2, 3] == MISMATCHED


def test_the_map_holds_neither_tree_while_it_walks_them(tmp_path):
    """One walk of both trees (`march`) writes each chunk's state as it meets it: the heap
    grows with one folder's listing, not with the archive (10,000 chunk files in 100
    folders: both trees held as dicts peaked at 5 MiB, the walk at well under 1)."""
    array = zarr.create_array(
        tmp_path / "src.zarr", shape=(100, 800), chunks=(1, 8), dtype="uint8", compressors=None
    )
    array[0, :8] = 1
    # The other 9,999 chunks as zarr-python wrote the first (as array[:] = 1 would: 10 s)
    chunk = (tmp_path / "src.zarr" / "c" / "0" / "0").read_bytes()
    for row in range(100):
        (tmp_path / "src.zarr" / "c" / str(row)).mkdir(exist_ok=True)
        for col in range(100):
            (tmp_path / "src.zarr" / "c" / str(row) / str(col)).write_bytes(chunk)
    dst = tmp_path / "dst.zarr"
    shutil.copytree(tmp_path / "src.zarr", dst)
    (dst / "c" / "99" / "99").unlink()
    compute_chunk_map(tmp_path / "src.zarr", dst)  # (imports, caches: not the walk's)
    tracemalloc.start()
    try:
        cmap = compute_chunk_map(tmp_path / "src.zarr", dst, finished=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert cmap.counts == {COPIED: 9_999, MISMATCHED: 1} and cmap.values[99, 99] == MISMATCHED
    assert peak < 2**20, f"{peak / 2**20:.1f} MiB"
