"""Lazy layer data for Zarr archives (Qt-free): arrays, OME-NGFF images, plates, differences."""

from __future__ import annotations

import json
import shutil

import dask.array as da
import numpy as np
import pytest

from napari_softcopy.layer_data import (
    LayerSource,
    difference_dtype,
    difference_layers,
    open_layers,
    reopen_data,
    view_signature,
)
from napari_softcopy.open_zarr import OpenError, dask_chunks, inspect_archive, read_image_spec
from napari_softcopy.simulate import frame, simulate


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    """Finished simulated archives (written as fast as possible), by preset name."""
    root = tmp_path_factory.mktemp("archives")
    out = {}
    for preset in ("demo", "multiscale", "multiscale-0.4", "plate", "plate-0.4", "sharded"):
        out[preset] = simulate(root / f"{preset}.zarr", preset, rate=float("inf"), timepoints=2)
    return out


def _levels(data):
    return data if isinstance(data, list) else [data]


def test_plain_array_is_lazy_and_equal(archives):
    report = archives["demo"]
    [(data, kwargs, kind)] = open_layers(report.path)
    assert kind == "image"
    assert isinstance(data, da.Array)  # lazy: nothing read yet
    assert data.shape == (2, 16, 256, 256)
    assert kwargs["axis_labels"] == ["t", "z", "y", "x"]
    assert kwargs["scale"] == [1.0, 1.0, 1.0, 1.0]
    np.testing.assert_array_equal(np.asarray(data[1]), frame(report.spec, 1))


@pytest.mark.parametrize("preset", ["multiscale", "multiscale-0.4"])
def test_ome_multiscale_has_levels_scale_axes_and_channels(archives, preset):
    report = archives[preset]
    layers = open_layers(report.path)
    assert len(layers) == 2  # one layer per channel
    for c, (data, kwargs, _kind) in enumerate(layers):
        levels = _levels(data)
        assert kwargs["multiscale"] is True
        assert [a.shape for a in levels] == [(2, 16, 256, 256), (2, 16, 128, 128), (2, 16, 64, 64)]
        assert kwargs["axis_labels"] == ["t", "z", "y", "x"]
        t_scale = report.spec.interval_s or 1.0
        assert kwargs["scale"] == pytest.approx([t_scale, 2.0, 0.4, 0.4])
        assert kwargs["units"][1:] == ["micrometer"] * 3
        assert kwargs["blending"] == "additive"
        assert kwargs["metadata"]["softcopy"]["channel"] == c
        np.testing.assert_array_equal(np.asarray(levels[0][1]), frame(report.spec, 1)[c])
        np.testing.assert_array_equal(np.asarray(levels[2][0]), frame(report.spec, 0, level=2)[c])


@pytest.mark.parametrize("preset", ["plate", "plate-0.4"])
def test_plate_opens_one_field_of_the_chosen_well(archives, preset):
    report = archives[preset]
    info = inspect_archive(report.path)
    assert info.kind == "plate"
    assert info.wells == {"A/1": ["A/1/0"], "A/2": ["A/2/0"]}
    [(data, kwargs, _)] = open_layers(report.path, well="A/2", field=0)
    levels = _levels(data)
    assert [a.shape for a in levels] == [(2, 8, 128, 128), (2, 8, 64, 64)]
    assert kwargs["scale"][1:] == pytest.approx([2.0, 0.4, 0.4])
    # image 1 is well A/2 (see simulate.array_paths)
    np.testing.assert_array_equal(np.asarray(levels[0][1]), frame(report.spec, 1, image=1)[0])
    with pytest.raises(OpenError, match="no well"):
        open_layers(report.path, well="B/7")


def test_sharded_array_reads_back(archives):
    report = archives["sharded"]
    [(data, _kwargs, _)] = open_layers(report.path)
    assert data.chunksize[1] == 64  # one dask chunk spans whole shards
    np.testing.assert_array_equal(np.asarray(data[0, 10]), frame(report.spec, 0)[10])


