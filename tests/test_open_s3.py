"""A copy at ``s3://bucket/prefix`` opens for display as a folder copy does (Qt-free), against
a real SeaweedFS: lazy layers equal to the source's, the difference, the chunk map, the
npe2 reader, and one-line errors for what cannot be read."""

from __future__ import annotations

import itertools
import shutil

import dask.array as da
import numpy as np
import obstore
import pytest

from napari_softcopy import archive_store
from napari_softcopy._reader import get_reader
from napari_softcopy.chunkmap import COPIED, MISMATCHED, PENDING, compute_chunk_map
from napari_softcopy.layer_data import (
    LayerSource,
    difference_layers,
    open_layers,
    reopen_data,
    view_signature,
)
from napari_softcopy.layout import LayoutError
from napari_softcopy.open_zarr import OpenError, inspect_archive, read_image_spec
from napari_softcopy.simulate import frame, simulate
from test_s3_copy import _sync_tree
from test_s3_destination import raw_store

pytest_plugins = ("s3_server",)  # (its fixtures: s3_server, s3_env)
_prefixes = itertools.count()


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    """Finished simulated archives, by preset name."""
    root = tmp_path_factory.mktemp("archives")
    return {
        preset: simulate(root / f"{preset}.zarr", preset, rate=float("inf"), timepoints=2)
        for preset in ("multiscale", "plate", "sharded")
    }


def _copy(archive, s3_env) -> tuple[str, str]:
    """Copy a finished archive below a fresh prefix the way the engine does; its URL and
    its prefix in the bucket."""
    prefix = f"open/{next(_prefixes)}/{archive.name}"
    url = f"s3://softcopy/{prefix}"
    _sync_tree(archive, url)
    return url, prefix


def _levels(data):
    return data if isinstance(data, list) else [data]


def test_an_s3_copy_opens_as_lazy_layers_equal_to_the_source(s3_env, archives):
    report = archives["multiscale"]
    url, _prefix = _copy(report.path, s3_env)
    assert inspect_archive(url).kind == "multiscale"
    spec = read_image_spec(url + "/")  # (a trailing "/" names the same archive)
    assert spec.root == url and spec.datasets == ("0", "1", "2")
    layers = open_layers(url)
    local = open_layers(report.path)
    assert len(layers) == len(local) == 2  # one layer per channel
    for (data, kwargs, kind), (ldata, lkwargs, _) in zip(layers, local, strict=True):
        assert kind == "image"
        assert all(isinstance(level, da.Array) for level in _levels(data))  # lazy
        for key in ("name", "scale", "translate", "axis_labels", "contrast_limits", "colormap"):
            assert kwargs[key] == lkwargs[key], key
        source = kwargs["metadata"]["softcopy"]
        assert source["root"] == url
        for level, llevel in zip(_levels(data), _levels(ldata), strict=True):
            np.testing.assert_array_equal(np.asarray(level), np.asarray(llevel))
        c = source["channel"]
        expected = np.stack([frame(report.spec, t)[c] for t in range(2)])
        np.testing.assert_array_equal(np.asarray(_levels(data)[0]), expected)
        # The follower's refresh reads it again.
        fresh = reopen_data(LayerSource.from_metadata(kwargs["metadata"]))
        assert [a.shape for a in _levels(fresh)] == [a.shape for a in _levels(data)]
    diff = difference_layers(url, report.path)
    assert diff[0][1]["metadata"]["softcopy"]["other_root"] == str(report.path)
    assert not np.asarray(_levels(diff[0][0])[0]).any()


@pytest.mark.parametrize("preset", ["plate", "sharded"])
def test_plates_and_shards_open_from_s3(s3_env, archives, preset):
    report = archives[preset]
    url, _prefix = _copy(report.path, s3_env)
    for (data, kwargs, _), (ldata, lkwargs, _) in zip(
        open_layers(url), open_layers(report.path), strict=True
    ):
        assert kwargs["metadata"]["softcopy"]["image"] == lkwargs["metadata"]["softcopy"]["image"]
        np.testing.assert_array_equal(np.asarray(_levels(data)[0]), np.asarray(_levels(ldata)[0]))


