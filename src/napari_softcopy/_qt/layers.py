"""Layers of a copy in the viewer: adding them, their contrast, keeping them fresh while
the copy runs (`LayerFollower`). The chunk map's layer is `chunk_map_layer`'s.

Everything that touches the disk (opening metadata, listing chunk files) runs in worker
threads; the Qt thread only swaps finished data into layers.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, QTimer

from ..layer_data import LayerSource, reopen_data, view_signature
from ..layout import LayoutError
from ..open_zarr import OpenError

log = logging.getLogger(__name__)

#: Milliseconds between refreshes of live layers.
REFRESH_MS = 1000


def run_in_thread(
    fn: Callable,
    *args,
    on_done: Callable[[Any], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    **kwargs,
):
    """Run ``fn(*args, **kwargs)`` in a worker thread; callbacks run on the Qt thread.

    superqt's worker (napari's threading base) without napari's extras: our errors are ours
    to show (no notification pop-ups), and a quick background read is no "task" that makes
    napari ask before closing.
    """
    from superqt.utils import create_worker

    worker = create_worker(fn, *args, _start_thread=False, _ignore_errors=True, **kwargs)
    if on_done is not None:
        worker.returned.connect(_guarded(on_done))
    if on_error is not None:
        worker.errored.connect(_guarded(on_error))
    else:
        worker.errored.connect(lambda exc: log.warning("background task failed: %r", exc))
    worker.start()
    return worker


def _guarded(callback: Callable) -> Callable:
    """Drop a callback whose Qt objects were deleted meanwhile (napari closed)."""

    def call(*args):
        try:
            callback(*args)
        except RuntimeError as exc:
            if "deleted" not in str(exc):
                raise

    return call


def source_of(layer) -> LayerSource | None:
    """The `LayerSource` a layer was built from (None for other layers)."""
    return LayerSource.from_metadata(getattr(layer, "metadata", None))


def add_layer_data(viewer, layer_data: list[tuple]) -> list:
    """Add LayerData tuples to ``viewer``; set contrast from what is displayed."""
    from napari.layers import Layer

    added = []
    for data, kwargs, kind in layer_data:
        layer = Layer.create(data, dict(kwargs), kind)
        viewer.add_layer(layer)
        auto_contrast(layer)
        added.append(layer)
    return added


_CONTRAST_HOOKED: weakref.WeakSet = weakref.WeakSet()


def auto_contrast(layer) -> None:
    """Contrast limits from the displayed slice only (nothing else is read).

    While a layer's metadata says ``contrast_pending`` (the dtype range stands in), every
    newly displayed slice is tried until one is not all fill value. Difference layers get
    symmetric limits around zero.
    """
    if source_of(layer) is None or not hasattr(layer, "reset_contrast_limits"):
        return
    if layer not in _CONTRAST_HOOKED:
        _CONTRAST_HOOKED.add(layer)
        ref = weakref.ref(layer)
        layer.events.set_data.connect(lambda _event=None: _contrast_from_slice(ref()))
    _contrast_from_slice(layer)


def _contrast_from_slice(layer) -> None:
    if layer is None:
        return
    meta = layer.metadata.get("softcopy", {})
    if not meta.get("contrast_pending"):
        return
    try:
        layer.reset_contrast_limits(mode="slice")
    except Exception as exc:  # no slice yet (layer not visible): try with the next one
        log.debug("no contrast from slice of %s: %r", layer.name, exc)
        return
    lo, hi = layer.contrast_limits
    if meta.get("role") == "difference":
        m = max(abs(lo), abs(hi), 1.0)
        layer.contrast_limits = (-m, m)
    meta["contrast_pending"] = (lo, hi) == (0, 1) or lo == hi


def displayed_point(viewer, layer) -> list[int | None]:
    """Full-resolution data index of ``layer``'s non-displayed axes (None: displayed)."""
    ndim = layer.ndim
    offset = viewer.dims.ndim - ndim
    displayed = set(viewer.dims.displayed)
    data = layer.world_to_data(viewer.dims.point)
    shape = layer.level_shapes[0] if hasattr(layer, "level_shapes") else layer.data.shape
    point: list[int | None] = []
    for axis in range(ndim):
        if axis + offset in displayed:
            point.append(None)
        else:
            point.append(int(np.clip(np.round(data[axis]), 0, max(int(shape[axis]) - 1, 0))))
    return point