def test_difference_is_signed_lazy_and_zero_where_identical(archives, tmp_path):
    report = archives["multiscale"]
    copy = tmp_path / "copy.zarr"
    shutil.copytree(report.path, copy)
    layers = difference_layers(copy, report.path)
    assert len(layers) == 2
    data, kwargs, _ = layers[0]
    levels = _levels(data)
    assert levels[0].dtype == np.int32
    assert not np.asarray(levels[0][1]).any()
    # Corrupt one chunk of the copy: zeros there (the fill value) give a negative difference.
    chunk = copy / "0" / "c" / "1" / "0" / "0" / "0" / "0"
    chunk.unlink()
    fresh = reopen_data(LayerSource.from_metadata(kwargs["metadata"]))
    diff = np.asarray(_levels(fresh)[0][1])
    assert (diff[:, :64, :64] < 0).all() and not diff[:, 64:, :].any()


def test_destination_shorter_than_source_is_compared_over_the_common_shape(tmp_path):
    a = simulate(tmp_path / "a.zarr", "demo", rate=float("inf"), timepoints=3)
    b = simulate(tmp_path / "b.zarr", "demo", rate=float("inf"), timepoints=2)
    [(data, _, _)] = difference_layers(b.path, a.path)
    assert data.shape[0] == 2 and not np.asarray(data[1, 0]).any()


def test_reopen_sees_a_grown_time_axis(tmp_path):
    root = tmp_path / "grow.zarr"
    simulate(root, "demo", rate=float("inf"), timepoints=2, grow=True, marker=None)
    [(data, kwargs, _)] = open_layers(root)
    assert data.shape[0] == 2
    meta = json.loads((root / "zarr.json").read_text())
    meta["shape"][0] = 5
    (root / "zarr.json").write_text(json.dumps(meta))
    fresh = reopen_data(LayerSource.from_metadata(kwargs["metadata"]))
    assert fresh.shape[0] == 5
    assert fresh.name != data.name  # new dask keys: no cached chunk hides new data


def test_missing_or_empty_paths_say_so(tmp_path):
    with pytest.raises(OpenError, match="not a Zarr archive"):
        open_layers(tmp_path)
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    with pytest.raises(OpenError, match="no array"):
        open_layers(tmp_path / "g")
    with pytest.raises(OpenError, match="without an OME-NGFF image"):
        read_image_spec(tmp_path / "g")


def test_dtype_and_chunk_helpers():
    assert difference_dtype(np.dtype("uint8")) == np.int16
    assert difference_dtype(np.dtype("uint16")) == np.int32
    assert difference_dtype(np.dtype("int64")) == np.float64
    assert difference_dtype(np.dtype("float32")) == np.float32
    assert difference_dtype(np.dtype("bool")) == np.int8
    assert dask_chunks((25, 20, 640, 640), (1, 1, 64, 64), 2) == (1, 1, 640, 640)
    assert dask_chunks((4096, 4096), (256, 256), 2) == (2048, 4096)


def test_reader_accepts_zarr_folders_only(archives, tmp_path):
    from napari_softcopy._reader import get_reader

    assert get_reader(str(tmp_path)) is None
    assert get_reader(str(tmp_path / "nope.zarr")) is None
    reader = get_reader(str(archives["plate"].path))
    layers = reader(str(archives["plate"].path))
    assert layers[0][1]["metadata"]["softcopy"]["image"] == "A/1/0"


def test_reader_claims_a_zarr_folder_with_corrupt_metadata_and_says_what_is_wrong(tmp_path):
    """Declining it would leave the user with napari's "no plugin found" and no reason."""
    from napari_softcopy._reader import get_reader

    broken = tmp_path / "broken.zarr"
    broken.mkdir()
    (broken / "zarr.json").write_text('{"zarr_format": 3, "node_type": "arr')
    reader = get_reader([str(broken)])
    assert reader is not None
    with pytest.raises(ValueError, match=r"broken\.zarr/zarr\.json") as info:
        reader(str(broken))
    assert "\n" not in str(info.value)


