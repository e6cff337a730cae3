"""The widget with an ``s3://`` destination (a real napari viewer under Xvfb, a real
SeaweedFS): the field is checked like the CLI checks it, with the endpoint shown; a live copy
to S3 opens from its panel as layers equal to the source's, beside the source, with the
difference and the chunk map; what cannot be read is a message in the widget."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import numpy as np
import obstore
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # (tests/: the S3 server)

from test_widget import (  # noqa: F401 (fixtures)
    T,
    acquisition,
    asked,
    dock,
    engines,
    start_copy,
    state,
    state_dir,
    wait_for_metadata,
)

from napari_softcopy import jobs
from napari_softcopy._qt.job_panel import viewer_grid
from napari_softcopy._qt.layers import source_of
from napari_softcopy.archive_store import open_store
from napari_softcopy.chunkmap import COPIED, MISMATCHED
from napari_softcopy.layer_data import open_layers
from napari_softcopy.simulate import frame, simulate
from test_s3_destination import raw_store

pytest_plugins = ("s3_server",)  # (its fixtures: s3_server, s3_env)


def test_an_s3_destination_is_checked_with_its_endpoint_shown(
    make_napari_viewer,
    engines,  # noqa: F811 (the fixture imported above)
    tmp_path,
    qtbot,
    s3_env,
):
    viewer = make_napari_viewer()
    widget = dock(viewer, engines)
    src = simulate(tmp_path / "src.zarr", "demo", rate=float("inf"), timepoints=1).path
    widget.source_edit.setText(os.fspath(src))
    widget.destination_edit.setText("s3://softcopy/widget/acq.zarr")
    qtbot.waitUntil(lambda: widget.last_validation.startswith("Ready"), timeout=20_000)
    assert widget.last_validation == f"Ready: src.zarr → acq.zarr at {s3_env.endpoint}"
    widget.destination_edit.setText("s3://no-such-bucket/acq.zarr")
    expected = f"bucket no-such-bucket does not exist at {s3_env.endpoint}; create it first"
    qtbot.waitUntil(lambda: widget.last_validation == expected, timeout=20_000)
    assert widget.panels == {} and jobs.list_jobs(alive_only=False) == []


def _has(url: str, rel: str) -> bool:
    return open_store(url).read_json(rel) is not None


def test_a_live_copy_to_s3_opens_from_its_panel_beside_the_source_with_its_chunk_map(
    make_napari_viewer,
    engines,  # noqa: F811
    acquisition,  # noqa: F811
    qtbot,
    s3_env,
):
    viewer = make_napari_viewer()
    widget = dock(viewer, engines)
    # (slower than the local test's: an S3 copy, opened from S3, must find it still going)
    acq = acquisition("live", "multiscale", writer="tensorstore", timepoints=T, rate=1.0, grow=True)
    wait_for_metadata(qtbot, acq.path)
    prefix = f"widget/{secrets.token_hex(4)}/live.zarr"
    url = f"s3://softcopy/{prefix}"
    panel = start_copy(qtbot, widget, acq.path, url)
    qtbot.waitUntil(lambda: state(panel) == "copying", timeout=20_000)
    assert acq.thread.is_alive()  # copying while the writer writes

    # Opened while it is copied: lazy layers read from S3 that grow with the copy.
    qtbot.waitUntil(lambda: _has(url, "0/zarr.json"), timeout=20_000)
    panel.open_destination()
    qtbot.waitUntil(lambda: len(viewer.layers) == 2, timeout=20_000)
    first = viewer.layers[0]
    assert first.data[0].shape[0] < T, state(panel)  # the acquisition is still going
    assert source_of(first).role == "destination" and source_of(first).root == url
    assert first.multiscale and first.axis_labels == ("t", "z", "y", "x")
    assert tuple(first.scale[1:]) == pytest.approx((2.0, 0.4, 0.4))
    assert widget.follower.is_following(url)

    qtbot.waitUntil(lambda: state(panel) == "verified", timeout=90_000)
    assert acq.error is None and acq.report.completed
    # The follower's last refresh shows every timepoint, equal to what the writer wrote.
    qtbot.waitUntil(lambda: first.data[0].shape[0] == T, timeout=20_000)
    at_source = open_layers(acq.path)
    for layer in viewer.layers:
        c = source_of(layer).channel
        expected = np.stack([frame(acq.report.spec, t)[c] for t in range(T)])
        np.testing.assert_array_equal(np.asarray(layer.data[0]), expected)
        for level in (1, 2):  # (the lower levels too: equal to the source's)
            np.testing.assert_array_equal(
                np.asarray(layer.data[level]), np.asarray(at_source[c][0][level])
            )

    # The source beside it, and a difference that is zero everywhere.
    panel.open_source()
    qtbot.waitUntil(lambda: len(viewer.layers) == 4, timeout=20_000)
    assert not viewer_grid(viewer).enabled
    source_x = np.asarray(viewer.layers[2].extent.world)[:, -1]
    assert np.asarray(first.extent.world)[1, -1] < source_x[0]  # right of the copy
    panel.open_difference()
    qtbot.waitUntil(lambda: len(viewer.layers) == 6, timeout=20_000)
    diffs = [ly for ly in viewer.layers if source_of(ly).role == "difference"]
    assert len(diffs) == 2 and all(source_of(d).root == url for d in diffs)
    for d in diffs:
        assert not np.asarray(d.data[0]).any()

    # The chunk map: all copied; then an object deleted and one rewritten on the server.
    follower = panel.open_chunk_map()
    qtbot.waitUntil(lambda: follower.updates >= 1, timeout=20_000)
    cmap = follower.layer
    assert cmap.data.shape == (T, 1, 4, 4)  # the channel axis folded; t, z, y, x chunks
    assert (cmap.data == COPIED).all(), panel.map_summary.text()
    store = raw_store(s3_env, prefix)
    obstore.delete(store, "0/c/3/0/0/1/2")
    data = bytearray(obstore.get(store, "0/c/5/1/0/3/0").bytes())
    data[len(data) // 2] ^= 0x01
    obstore.put(store, "0/c/5/1/0/3/0", bytes(data))
    seen = follower.updates
    follower.update_now()
    qtbot.waitUntil(lambda: follower.updates > seen, timeout=20_000)
    bad = {tuple(i) for i in np.argwhere(cmap.data == MISMATCHED)}
    assert bad == {(3, 0, 1, 2), (5, 0, 3, 0)}
    assert "2 mismatched" in panel.map_summary.text()


def test_an_s3_copy_that_cannot_be_read_is_a_message_in_the_widget(
    make_napari_viewer,
    engines,  # noqa: F811
    tmp_path,
    qtbot,
    s3_env,
    monkeypatch,
):
    viewer = make_napari_viewer()
    widget = dock(viewer, engines)
    src = simulate(tmp_path / "src.zarr", "multiscale", rate=float("inf"), timepoints=1).path
    prefix = f"widget/{secrets.token_hex(4)}/src.zarr"
    url = f"s3://softcopy/{prefix}"
    panel = start_copy(qtbot, widget, src, url)
    qtbot.waitUntil(lambda: state(panel) == "verified", timeout=60_000)

    # Refused keys (changed after the copy): said in one line, without the secret.
    wrong = "wrong-" + s3_env.secret
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    panel.open_destination()
    qtbot.waitUntil(
        lambda: "cannot open the destination" in widget.status_line.text(), timeout=20_000
    )
    text = widget.status_line.text()
    assert not widget.status_line.isHidden()  # (shown: the viewer window itself is not)
    assert "refused the credentials" in text and url in text
    assert "\n" not in text and wrong not in text and s3_env.secret not in text
    follower = panel.open_chunk_map()
    qtbot.waitUntil(lambda: "chunk map:" in panel.map_summary.text(), timeout=20_000)
    assert "refused the credentials" in panel.map_summary.text()
    assert wrong not in panel.map_summary.text()
    follower.stop()

    # A missing object (the full-resolution level's metadata deleted on the server).
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_env.secret)
    widget.show_message("")
    obstore.delete(raw_store(s3_env, prefix), "0/zarr.json")
    panel.open_destination()
    qtbot.waitUntil(
        lambda: "cannot open the destination" in widget.status_line.text(), timeout=20_000
    )
    assert f"{url}/0: the full-resolution array is not there" in widget.status_line.text()
    assert len(viewer.layers) == 0


def test_napari_opens_an_s3_url_through_our_reader(
    make_napari_viewer, tmp_path, s3_env, monkeypatch
):
    """napari's own reader also claims ``*.zarr`` (and ``viewer.open`` uses it unless told
    otherwise) but cannot read S3 (it says the path does not exist): ours is chosen by name,
    or by the reader preference napari keeps per pattern (what "Choose reader... remember"
    sets, used when no plugin is named)."""
    from napari.settings import get_settings

    from test_s3_copy import _sync_tree

    src = simulate(tmp_path / "src.zarr", "multiscale", rate=float("inf"), timepoints=1).path
    url = f"s3://softcopy/reader/{secrets.token_hex(4)}/src.zarr"
    _sync_tree(src, url)
    viewer = make_napari_viewer()
    expected = open_layers(src)
    layers = viewer.open(url, plugin="napari-softcopy")
    assert [source_of(layer).root for layer in layers] == [url, url]
    for layer, (data, _kwargs, _kind) in zip(layers, expected, strict=True):
        np.testing.assert_array_equal(np.asarray(layer.data[0]), np.asarray(data[0]))
    monkeypatch.setattr(get_settings().plugins, "extension2reader", {"*.zarr": "napari-softcopy"})
    again = viewer.open(url, plugin=None)  # (None: as napari's File > Open does)
    assert [source_of(layer).root for layer in again] == [url, url]
