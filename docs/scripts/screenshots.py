"""Make the screenshots of docs/widget.md from a real napari window.

Run it on a display, or headless under Xvfb (napari's canvas needs OpenGL, so not
``QT_QPA_PLATFORM=offscreen``)::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/scripts/screenshots.py

It simulates an acquisition, copies it live with the widget (a bandwidth cap makes the copy
lag so the chunk map has something to show), then verifies it in the viewer, and writes
``docs/images/widget-live.png``, ``verify-side-by-side.png`` and ``chunk-map.png``; then
napari at its default size (1280 x 800) with two copies running: ``widget-dock.png``.
``--only dock`` makes only that last one.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "images"


def main() -> int:
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else "all"
    if only == "dock":
        return dock_at_default_size()
    status = views()
    return status or dock_at_default_size()


def dock_at_default_size() -> int:
    """napari at 1280 x 800 with the dock following two live copies."""
    tmp = Path(tempfile.mkdtemp(prefix="softcopy-screenshots-"))
    os.environ["NAPARI_SOFTCOPY_STATE_DIR"] = os.fspath(tmp / "state")
    import napari

    from napari_softcopy.simulate import simulate

    app = napari.qt.get_qapp()
    stop = threading.Event()
    sources = []
    for name, preset in (("embryo", "demo"), ("plate", "nested-v2")):
        path = tmp / f"{name}.zarr"
        kwargs = {"timepoints": 400, "rate": 3.0, "stop": stop}
        threading.Thread(target=simulate, args=(path, preset), kwargs=kwargs, daemon=True).start()
        sources.append(path)
    viewer = napari.Viewer(title="napari-softcopy", show=True)
    viewer.window.resize(1280, 800)
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-softcopy", "Live copy")

    def wait(predicate, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {predicate}")
            app.processEvents()
            time.sleep(0.02)

    try:
        for path in sources:
            wait(lambda p=path: any((p / n).exists() for n in ("zarr.json", ".zgroup", ".zarray")))
            widget.source_edit.setText(os.fspath(path))
            widget.destination_edit.setText(os.fspath(tmp / "cluster" / path.name))
            (tmp / "cluster").mkdir(exist_ok=True)
            count = len(widget.panels)
            widget.start_clicked()
            wait(lambda n=count: len(widget.panels) > n)
        wait(
            lambda: all(
                p.status is not None and p.status.files_copied > 100 for p in widget.panels.values()
            )
        )
        viewer.screenshot(os.fspath(OUT / "widget-dock.png"), canvas_only=False, flash=False)
        print("wrote widget-dock.png", file=sys.stderr)
    finally:
        stop.set()
        for panel in widget.panels.values():
            panel.process.stop()
            if panel.process.popen is not None:
                panel.process.popen.wait(10)
        viewer.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def views() -> int:
    """The live copy, the side-by-side check and a damaged copy's chunk map."""
    tmp = Path(tempfile.mkdtemp(prefix="softcopy-screenshots-"))
    os.environ["NAPARI_SOFTCOPY_STATE_DIR"] = os.fspath(tmp / "state")
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_softcopy._qt.job_panel import viewer_grid
    from napari_softcopy.simulate import simulate

    OUT.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance() or napari.qt.get_qapp()

    def wait(predicate, timeout: float = 60.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                what = what() if callable(what) else what
                raise TimeoutError(f"timed out waiting for {what or predicate}")
            app.processEvents()
            time.sleep(0.02)

    def settle(seconds: float = 0.5) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            app.processEvents()
            time.sleep(0.02)

    source, destination = tmp / "acquisition.zarr", tmp / "cluster" / "acquisition.zarr"
    destination.parent.mkdir()
    stop = threading.Event()
    writer = threading.Thread(
        target=simulate,
        args=(source, "multiscale"),
        kwargs={"timepoints": 16, "rate": 1.5, "shape": (16, 2, 16, 512, 512), "stop": stop},
        daemon=True,
    )
    writer.start()
    wait(lambda: (source / "0" / "zarr.json").exists(), what="the acquisition")

    viewer = napari.Viewer(title="napari-softcopy", show=True)
    viewer.window.resize(1560, 980)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-softcopy", "Live copy")
    dock.setMinimumWidth(460)
    widget.source_edit.setText(os.fspath(source))
    widget.destination_edit.setText(os.fspath(destination))
    widget.bandwidth_spin.setValue(3)  # MB/s: slower than the acquisition, so it lags
    widget.start_clicked()
    wait(lambda: widget.panels, what="the copy to start")
    [panel] = widget.panels.values()
    try:
        wait(lambda: panel.status is not None and panel.status.files_copied > 40, what="copy")
        wait(lambda: (destination / "0" / "zarr.json").exists(), what="destination metadata")
        panel.open_destination()
        wait(
            lambda: len(viewer.layers) == 2,
            what=lambda: f"destination layers ({widget.status_line.text()})",
        )
        follower = panel.open_chunk_map()
        wait(lambda: follower.layer is not None, what="chunk map")
        wait(lambda: writer.is_alive() and panel.status.files_pending > 100, what="backlog")
        viewer.layers.selection.active = viewer.layers[0]
        viewer.dims.set_current_step(1, 8)
        settle(1.0)
        # The timepoint where the copy is: its first chunks arrive, the rest are pending.
        seen = follower.updates
        wait(lambda: follower.updates > seen, what="a fresh chunk map")
        values = follower.last_map.values
        # The copy's front: the timepoint most copied (the image shows) that still has pending
        # chunks (the map shows them); else the first with pending chunks.
        pending = [t for t in range(values.shape[0]) if (values[t] == 2).any()]
        mixed = [t for t in pending if (values[t] == 1).any()]
        front = [max(mixed, key=lambda t: (values[t] == 1).sum())] if mixed else pending
        viewer.dims.set_current_step(0, front[0] if front else 0)
        # A map and an image refreshed at the same moment (both refresh on timers).
        maps, images = follower.updates, widget.follower.refreshes
        follower.update_now()
        widget.follower.refresh()
        wait(lambda: follower.updates > maps and widget.follower.refreshes > images)
        settle(0.1)
        viewer.screenshot(os.fspath(OUT / "widget-live.png"), canvas_only=False, flash=False)
        print("wrote widget-live.png", file=sys.stderr)

        writer.join()
        panel.finish()
        wait(lambda: panel.status.state == "verified", timeout=120, what="verified")
        settle(2.5)  # last refresh of the layers and the chunk map
        viewer.layers.remove(follower.layer)
        panel.open_source()
        wait(lambda: len(viewer.layers) == 4, what="source layers")
        viewer.dims.set_current_step(0, 15)
        settle(1.5)
        viewer.screenshot(
            os.fspath(OUT / "verify-side-by-side.png"), canvas_only=False, flash=False
        )
        print("wrote verify-side-by-side.png", file=sys.stderr)

        # What a damaged copy looks like: one chunk removed, one with a flipped byte.
        viewer_grid(viewer).enabled = False
        viewer.reset_view()
        for layer in list(viewer.layers):
            if layer.metadata.get("softcopy", {}).get("role") == "source":
                viewer.layers.remove(layer)
        (destination / "0/c/15/0/0/2/3").unlink()
        corrupt = destination / "0/c/15/1/0/5/6"
        data = bytearray(corrupt.read_bytes())
        data[len(data) // 2] ^= 0x01
        corrupt.write_bytes(bytes(data))
        panel.open_difference()
        wait(lambda: len(viewer.layers) == 4, what="difference layers")
        for layer in viewer.layers:
            if layer.metadata["softcopy"]["role"] == "difference":
                layer.visible = False
        follower = panel.open_chunk_map()
        wait(
            lambda: follower.layer is not None and (follower.layer.data == 4).any(),
            what="chunk map with mismatches",
        )
        viewer.layers.selection.active = follower.layer
        settle(1.5)
        viewer.screenshot(os.fspath(OUT / "chunk-map.png"), canvas_only=False, flash=False)
        print("wrote chunk-map.png", file=sys.stderr)
    finally:
        stop.set()
        panel.process.stop()
        if panel.process.popen is not None:
            panel.process.popen.wait(10)
        viewer.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
