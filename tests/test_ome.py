"""OME-NGFF metadata: what `ome` writes, `ome` reads back, in both versions; older layouts read;
``omero`` channels reach the layers of a real archive."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from napari_softcopy import ome
from napari_softcopy.layer_data import open_layers
from napari_softcopy.simulate import frame, simulate

NAMES = ("t", "c", "z", "y", "x")
SCALES = [[2.0, 1.0, 3.0, 0.5, 0.5], [2.0, 1.0, 3.0, 1.0, 1.0]]
CHANNELS = [("DAPI", "0000FF", (0.0, 500.0)), ("GFP", "FFFFFF", None)]


def _stored(attributes: dict) -> dict:
    """Attributes as they come back from disk (JSON)."""
    return json.loads(json.dumps(attributes))


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_an_image_written_reads_back(version: str) -> None:
    content = ome.multiscales_metadata(
        version, "img", NAMES, SCALES, downscaling="mean", metadata={"method": "test"}
    ) | ome.omero_metadata(CHANNELS)
    stored = _stored(ome.wrap(version, content))
    if version == "0.5":  # under "ome", which carries the one version
        assert list(stored) == ["ome"] and stored["ome"]["version"] == "0.5"
    else:  # at the top; the multiscales entry carries the version
        assert "ome" not in stored and stored["multiscales"][0]["version"] == "0.4"
    attrs = ome.unwrap(stored)
    ms = ome.first_multiscale(attrs)
    assert ms is not None and ms["name"] == "img"
    axes, types, units = ome.read_axes(ms, len(NAMES))
    assert axes == NAMES
    assert types == ("time", "channel", "space", "space", "space")
    assert units == ("second", None, "micrometer", "micrometer", "micrometer")
    assert ome.channel_axis(axes, types) == 1
    assert [d["path"] for d in ome.dataset_entries(ms)] == ["0", "1"]
    assert ome.full_resolution_transform(ms, len(NAMES)) == (SCALES[0], [0.0] * 5)
    assert ome.read_omero(attrs) == (("DAPI", "GFP"), ("#0000FF", "#FFFFFF"), ((0.0, 500.0), None))


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_a_plate_and_its_wells_written_read_back(version: str) -> None:
    plate = _stored(ome.wrap(version, ome.plate_metadata(version, "p", ("A", "B"), ("1", "2"), 3)))
    assert ome.plate_well_paths(ome.unwrap(plate)) == ["A/1", "A/2", "B/1", "B/2"]
    well = _stored(ome.wrap(version, ome.well_metadata(version, 3)))
    assert ome.well_image_paths(ome.unwrap(well)) == ["0", "1", "2"]
    assert ome.plate_well_paths(ome.unwrap(well)) is None  # a well is no plate


def test_older_and_broken_layouts_read_as_far_as_they_are_unambiguous() -> None:
    # 0.3: axes as names; only t and c say their type.
    assert ome.read_axes({"axes": ["t", "c", "y", "x"]}, 4) == (
        ("t", "c", "y", "x"),
        ("time", "channel", None, None),
        (None,) * 4,
    )
    # 0.1/0.2 (no axes) or a wrong count: the conventional tail.
    for ms in ({}, {"axes": ["y", "x"]}):
        assert ome.read_axes(ms, 3) == (("z", "y", "x"), ("space",) * 3, (None,) * 3)
    # An axis that is neither a dict nor a name has no type (and does not raise).
    assert ome.read_axes({"axes": [["y"], "x"]}, 2)[1] == (None, None)
    # A dataset's transformations compose with the multiscale's, applied after them.
    ms = {
        "datasets": [
            {
                "path": "0",
                "coordinateTransformations": [
                    {"type": "scale", "scale": [1.0, 2.0]},
                    {"type": "translation", "translation": [0.0, 1.0]},
                ],
            }
        ],
        "coordinateTransformations": [
            {"type": "scale", "scale": [3.0, 3.0]},
            {"type": "translation", "translation": [10.0, 0.0]},
        ],
    }
    assert ome.full_resolution_transform(ms, 2) == ([3.0, 6.0], [10.0, 3.0])
    # Transformations of the wrong length are ignored, not misapplied.
    assert ome.read_transforms([{"type": "scale", "scale": [2.0]}], 2) == ([1.0, 1.0], [0.0, 0.0])
    assert ome.unwrap(["not", "a", "dict"]) == {}
    assert ome.first_multiscale({"multiscales": []}) is None


@pytest.mark.parametrize("preset", ["multiscale", "multiscale-0.4"])
def test_omero_channels_name_color_and_window_the_layers(tmp_path, preset: str) -> None:
    report = simulate(
        tmp_path / "m.zarr", preset, rate=float("inf"), shape=(1, 2, 4, 64, 64), marker=None
    )
    group = zarr.open_group(str(report.path), mode="r+")
    version = ome.version_for(report.spec.zarr_format)
    attrs = ome.unwrap(group.attrs.asdict()) | ome.omero_metadata(CHANNELS)
    group.attrs.put(ome.wrap(version, attrs))

    dapi, gfp = open_layers(report.path)
    assert dapi[1]["name"] == "m [DAPI]" and gfp[1]["name"] == "m [GFP]"
    assert dapi[1]["colormap"] == {
        "colors": [[0, 0, 0, 1], [0.0, 0.0, 1.0, 1]],
        "name": "omero#0000FF",
    }
    assert gfp[1]["colormap"] == "gray"  # white
    assert dapi[1]["contrast_limits"] == (0.0, 500.0)  # the omero window
    # No window: the data's range (every simulated value is above 80).
    plane = frame(report.spec, 0, level=2)[1]
    assert gfp[1]["contrast_limits"] == (float(np.min(plane)), float(np.max(plane)))
    assert gfp[1]["metadata"]["softcopy"]["contrast_pending"] is False
