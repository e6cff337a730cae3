"""Layers of a copy in the viewer: adding them, keeping them fresh, the chunk map.

Everything that touches the disk (opening metadata, listing chunk files) runs in worker
threads; the Qt thread only swaps finished data into layers.
"""

from __future__ import annotations

import contextlib
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, QTimer

from ..chunkmap import ABSENT, COPIED, LEGEND, MISMATCHED, PENDING, compute_chunk_map
from ..layer_data import LayerSource, napari_units, reopen_data, view_signature
from ..layout import LayoutError
from ..open_zarr import OpenError, read_image_spec
from .compare import arrange_side_by_side, side_by_side_offset

log = logging.getLogger(__name__)

#: Milliseconds between refreshes of live layers and chunk maps.
REFRESH_MS = 1000
CHUNK_MAP_MS = 2000
#: Milliseconds between a chunk map's checks whether its copy ended (a cheap call), so the
#: final map is computed at once rather than up to a refresh interval (seconds) later.
CHUNK_MAP_END_CHECK_MS = 200


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
        ended = {root for root, live in self._live.items() if not _call(live)}
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


def _call(fn: Callable[[], bool]) -> bool:
    try:
        return bool(fn())
    except Exception:
        return False


# ---------------------------------------------------------------------------- chunk map
#: Opacity per chunk state: problems stand out, copied chunks only tint the image.
CHUNK_ALPHA = {COPIED: 0.35, PENDING: 0.85, ABSENT: 0.6, MISMATCHED: 1.0}


def chunk_colormap():
    """napari colormap of the chunk map values (0 is transparent)."""
    from napari.utils.colormaps import DirectLabelColormap

    colors: dict = {None: (0, 0, 0, 0), 0: (0, 0, 0, 0)}
    for value, (_name, _meaning, color) in LEGEND.items():
        rgb = tuple(int(color[i : i + 2], 16) / 255 for i in (1, 3, 5))
        colors[value] = (*rgb, CHUNK_ALPHA[value])
    return DirectLabelColormap(color_dict=colors)


def compute_for_image(source: str, destination: str, image: str, finished: bool) -> dict:
    """Off-thread part of a chunk map update: the map and where it goes over the image."""
    spec = None
    for root in (destination, source):
        try:
            spec = read_image_spec(root, image)
            break
        except OpenError:
            continue
    if spec is None or not spec.datasets:
        raise OpenError(f"no image {image or '(root)'} in {source} or {destination} yet")
    array_path = spec.datasets[0]
    cmap = compute_chunk_map(
        source, destination, array_path, finished=finished, fold_axis=spec.channel_axis
    )
    ca = spec.channel_axis
    scale = [s for i, s in enumerate(spec.scale) if i != ca]
    translate = [t for i, t in enumerate(spec.translate) if i != ca]
    out_scale, out_translate = cmap.layer_transform(scale, translate)
    labels = [a for i, a in enumerate(spec.axes) if i != ca]
    result = {
        "map": cmap,
        "scale": out_scale,
        "translate": out_translate,
        "axis_labels": labels,
    }
    units = napari_units([u for i, u in enumerate(spec.units) if i != ca])
    if units:  # the same units as the image layers, or napari ignores everyone's units
        result["units"] = units
    return result


