"""How long does the widget ever stall napari's Qt event loop while it follows a big copy?

A 10 ms QTimer records the gap between its ticks; a gap of G ms means the event loop was
blocked for about G - 10 ms (nothing could repaint or react to a click). Meanwhile:

- a simulated acquisition (preset ``manyfiles``: Zarr v2, 50,000 chunk files in one
  directory) is written as fast as the writer goes, by another process (the microscope);
- the widget starts the engine process on it, reads its status file every 0.5 s, re-lists
  the job registry every 2 s;
- the destination is opened as a layer that refreshes every second while the copy runs, and
  a chunk map of the whole array is recomputed every 2 s (off the Qt thread);

until the copy is verified. Run under Xvfb (napari needs OpenGL)::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python -m benchmarks.widget_stall

Prints one JSON object (``--output FILE`` also writes it). Target: longest stall < 100 ms.
Not a timed test: the number depends on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TICK_MS = 10


class StallMeter:
    """Gaps between ticks of a 10 ms QTimer on the Qt thread."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.gaps_ms: list[float] = []
        self.worst_at: float = 0.0
        self.phase = "start"
        self.phase_worst: dict[str, float] = {}
        self.samples: list[tuple[float, str]] = []
        self._last = time.perf_counter()
        self._t0 = self._last
        self._timer = QTimer()
        self._timer.setInterval(TICK_MS)
        self._timer.timeout.connect(self._tick)

    def start(self) -> None:
        self._last = time.perf_counter()
        self._t0 = self._last
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        self._watching = False

    def watch(self, threshold_ms: float = 50.0) -> None:
        """Sample the Qt thread's stack whenever it is blocked (``--diagnose``)."""
        import collections
        import traceback

        self.stacks: collections.Counter = collections.Counter()
        self._watching = True
        main = threading.main_thread().ident

        def run() -> None:
            while self._watching:
                time.sleep(0.02)
                if (time.perf_counter() - self._last) * 1000 > threshold_ms:
                    frame = sys._current_frames().get(main)
                    if frame is not None:
                        stack = traceback.extract_stack(frame)[-12:]
                        key = " <- ".join(
                            f"{Path(f.filename).name}:{f.lineno}:{f.name}" for f in reversed(stack)
                        )
                        self.stacks[key] += 1
                        self.samples.append((time.perf_counter() - self._t0, key))

        threading.Thread(target=run, daemon=True).start()

    def _tick(self) -> None:
        now = time.perf_counter()
        gap = (now - self._last) * 1000
        if not self.gaps_ms or gap > max(self.gaps_ms):
            self.worst_at = now - self._t0
        self.gaps_ms.append(gap)
        stall = max(0.0, gap - TICK_MS)
        self.phase_worst[self.phase] = max(self.phase_worst.get(self.phase, 0.0), stall)
        self._last = now

    def summary(self) -> dict:
        gaps = sorted(self.gaps_ms)
        if not gaps:
            return {}
        stall = [max(0.0, g - TICK_MS) for g in gaps]
        return {
            "longest_stall_ms_by_phase": {k: round(v, 1) for k, v in self.phase_worst.items()},
            "ticks": len(gaps),
            "longest_stall_ms": round(stall[-1], 1),
            "longest_stall_at_s": round(self.worst_at, 1),
            "p99_stall_ms": round(stall[int(0.99 * (len(stall) - 1))], 1),
            "median_gap_ms": round(statistics.median(gaps), 1),
            "stalls_over_50ms": sum(s > 50 for s in stall),
            "stalls_over_100ms": sum(s > 100 for s in stall),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="manyfiles")
    parser.add_argument(
        "--rate",
        type=float,
        default=float("inf"),
        help="timepoints per second of the acquisition (default: flat out)",
    )
    parser.add_argument("--no-chunk-map", action="store_true", help="follow without a map")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="no widget: the engine runs from the command line and the destination is opened "
        "once, statically (what napari and this machine cost by themselves)",
    )
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument(
        "--diagnose", action="store_true", help="print where the Qt thread was when it stalled"
    )
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="softcopy-stall-"))
    os.environ["NAPARI_SOFTCOPY_STATE_DIR"] = os.fspath(tmp / "state")
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_softcopy.status import read_status_file

    source, destination = tmp / "acquisition.zarr", tmp / "copy" / "acquisition.zarr"
    destination.parent.mkdir()
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1560, 980)
    app = QApplication.instance()

    def pump(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            app.processEvents()
            time.sleep(0.002)

    def wait(predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            pump(0.01)

    widget = panel = engine = None
    if not args.baseline:
        _dock, widget = viewer.window.add_plugin_dock_widget("napari-softcopy", "Live copy")
    pump(1.0)
    meter = StallMeter()
    meter.start()
    if args.diagnose:
        meter.watch()
    # The microscope is another program: the acquisition runs in its own process.
    cli = [sys.executable, "-m", "napari_softcopy.cli"]
    cmd = [*cli, "simulate", os.fspath(source), "--preset", args.preset]
    if args.rate != float("inf"):
        cmd += ["--rate", str(args.rate)]
    t0 = time.monotonic()
    writer = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    wait(lambda: any((source / n).exists() for n in (".zarray", "zarr.json")), 60, "writer")
    status_file = tmp / "status.json"
    if widget is not None:
        widget.source_edit.setText(os.fspath(source))
        widget.destination_edit.setText(os.fspath(destination))
        widget.start_clicked()
        wait(lambda: widget.panels, 30, "the engine to start")
        [panel] = widget.panels.values()
        status_file = Path(panel.process.status_file)
    else:
        engine = subprocess.Popen(
            [
                *cli,
                "copy",
                os.fspath(source),
                os.fspath(destination),
                "--status-file",
                os.fspath(status_file),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )

    def status():
        s = read_status_file(status_file)
        return s if s is not None and (panel is None or s.pid == panel.process.pid) else None

    try:
        wait(
            lambda: any((destination / n).exists() for n in (".zarray", "zarr.json")),
            60,
            "the destination metadata",
        )
        # Opening layers is a user action: napari creates the layers and their GL programs
        # (shader compilation is slow on software OpenGL). Measured apart from following.
        meter.phase = "open layers"
        if panel is not None:
            panel.open_destination()
            wait(lambda: len(viewer.layers) >= 1, 30, "the destination layer")
            if not args.no_chunk_map:
                follower = panel.open_chunk_map()
                wait(lambda: follower.layer is not None, 30, "the chunk map")
        else:
            viewer.open(os.fspath(destination), plugin="napari-softcopy")
        layer = viewer.layers[0]
        viewer.dims.set_current_step(0, 0)
        pump(1.0)
        meter.phase = "follow"
        wait(
            lambda: (s := status()) is not None and s.state == "verified",
            args.timeout,
            "the copy to be verified",
        )
        pump(3.0)  # the last layer refresh and chunk map
    finally:
        meter.stop()
        if panel is not None:
            panel.process.stop()
        if engine is not None and engine.poll() is None:
            engine.terminate()
        if writer.poll() is None:
            writer.terminate()
        writer.wait(60)
    final = status()
    result = {
        "benchmark": "widget_stall",
        "mode": "baseline (no widget)" if args.baseline else "widget",
        "preset": args.preset,
        "chunk_map": not (args.no_chunk_map or args.baseline),
        "files_copied": final.files_copied,
        "chunk_files": final.chunks_at_destination,
        "copy_state": final.state,
        "wall_s": round(time.monotonic() - t0, 1),
        "layer_shape": list(layer.data.shape),
        "machine": f"{platform.node()} {os.cpu_count()} cpus, Python {platform.python_version()}",
    }
    if widget is not None:
        result["layer_checks"] = widget.follower.refreshes
        result["layer_refreshes"] = widget.follower.swaps
        result["chunk_map_updates"] = sum(f.updates for f in panel.chunk_maps)
    result.update(meter.summary())
    for proc in (panel.process.popen if panel else None, engine):
        if proc is not None:
            proc.wait(10)
    viewer.close()
    shutil.rmtree(tmp, ignore_errors=True)
    if args.diagnose:
        for stack, n in meter.stacks.most_common(12):
            print(f"{n * 20:6d} ms  {stack}", file=sys.stderr)
        for t, stack in meter.samples:
            print(f"{t:7.2f} s  {stack}", file=sys.stderr)
    text = json.dumps(result, indent=1)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    follow = result.get("longest_stall_ms_by_phase", {}).get("follow", 1e9)
    return 0 if follow < 100 else 1


if __name__ == "__main__":
    sys.exit(main())
