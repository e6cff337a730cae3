"""The npe2 reader and the live sample data in a real napari viewer."""

from __future__ import annotations

import numpy as np
import pytest

from napari_softcopy import _sample_data
from napari_softcopy.simulate import frame, simulate


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    root = tmp_path_factory.mktemp("reader")
    return {
        preset: simulate(root / f"{preset}.zarr", preset, rate=float("inf"), timepoints=2)
        for preset in ("nested-v2", "multiscale", "plate-0.4")
    }


def test_reader_opens_a_plain_array(make_napari_viewer, archives):
    report = archives["nested-v2"]
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(report.path), plugin="napari-softcopy")
    assert layer.data.shape == (2, 16, 128, 128)
    assert tuple(layer.scale) == (1.0, 1.0, 1.0, 1.0)
    np.testing.assert_array_equal(np.asarray(layer.data[1]), frame(report.spec, 1))


def test_reader_opens_an_ome_zarr_multiscale_image(make_napari_viewer, archives):
    report = archives["multiscale"]
    viewer = make_napari_viewer()
    layers = viewer.open(str(report.path), plugin="napari-softcopy")
    assert [ly.name for ly in layers] == ["multiscale [c0]", "multiscale [c1]"]
    for c, layer in enumerate(layers):
        assert layer.multiscale and len(layer.data) == 3
        assert tuple(layer.scale) == pytest.approx((report.spec.interval_s or 1.0, 2.0, 0.4, 0.4))
        assert layer.axis_labels == ("t", "z", "y", "x")
        assert str(layer.units[-1]) == "micrometer"
        np.testing.assert_array_equal(np.asarray(layer.data[0][1]), frame(report.spec, 1)[c])
    assert tuple(layers[1].colormap.colors[-1][:3]) == (0.0, 1.0, 0.0)  # green


def test_reader_layers_get_contrast_limits_from_the_data(make_napari_viewer, tmp_path):
    """A uint16 image of 100..400 without an omero block is not shown almost black."""
    import zarr

    image = np.linspace(100, 400, 96 * 80).astype(np.uint16).reshape(96, 80)
    zarr.create_array(store=str(tmp_path / "dim.zarr"), data=np.stack([image, image]))
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(tmp_path / "dim.zarr"), plugin="napari-softcopy")
    assert tuple(layer.contrast_limits) == pytest.approx((100, 400))


def test_reader_opens_one_field_of_an_hcs_plate(make_napari_viewer, archives):
    report = archives["plate-0.4"]
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(report.path), plugin="napari-softcopy")
    assert layer.metadata["softcopy"]["image"] == "A/1/0"
    assert tuple(layer.scale) == pytest.approx((report.spec.interval_s or 1.0, 2.0, 0.4, 0.4))
    assert [a.shape for a in layer.data] == [(2, 8, 128, 128), (2, 8, 64, 64)]
    # a field folder opens on its own too (drag and drop of A/2/0)
    [other] = viewer.open(str(report.path / "A" / "2" / "0"), plugin="napari-softcopy")
    np.testing.assert_array_equal(np.asarray(other.data[0][0]), frame(report.spec, 0, image=1)[0])


def test_sample_data_is_a_live_acquisition(make_napari_viewer, qtbot, monkeypatch, tmp_path):
    monkeypatch.setattr(_sample_data, "TIMEPOINTS", 12)
    monkeypatch.setattr(_sample_data, "RATE", 4.0)
    monkeypatch.setattr("tempfile.mkdtemp", lambda prefix="": str(tmp_path))
    viewer = make_napari_viewer()
    try:
        layers = viewer.open_sample("napari-softcopy", "live-acquisition")
        assert len(layers) == 2 and all(ly.multiscale for ly in layers)
        first = layers[0].data[0].shape[0]
        assert first < 12
        # refreshed while the acquisition writes: new timepoints appear
        qtbot.waitUntil(lambda: layers[0].data[0].shape[0] == 12, timeout=15_000)
        assert 100 < layers[0].contrast_limits[1] < 20_000  # from the displayed slice
        qtbot.waitUntil(lambda: not _sample_data._followers, timeout=5_000)
    finally:
        for thread, stop, _ in _sample_data._acquisitions:
            stop.set()
            thread.join(10)
        _sample_data._acquisitions.clear()
        _sample_data._followers.clear()


def test_the_reader_claims_zarr_archives_only(make_napari_viewer, archives, tmp_path):
    """A .png or .tif opens with napari's own reader without a "Choose reader" dialog: this
    plugin claims Zarr archives (and folders, which it declines unless they are Zarr)."""
    import imageio.v3 as iio
    import tifffile
    from npe2 import PluginManager

    from napari_softcopy._reader import get_reader

    def claimed_by(path) -> set[str]:
        return {r.plugin_name for r in PluginManager.instance().iter_compatible_readers(path)}

    viewer = make_napari_viewer()  # npe2's plugin manager knows the installed plugins
    image = np.arange(64 * 48, dtype=np.uint8).reshape(64, 48)
    png, tif = tmp_path / "cells.png", tmp_path / "cells.tif"
    iio.imwrite(png, image)
    tifffile.imwrite(tif, image)
    for path in (png, tif):
        assert claimed_by(path) == {"napari"}, path  # napari's builtins only
        assert get_reader(str(path)) is None
    # Folders: npe2 offers every reader that accepts directories; ours declines non-Zarr ones.
    zarr_folder = archives["multiscale"].path
    assert "napari-softcopy" in claimed_by(zarr_folder)
    assert get_reader(str(zarr_folder)) is not None
    assert get_reader(str(zarr_folder / "0" / "c")) is None  # a chunk folder inside
    assert get_reader(str(tmp_path)) is None  # a folder of images

    # No plugin named: napari asks "Choose reader" (MultipleReaderError here) when two
    # plugins claim the path; only its builtin reader may claim these files.
    for path in (png, tif):
        [layer] = viewer.open(str(path))
        np.testing.assert_array_equal(np.asarray(layer.data), image)
