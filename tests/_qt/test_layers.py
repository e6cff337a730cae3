"""Layers of a copy in a real napari viewer: the chunk map (read-only, final as soon as the copy
ends). Real writers (zarr-python, tensorstore) and a real engine; no widget needed."""

from __future__ import annotations

import threading
import time

import zarr

from napari_softcopy._qt import layers
from napari_softcopy._qt.layers import ChunkMapFollower
from napari_softcopy.chunkmap import COPIED, PENDING
from napari_softcopy.engine import CopyEngine, CopyOptions
from napari_softcopy.simulate import simulate


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
    monkeypatch.setattr(layers, "CHUNK_MAP_MS", 600_000)  # only the copy's end redraws
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    stop = threading.Event()
    errors: list[BaseException] = []

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
        assert engine.state != "verified"  # the first map is listed while the copy runs
        qtbot.waitUntil(lambda: engine.state == "verified", timeout=60_000)
        ended = time.monotonic()
        qtbot.waitUntil(lambda: any(s == "verified" for s, _ in summaries), timeout=5_000)
        assert time.monotonic() - ended < 2.0  # the end check, not the 600 s interval
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
        engine.stop()
        engine.wait(30)
        writer.join(30)
    assert not errors, errors