def test_what_cannot_be_read_from_s3_is_said_in_one_line_without_the_secret(
    s3_env, archives, monkeypatch
):
    url, prefix = _copy(archives["multiscale"].path, s3_env)
    with pytest.raises(OpenError, match=r"^s3://softcopy/open/nothing\.zarr is not a Zarr"):
        open_layers("s3://softcopy/open/nothing.zarr")
    with pytest.raises(OpenError, match=r"does not exist at .*; create it first"):
        open_layers("s3://no-such-bucket/acq.zarr")
    with pytest.raises(OpenError, match="not a valid bucket name"):
        open_layers("s3://No_Bucket/acq.zarr")
    # The full-resolution level gone (deleted by hand): said, naming it.
    obstore.delete(raw_store(s3_env, prefix), "0/zarr.json")
    with pytest.raises(OpenError, match=rf"{url}/0: the full-resolution array is not there"):
        open_layers(url)
    wrong = "wrong-" + s3_env.secret
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    with pytest.raises(OpenError, match="refused the credentials") as info:
        open_layers(url)
    assert "\n" not in str(info.value)
    assert wrong not in str(info.value) and s3_env.secret not in str(info.value)


@pytest.mark.parametrize(
    ("content", "why"),
    [(b'{"node_type": "group", ', "Expecting property name"), (b"[1, 2]", "not a JSON object")],
)
def test_corrupt_metadata_in_s3_is_one_line_naming_the_object_and_the_fix(s3_env, content, why):
    prefix = f"open/{next(_prefixes)}/bad.zarr"
    obstore.put(raw_store(s3_env, prefix), "zarr.json", content)
    with pytest.raises(LayoutError) as info:
        archive_store.open_store(f"s3://softcopy/{prefix}").read_json("zarr.json")
    message = str(info.value)
    assert message.startswith(f"corrupt Zarr metadata in s3://softcopy/{prefix}/zarr.json: ")
    assert why in message and message.endswith("; fix or restore this object")
    assert "\n" not in message