class ChunkMapFollower(QObject):
    """A chunk map labels layer for one copy and one image, updated every two seconds.

    ``finished()`` says whether the copy has ended (then differences are mismatches); it is
    asked every `CHUNK_MAP_END_CHECK_MS`, and the map is recomputed as soon as it turns true
    (a map computed before the end and delivered after it is not shown: it would show
    chunks pending next to a panel that says verified). The updates stop when the layer is
    removed from the viewer, or after the copy ended and one last map was drawn. The layer
    is read-only: painting it would only hide the state it shows.
    """

    def __init__(
        self,
        viewer,
        source: str,
        destination: str,
        image: str,
        finished: Callable[[], bool],
        name: str,
        on_summary: Callable[[str], None] | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.source, self.destination, self.image = source, destination, image
        self._finished = finished
        self._name = name
        self._on_summary = on_summary
        self.layer = None
        self.updates = 0
        self.last_map = None
        self._busy = False
        self._done = False
        self._started_at = 0.0
        self._next_at = 0.0  # monotonic time of the next periodic update
        self._asked_final = False  # the last map asked for was computed as final
        self._timer = QTimer(self)
        self._timer.setInterval(CHUNK_MAP_END_CHECK_MS)
        self._timer.timeout.connect(self._tick)

    def start(self) -> None:
        """Draw now (again, if the user removed the layer), then every two seconds while the
        copy runs, and once more as soon as it ends."""
        self._done = False
        if self.layer is not None and self.layer not in self.viewer.layers:
            self.layer = None
        self.update_now()
        self._timer.start()

    def _tick(self) -> None:
        if time.monotonic() >= self._next_at or (not self._asked_final and _call(self._finished)):
            self.update_now()

    def stop(self) -> None:
        self._timer.stop()
        self._done = True

    @property
    def active(self) -> bool:
        return not self._done

    def update_now(self) -> None:
        """Compute a new map off the Qt thread (skipped while one is being computed)."""
        if self._busy or self._done:
            return
        if self.layer is not None and self.layer not in self.viewer.layers:
            self.stop()  # the user removed it
            return
        finished = _call(self._finished)
        self._asked_final = finished
        self._busy = True
        self._started_at = time.monotonic()
        run_in_thread(
            compute_for_image,
            self.source,
            self.destination,
            self.image,
            finished,
            on_done=lambda result: self._apply(result, finished),
            on_error=self._failed,
        )

    def _failed(self, exc: BaseException) -> None:
        self._busy = False
        self._next_at = time.monotonic() + CHUNK_MAP_MS / 1000  # not at every end check
        if self._on_summary is not None:
            self._on_summary(f"chunk map: {exc}")

    def _apply(self, result: dict, finished: bool) -> None:
        self._busy = False
        # A big archive takes a while to list: list it at most 1/10 of the time, so the
        # scan (Python, holding the GIL in stretches) leaves napari's thread alone.
        took = time.monotonic() - self._started_at
        self._next_at = time.monotonic() + max(CHUNK_MAP_MS / 1000, 10 * took)
        if self._done:
            return
        if not finished and _call(self._finished):
            self.update_now()  # listed before the copy ended: the final map replaces it
            return
        cmap = result["map"]
        self.last_map = cmap
        self.updates += 1
        values = cmap.values
        if self.layer is None or self.layer not in self.viewer.layers:
            meta = {
                "softcopy": {
                    "root": self.destination,
                    "image": self.image,
                    "role": "chunkmap",
                    "other_root": self.source,
                }
            }
            extra = {"units": result["units"]} if "units" in result else {}
            self.layer = self.viewer.add_labels(
                values,
                name=self._name,
                scale=result["scale"],
                translate=result["translate"],
                axis_labels=result["axis_labels"],
                **extra,
                colormap=chunk_colormap(),
                opacity=0.8,
                blending="translucent",
                metadata=meta,
            )
            self.layer.editable = False
            # napari makes a labels layer editable again whenever its data is replaced
            # (`_reset_editable`); put it back each time.
            self.layer.events.editable.connect(self._keep_read_only)
            arrange_side_by_side(self.viewer, self.destination, self.source)
        else:
            self._update_layer(values, result)
        if self._on_summary is not None:
            self._on_summary(f"chunk map: {cmap.summary()}")
        if finished:
            # The last map after the copy ended; `update_now` still redraws on request.
            self._timer.stop()

    def _keep_read_only(self, _event=None) -> None:
        if self.layer is not None and self.layer.editable:
            self.layer.editable = False

    def _update_layer(self, values: np.ndarray, result: dict) -> None:
        layer = self.layer
        if list(layer.scale) != result["scale"]:
            layer.scale = result["scale"]
            translate = list(result["translate"])
            translate[-1] += side_by_side_offset(layer)  # still over its image
            layer.translate = translate
        if layer.data.shape != values.shape:
            layer.data = values
            return
        # In place and without a redraw, unless the displayed slice changed: napari slices
        # the updated array when the user moves to another timepoint.
        try:
            key = tuple(
                slice(None) if i is None else i for i in displayed_point(self.viewer, layer)
            )
            visible_change = not np.array_equal(layer.data[key], values[key])
        except Exception:
            visible_change = True
        np.copyto(layer.data, values)
        if visible_change:
            layer.refresh()

    def deleteLater(self) -> None:
        self.stop()
        with contextlib.suppress(RuntimeError):
            super().deleteLater()
