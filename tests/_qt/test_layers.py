"""Layers of a copy in a real napari viewer: the side-by-side comparison whatever else is open,
the chunk map (read-only, final as soon as the copy ends). Real writers (zarr-python,
tensorstore), real engines (the widget's process, or in this process)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading

import numpy as np
import pytest
import zarr

from napari_softcopy._qt import chunk_map_layer
from napari_softcopy._qt.chunk_map_layer import ChunkMapFollower
from napari_softcopy._qt.compare import viewer_grid
from napari_softcopy._qt.layers import source_of
from napari_softcopy._qt.widget import SoftcopyWidget
from napari_softcopy.chunkmap import COPIED, PENDING
from napari_softcopy.engine import CopyEngine, CopyOptions
from napari_softcopy.launch import KEEP
from napari_softcopy.simulate import simulate


@pytest.fixture
def verified_copy(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """The widget in a real viewer, with a verified copy (by its engine process) of a finished
    two-channel OME-Zarr acquisition; yields (viewer, panel)."""
    monkeypatch.setenv("NAPARI_SOFTCOPY_STATE_DIR", os.fspath(tmp_path / "state"))
    monkeypatch.setattr(SoftcopyWidget, "ask_keep_copying", lambda *_args: KEEP)
    src = simulate(tmp_path / "acq.zarr", "multiscale", rate=float("inf"), timepoints=2).path
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-softcopy", "Live copy")
    widget.engine_options = {"low_priority": False, "rescan_interval": 2.0}
    widget.source_edit.setText(os.fspath(src))
    widget.destination_edit.setText(os.fspath(tmp_path / "copy.zarr"))
    widget.start_clicked()
    qtbot.waitUntil(lambda: len(widget.panels) == 1, timeout=10_000)
    [panel] = widget.panels.values()
    try:

        def verified() -> bool:
            panel.refresh()
            return panel.status is not None and panel.status.state == "verified"

        qtbot.waitUntil(verified, timeout=60_000)
        yield viewer, panel
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(panel.process.pid, signal.SIGKILL)  # engines run in their own session
        if panel.process.popen is not None:
            panel.process.popen.wait(10)


def _x_range(layer) -> tuple[float, float]:
    """Where ``layer`` lies along x in world coordinates."""
    extent = np.asarray(layer.extent.world)
    return float(extent[0, -1]), float(extent[1, -1])


def test_side_by_side_comparison_whatever_else_is_open(verified_copy, qtbot):
    """Another layer and the chunk map first, then the copy, its source and their difference:
    each image's two channels lie together, the three images side by side in that order, the
    chunk map over the copy, and the other layer where it was (napari's grid put the chunk
    map in a cell of its own, split the source's channels and hid the source under the
    difference)."""
    viewer, panel = verified_copy
    other = viewer.add_image(np.zeros((2, 16, 64, 64), np.uint8), name="unrelated")
    follower = panel.open_chunk_map()
    qtbot.waitUntil(lambda: follower.layer is not None, timeout=10_000)
    for open_, n in (
        (panel.open_destination, 4),
        (panel.open_source, 6),
        (panel.open_difference, 8),
    ):
        open_()
        qtbot.waitUntil(lambda n=n: len(viewer.layers) == n, timeout=10_000)
    by_role: dict[str, list] = {}
    for layer in viewer.layers:
        if layer is not other:
            by_role.setdefault(source_of(layer).role, []).append(layer)
    assert {role: len(ly) for role, ly in by_role.items()} == {
        "chunkmap": 1,
        "destination": 2,
        "source": 2,
        "difference": 2,
    }
    ranges = {}
    for role in ("destination", "source", "difference"):
        [x_range] = {_x_range(layer) for layer in by_role[role]}  # channels together
        ranges[role] = x_range
    width = ranges["destination"][1] - ranges["destination"][0]
    assert width == pytest.approx(256 * 0.4, rel=0.02)
    assert ranges["destination"][1] < ranges["source"][0]  # side by side, in this order
    assert ranges["source"][1] < ranges["difference"][0]
    assert ranges["difference"][0] - ranges["source"][1] < 0.1 * width  # and close
    # Over the copy: napari's extents run from the first to the last pixel center, and a
    # map pixel is one 64-pixel chunk wide.
    lo, hi = _x_range(by_role["chunkmap"][0])
    assert ranges["destination"][0] < lo < hi < ranges["destination"][1]
    assert (lo + hi) / 2 == pytest.approx(sum(ranges["destination"]) / 2)
    assert not viewer_grid(viewer).enabled
    assert tuple(other.translate) == (0.0, 0.0, 0.0, 0.0)
    # The source is not under the difference: both show at once where each lies.
    assert all(layer.visible for layer in viewer.layers)


def test_chunk_map_is_read_only_and_stays_so(make_napari_viewer, qtbot, tmp_path):
    """napari makes a labels layer editable again when its data is replaced, which the map's
    does when the array grows: the paint tools must stay off."""
    src = tmp_path / "acq.zarr"
    array = zarr.create_array(store=str(src), shape=(2, 64, 64), chunks=(1, 32, 32), dtype="uint16")
    array[:] = 1
    viewer = make_napari_viewer()
    follower = ChunkMapFollower(
        viewer, str(src), str(tmp_path / "copy.zarr"), "", lambda: False, "chunk map"
    )
    follower.start()
    try:
        qtbot.waitUntil(lambda: follower.updates == 1, timeout=10_000)
        layer = follower.layer
        assert layer.data.shape == (2, 2, 2) and not layer.editable
        array.resize((3, 64, 64))  # the acquisition goes on: a new timepoint
        array[2] = 1
        follower.update_now()
        qtbot.waitUntil(lambda: follower.updates == 2, timeout=10_000)
        assert layer.data.shape == (3, 2, 2)  # replaced, not updated in place
        assert (layer.data == PENDING).all()
        assert not layer.editable
        layer.mode = "paint"  # what the paint button does
        assert layer.mode == "pan_zoom"
    finally:
        follower.stop()


def test_chunk_map_is_final_as_soon_as_the_copy_is_verified(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    """No map listed before the end is shown after it ("pending" beside "verified"), and the
    final one follows the end at once, not a refresh interval later."""
    monkeypatch.setattr(chunk_map_layer, "CHUNK_MAP_MS", 600_000)  # only the copy's end redraws
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    stop, first_map = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hold(t: int) -> None:  # the copy cannot end before the first map is drawn
        if t == 2:
            first_map.wait(30)

    def write() -> None:
        try:
            simulate(
                src,
                "multiscale",
                writer="tensorstore",
                rate=8.0,
                timepoints=8,
                grow=True,
                stop=stop,
                on_timepoint=hold,
            )
        except BaseException as exc:  # reported below
            errors.append(exc)

    writer = threading.Thread(target=write, daemon=True)
    engine = CopyEngine(
        src, dst, CopyOptions(low_priority=False, rescan_interval=2.0, wait_for_source=True)
    )
    engine.start()
    writer.start()
    viewer = make_napari_viewer()
    summaries: list[tuple[str, str]] = []  # (engine state when shown, summary)
    follower = ChunkMapFollower(
        viewer,
        str(src),
        str(dst),
        "",
        lambda: engine.state == "verified",
        "chunk map",
        on_summary=lambda text: summaries.append((engine.state, text)),
    )
    try:
        qtbot.waitUntil(lambda: (src / "0" / "zarr.json").exists(), timeout=10_000)
        follower.start()
        qtbot.waitUntil(lambda: follower.updates >= 1, timeout=10_000)
        first_map.set()
        assert summaries[0][0] != "verified"  # listed while the copy runs
        qtbot.waitUntil(lambda: engine.state == "verified", timeout=60_000)
        # Drawn on the end check: the periodic update is 600 s away.
        qtbot.waitUntil(lambda: any(s == "verified" for s, _ in summaries), timeout=10_000)
        # 8 timepoints x 2 channels x 1 x 4 x 4 chunk files, the channels folded in the layer
        assert follower.last_map.counts == {COPIED: 8 * 2 * 4 * 4}
        assert (follower.layer.data == COPIED).all()
        assert follower.layer.data.shape == (8, 1, 4, 4)
        after = [text for s, text in summaries if s == "verified"]
        assert after and all("0 pending" in text for text in after), summaries
        assert not follower.layer.editable
    finally:
        follower.stop()
        stop.set()
        first_map.set()
        engine.stop()
        engine.wait(30)
        writer.join(30)
    assert not errors, errors