def test_the_chunk_map_of_an_s3_copy(s3_env, archives):
    report = archives["multiscale"]
    url, prefix = _copy(report.path, s3_env)
    spec = read_image_spec(report.path)
    cmap = compute_chunk_map(report.path, url, "0", fold_axis=spec.channel_axis)
    assert cmap.values.shape == (2, 1, 4, 4)  # t, z, y, x chunks; the channels folded
    assert (cmap.values == COPIED).all()
    # One object deleted, one rewritten by another tool (a new ETag: not our copy).
    store = raw_store(s3_env, prefix)
    obstore.delete(store, "0/c/1/0/0/2/3")
    data = bytearray(obstore.get(store, "0/c/0/1/0/1/1").bytes())
    data[len(data) // 2] ^= 0x01
    obstore.put(store, "0/c/0/1/0/1/1", bytes(data))
    live = compute_chunk_map(report.path, url, "0", fold_axis=spec.channel_axis)
    assert {tuple(i) for i in np.argwhere(live.values == PENDING)} == {(1, 0, 2, 3), (0, 0, 1, 1)}
    final = compute_chunk_map(report.path, url, "0", finished=True, fold_axis=spec.channel_axis)
    assert {tuple(i) for i in np.argwhere(final.values != COPIED)} == {(1, 0, 2, 3), (0, 0, 1, 1)}
    assert (final.values[final.values != COPIED] == MISMATCHED).all()


def test_the_reader_claims_an_s3_zarr_it_can_read_and_no_other(s3_env, archives):
    url, _prefix = _copy(archives["multiscale"].path, s3_env)
    reader = get_reader(url)
    assert reader is not None
    assert [kw["metadata"]["softcopy"]["root"] for _, kw, _ in reader(url)] == [url, url]
    assert get_reader("s3://softcopy/open/nothing.zarr") is None  # the server says: nothing
    # A server that refuses: claimed, so that reading says why (not "no plugin found").
    refused = get_reader("s3://no-such-bucket/acq.zarr")
    assert refused is not None
    with pytest.raises(ValueError, match="no-such-bucket does not exist"):
        refused("s3://no-such-bucket/acq.zarr")


def test_a_fallback_reader_is_said_once(s3_env, archives, monkeypatch):
    """zarr-python cannot open it: tensorstore's s3 kvstore reads it, and that is said once.

    (zarr-python reads every codec tensorstore reads, so its refusal is simulated.)"""
    report = archives["multiscale"]
    url, _prefix = _copy(report.path, s3_env)
    archive_store.take_notices()

    def refuse(self, rel):
        raise ValueError("codec numcodecs.unknown is not available")

    monkeypatch.setattr(archive_store.S3Archive, "_open_zarr", refuse)
    layers = open_layers(url)
    np.testing.assert_array_equal(
        np.asarray(_levels(layers[0][0])[0]), np.asarray(_levels(open_layers(report.path)[0][0])[0])
    )
    notices = archive_store.take_notices()
    assert len(notices) == 1  # (three levels read that way: said once)
    assert notices[0].startswith(f"{url} is read through tensorstore")
    assert "numcodecs.unknown" in notices[0]
    open_layers(url)
    assert archive_store.take_notices() == []


def test_opening_reads_no_chunk_of_the_full_resolution(s3_env, archives):
    """Lazy: with every full-resolution chunk object gone, the layers still open (metadata
    and a sample of the lowest level only), and read the fill value once computed."""
    report = archives["multiscale"]
    url, prefix = _copy(report.path, s3_env)
    store = raw_store(s3_env, prefix)
    chunks = [m["path"] for batch in obstore.list(store, prefix="0/c/") for m in batch]
    assert len(chunks) == 2 * 2 * 16  # t, c, 4 x 4 chunks
    obstore.delete(store, chunks)
    layers = open_layers(url)
    assert len(layers) == 2
    level0 = _levels(layers[0][0])[0]
    assert not np.asarray(level0[1]).any()  # read now: the fill value
    assert np.asarray(_levels(layers[0][0])[2][1]).any()  # the lowest level is there


def test_the_chunk_map_of_an_s3_copy_whose_source_is_gone(s3_env, archives, tmp_path):
    """As for a folder: the layout is read from the copy, and every chunk there is one the
    source no longer has (a source freed by --move)."""
    src = tmp_path / "gone.zarr"
    shutil.copytree(archives["multiscale"].path, src)
    url, _prefix = _copy(src, s3_env)
    local = tmp_path / "local.zarr"
    shutil.copytree(src, local)
    shutil.rmtree(src)
    at_s3 = compute_chunk_map(src, url, "0", finished=True, fold_axis=1)
    in_folder = compute_chunk_map(src, local, "0", finished=True, fold_axis=1)
    assert at_s3.values.shape == (2, 1, 4, 4)
    np.testing.assert_array_equal(at_s3.values, in_folder.values)
    assert (at_s3.values == MISMATCHED).all()


def test_the_view_signature_of_an_s3_layer_changes_only_with_the_displayed_chunks(s3_env, archives):
    """What lets the follower give a live S3 layer fresh data only when what is shown
    changed: the sizes and ETags of the displayed chunk objects, from one listing."""
    url, prefix = _copy(archives["multiscale"].path, s3_env)
    [(_, kwargs, _), _] = open_layers(url)
    source = LayerSource.from_metadata(kwargs["metadata"])  # channel 0
    point = [1, 8, None, None]  # t=1, z=8, the whole y-x plane
    before = view_signature(source, 0, point)
    assert before is not None and len(before[1]) == 16  # (4 x 4 chunk objects)
    assert None not in before[1]
    assert view_signature(source, 0, point) == before
    store = raw_store(s3_env, prefix)
    other = "0/c/0/0/0/0/0"  # t=0: not displayed
    obstore.put(store, other, bytes(obstore.get(store, other).bytes()) + b"x")
    assert view_signature(source, 0, point) == before
    shown = "0/c/1/0/0/1/1"  # t=1, channel 0: displayed; rewritten with its size kept
    data = bytearray(obstore.get(store, shown).bytes())
    data[-1] ^= 0x01
    obstore.put(store, shown, bytes(data))
    after = view_signature(source, 0, point)
    assert after != before and sum(a != b for a, b in zip(after[1], before[1], strict=True)) == 1
    obstore.delete(store, shown)
    assert None in view_signature(source, 0, point)[1]
    assert view_signature(source, 0, point, max_files=3) is None  # 16 objects: too many
    assert view_signature(source, 2, point) is not None  # level 2: its own objects