class LayerFollower(QObject):
    """Refreshes the layers of archives that are still growing, once a second.

    ``follow(root, is_live)`` registers an archive root; while ``is_live()`` is true, every
    layer whose `LayerSource` reads from ``root`` is checked: when the arrays' shapes or the
    chunk files under the displayed region changed (size, mtime; looked up off the Qt
    thread), the layer gets fresh lazy data, so napari reads and redraws only what changed.
    When ``is_live()`` turns false the layers get one last refresh and are left alone.
    """

    #: Seconds between refreshes of a layer whose displayed region has too many chunk files
    #: to check.
    UNCHECKED_REFRESH_S = 5.0

    def __init__(
        self,
        viewer,
        parent: QObject | None = None,
        on_idle: Callable[[LayerFollower], None] | None = None,
    ) -> None:
        super().__init__(parent)
        self._viewer_ref = _weak(viewer)
        self._on_idle = on_idle
        self._live: dict[str, Callable[[], bool]] = {}
        self._signatures: dict[int, Any] = {}
        self._swapped_at: dict[int, float] = {}
        self._busy = False
        self.refreshes = 0  # completed checks
        self.swaps = 0  # layers given fresh data
        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.refresh)

    @property
    def viewer(self):
        """The viewer (None once it is gone)."""
        return self._viewer_ref()

    def follow(self, root: str, is_live: Callable[[], bool]) -> None:
        """Keep layers reading from ``root`` fresh while ``is_live()``."""
        self._live[root] = is_live
        if not self._timer.isActive():
            self._timer.start()

    def is_following(self, root: str) -> bool:
        return root in self._live

    def stop(self) -> None:
        """Follow nothing any more."""
        self._timer.stop()
        self._live.clear()
        if self._on_idle is not None:
            self._on_idle(self)

    def _layers(self, roots: set[str]) -> list:
        viewer = self.viewer
        if viewer is None:
            return []
        out = []
        for layer in list(viewer.layers):
            src = source_of(layer)
            if (
                src is not None
                and src.role != "chunkmap"
                and (src.root in roots or (src.other_root or "") in roots)
            ):
                out.append(layer)
        return out

    def refresh(self) -> None:
        """Start one check (off the Qt thread); skipped while one is running."""
        viewer = self.viewer
        if viewer is None or not self._live:
            self.stop()
            return
        if self._busy:
            return
        ended = {root for root, live in self._live.items() if not truth_of(live)}
        layers = self._layers(set(self._live))
        for root in ended:  # this refresh is their last
            del self._live[root]
        if not layers:
            if not self._live:
                self.stop()
            return
        now = time.monotonic()
        jobs = {}
        for layer in layers:
            src = source_of(layer)
            key = id(layer)
            try:
                point = displayed_point(viewer, layer)
            except Exception:  # an unusual transform: refresh it on the slow schedule
                point = None
            jobs[key] = {
                "source": src,
                "level": int(getattr(layer, "data_level", 0)) if layer.multiscale else 0,
                "point": point,
                "last": self._signatures.get(key),
                "force": src.root in ended or (src.other_root or "") in ended,
                "due": now - self._swapped_at.get(key, 0.0) >= self.UNCHECKED_REFRESH_S,
            }
        self._busy = True
        run_in_thread(_check_all, jobs, on_done=self._apply, on_error=self._failed)

    def _failed(self, exc: BaseException) -> None:
        self._busy = False
        log.debug("refresh failed: %r", exc)

    def _apply(self, results: dict[int, tuple]) -> None:
        self._busy = False
        self.refreshes += 1
        viewer = self.viewer
        if viewer is None:
            return
        for layer in list(viewer.layers):
            result = results.get(id(layer))
            if result is None:
                continue
            signature, data = result
            self._signatures[id(layer)] = signature
            if data is None:
                continue  # nothing changed where the user looks
            try:
                layer.data = data
            except Exception as exc:  # e.g. the number of levels changed: keep the old data
                log.debug("cannot refresh %s: %r", layer.name, exc)
                continue
            self.swaps += 1
            self._swapped_at[id(layer)] = time.monotonic()
            if layer.metadata.get("softcopy", {}).get("contrast_pending"):
                auto_contrast(layer)


def _check_all(jobs: dict[int, dict]) -> dict[int, tuple]:
    """Off the Qt thread: which layers need fresh data, and that data."""
    results = {}
    for key, job in jobs.items():
        source = job["source"]
        signature = None
        if job["point"] is not None:
            try:
                signature = view_signature(source, job["level"], job["point"])
            except (OpenError, LayoutError, OSError, ValueError):
                signature = None
        unchanged = signature is not None and signature == job["last"]
        if not job["force"] and (unchanged or (signature is None and not job["due"])):
            results[key] = (signature, None)
            continue
        try:
            results[key] = (signature, reopen_data(source))
        except (OpenError, LayoutError, OSError):
            continue
    return results


def _weak(obj) -> Callable[[], Any]:
    try:
        return weakref.ref(obj)
    except TypeError:
        return lambda: obj


def truth_of(fn: Callable[[], bool]) -> bool:
    """``bool(fn())``; False when it raises (a copy's state asked while it goes away)."""
    try:
        return bool(fn())
    except Exception:
        return False
