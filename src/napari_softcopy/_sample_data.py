"""Sample data: a small simulated acquisition, written live while you look at it.

The simulator (`napari_softcopy.simulate`, tensorstore writer) writes an OME-NGFF multiscale
time series into a temporary folder in a background thread; the returned layers are lazy
and, inside napari, refreshed once a second until the acquisition ends, so new timepoints
appear. Point the napari-softcopy widget's source at the folder to try a live copy.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path

from .layer_data import LayerData, open_layers
from .open_zarr import OpenError

log = logging.getLogger(__name__)

PRESET = "multiscale"
TIMEPOINTS = 40
RATE = 2.0  # timepoints per second: 20 s of acquisition
_acquisitions: list[tuple[threading.Thread, threading.Event, Path]] = []
_followers: list = []


def start_acquisition(
    root: Path | None = None,
    *,
    preset: str | None = None,
    timepoints: int | None = None,
    rate: float | None = None,
) -> tuple[Path, threading.Thread, threading.Event]:
    """Start a simulated acquisition in a background thread; return its path at once.

    Defaults: `PRESET`, `TIMEPOINTS` and `RATE` of this module.
    """
    from .simulate import simulate

    preset = preset or PRESET
    timepoints = timepoints or TIMEPOINTS
    rate = rate or RATE

    if root is None:
        root = Path(tempfile.mkdtemp(prefix="napari-softcopy-sample-"))
        atexit.register(shutil.rmtree, root, True)
    source = root / "acquisition.zarr"
    stop = threading.Event()

    def run() -> None:
        try:
            simulate(source, preset, rate=rate, timepoints=timepoints, grow=True, stop=stop)
        except Exception:  # shown in the log; the layers just stop growing
            log.exception("the simulated acquisition failed")

    thread = threading.Thread(target=run, name="softcopy-sample-acquisition", daemon=True)
    thread.start()
    _acquisitions.append((thread, stop, source))
    return source, thread, stop


def _stop_all() -> None:
    for thread, stop, _source in _acquisitions:
        stop.set()
        thread.join(5.0)


atexit.register(_stop_all)


def live_acquisition() -> list[LayerData]:
    """npe2 sample data: start a simulated acquisition and return its live layers."""
    source, thread, _stop = start_acquisition()
    deadline = time.monotonic() + 30.0
    while True:
        try:
            layers = open_layers(source, name="live acquisition")
            break
        except OpenError:
            if time.monotonic() > deadline or not thread.is_alive():
                raise
            time.sleep(0.05)
    _follow(str(source), thread.is_alive)
    return layers


def _follow(root: str, is_live) -> None:
    """Inside napari, keep the layers of ``root`` fresh while ``is_live()``."""
    try:
        import napari

        viewer = napari.current_viewer()
    except Exception:  # no napari or no Qt: static layers are fine
        return
    if viewer is None:
        return
    from ._qt.layers import LayerFollower

    follower = LayerFollower(viewer, on_idle=_followers.remove)
    _followers.append(follower)  # kept until the acquisition ends or the viewer is gone
    follower.follow(root, is_live)
    try:
        from napari.utils.notifications import show_info

        show_info(f"napari-softcopy: simulating an acquisition into {root}")
    except Exception:
        pass