def test_view_signature_changes_only_with_the_displayed_chunks(tmp_path):
    report = simulate(tmp_path / "m.zarr", "multiscale", rate=float("inf"), timepoints=2)
    [(_, kwargs, _), _] = open_layers(report.path)
    source = LayerSource.from_metadata(kwargs["metadata"])  # channel 0
    point = [1, 8, None, None]  # t=1, z=8, the whole y-x plane
    before = view_signature(source, 0, point)
    assert before == view_signature(source, 0, point)
    other = report.path / "0/c/0/0/0/0/0"  # t=0: not displayed
    other.write_bytes(other.read_bytes() + b"x")
    assert view_signature(source, 0, point) == before
    shown = report.path / "0/c/1/0/0/1/1"  # t=1, channel 0: displayed
    shown.unlink()
    assert view_signature(source, 0, point) != before
    assert view_signature(source, 0, point, max_files=3) is None  # 16 files: too many
    # level 2 looks at its own chunk files
    assert view_signature(source, 2, point) is not None


def _uint16_array(path, shape, chunks):
    import zarr

    return zarr.create_array(store=str(path), shape=shape, chunks=chunks, dtype="uint16")


def test_contrast_limits_come_from_the_data_without_an_omero_window(tmp_path):
    """Not the uint16 range (0, 65535), which shows a 100..400 image almost black; chunks not
    written yet (the fill value) do not pull the lower limit to 0."""
    rng = np.random.default_rng(7)
    plane = rng.integers(100, 401, size=(64, 64), dtype=np.uint16)
    plane[0, 0], plane[-1, -1] = 100, 400
    a = _uint16_array(tmp_path / "plain.zarr", (4, 64, 64), (1, 32, 32))
    a[0] = plane  # timepoints 1-3 not written yet (a live acquisition)
    [(_data, kwargs, _)] = open_layers(tmp_path / "plain.zarr")
    assert kwargs["contrast_limits"] == (100.0, 400.0)
    assert kwargs["metadata"]["softcopy"]["contrast_pending"] is False

    # An OME-NGFF image without omero: from the lowest level, per channel.
    report = simulate(tmp_path / "ms.zarr", "multiscale", rate=float("inf"), timepoints=2)
    for c, (data, kwargs, _) in enumerate(open_layers(report.path)):
        lowest = np.asarray(data[-1])
        assert kwargs["contrast_limits"] == (float(lowest.min()), float(lowest.max()))
        full = np.stack([frame(report.spec, t)[c] for t in range(2)])
        assert 0 < kwargs["contrast_limits"][1] <= full.max() < 20_000

    # Nothing written: the dtype range stands in and the Qt side keeps trying slices.
    _uint16_array(tmp_path / "empty.zarr", (4, 64, 64), (1, 32, 32))
    [(_data, kwargs, _)] = open_layers(tmp_path / "empty.zarr")
    assert kwargs["contrast_limits"] == (0.0, 65535.0)
    assert kwargs["metadata"]["softcopy"]["contrast_pending"] is True


def test_contrast_estimate_reads_a_few_planes_of_a_big_array_only(tmp_path):
    """Planes 0, 4 and 8 of 9 are read (the array is above the 4 MiB budget): the chunk files
    of every other plane are corrupt, and reading any of them would fail."""
    path = tmp_path / "big.zarr"
    a = _uint16_array(path, (9, 512, 512), (1, 256, 256))
    for p in range(9):
        a[p] = np.full((512, 512), 1000 + 100 * p, dtype=np.uint16) + np.eye(512, dtype=np.uint16)
    for p in (1, 2, 3, 5, 6, 7):
        for chunk in (path / "c" / str(p)).rglob("*"):
            if chunk.is_file():
                chunk.write_bytes(b"not zstd" * 10)
    [(data, kwargs, _)] = open_layers(path)
    assert kwargs["contrast_limits"] == (1000.0, 1801.0)
    with pytest.raises(Exception):  # noqa: B017  (the codec's own error type)
        np.asarray(data[1])
